"""On-the-fly MUSAN noise / music / babble and RIR reverberation for speaker-verification training."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch

from hp.data import audio  # module, not names: tests (and profilers) can wrap audio.read_audio
from hp.data.audio import SAMPLE_RATE
from hp.data.manifest import DataError

MUSAN_KINDS = ("music", "noise", "speech")
TYPES = ("reverb", "noise", "music", "babble")  # also the order of Augmenter.available
EPS = 1e-10  # power floor: keeps silent speech or noise from giving 0/0, far below any real signal's power


# ---- tables ---------------------------------------------------------------------------------------------
def _corpus_dir(given: Path | str, name: str) -> Path:
    """`given` itself or its child `name` (users point at either the corpus dir or where they unpacked it)."""
    given = Path(given)
    if (given / name).is_dir():
        return given / name
    if not given.is_dir():
        raise DataError(f"{given}: no such directory (expected {name}/ or its parent)")
    return given


def _info(path: Path, mono: bool) -> float:
    """Duration in seconds, after checking the file is readable, 16 kHz, non-empty (and mono if asked)."""
    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError) as e:  # sf.LibsndfileError is a RuntimeError
        raise DataError(f"{path}: unreadable ({' '.join(str(e).split())})") from None
    if info.samplerate != SAMPLE_RATE:
        raise DataError(f"{path}: sample rate {info.samplerate} Hz, expected {SAMPLE_RATE}")
    if mono and info.channels != 1:
        raise DataError(f"{path}: {info.channels} channels, expected mono")
    if info.frames == 0:
        raise DataError(f"{path}: no samples")
    return info.frames / info.samplerate


def _table(files: list[tuple[Path, str]], mono: bool) -> pd.DataFrame:
    files = sorted(files, key=lambda f: str(f[0]))  # by string: Path ordering compares parts, not text
    return pd.DataFrame({"path": [str(p) for p, _ in files], "kind": [k for _, k in files],
                         "duration_s": [_info(p, mono) for p, _ in files]})


def musan_table(musan_dir: Path | str) -> pd.DataFrame:
    """MUSAN as distributed (`musan/{music,noise,speech}/<subset>/*.wav`) -> path, kind, duration_s.

    `musan_dir` is the `musan` directory or its parent. A missing kind is simply absent; no wav at all, or a
    file that is unreadable, not 16 kHz or not mono, is a DataError.
    """
    root = _corpus_dir(musan_dir, "musan")
    files = [(p, kind) for kind in MUSAN_KINDS for p in (root / kind).glob("*/*.wav")]
    if not files:
        raise DataError(f"{root}: no MUSAN wav files ({{music,noise,speech}}/<subset>/*.wav)")
    return _table(files, mono=True)


def rir_table(rirs_dir: Path | str) -> pd.DataFrame:
    """RIRS_NOISES as distributed -> path, kind ('simulated' | 'real'), duration_s.

    simulated_rirs/{small,medium,large}room/Room*/*.wav and real_rirs_isotropic_noises/*.wav, leaving out the
    isotropic noise recordings stored beside the real RIRs. Real RIRs may be multi-channel (the first channel
    is used). `rirs_dir` is the RIRS_NOISES directory or its parent.
    """
    root = _corpus_dir(rirs_dir, "RIRS_NOISES")
    simulated = [(p, "simulated") for p in root.glob("simulated_rirs/*room/Room*/*.wav")]
    # only the file name decides: the directory name itself contains "noises"
    real = [(p, "real") for p in (root / "real_rirs_isotropic_noises").glob("*.wav") if "noise" not in p.name.lower()]
    if not simulated and not real:
        raise DataError(f"{root}: no RIR wav files (simulated_rirs/*room/Room*/*.wav, "
                        "real_rirs_isotropic_noises/*.wav)")
    return _table(simulated + real, mono=False)


# ---- configuration ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AugmentConfig:
    """Probability of augmenting an utterance and the SNR (dB) ranges; ranges are inclusive [low, high]."""

    prob: float = 0.6
    noise_snr: tuple[float, float] = (0.0, 15.0)
    music_snr: tuple[float, float] = (5.0, 15.0)
    babble_snr: tuple[float, float] = (13.0, 20.0)
    babble_speakers: tuple[int, int] = (3, 7)

    def __post_init__(self) -> None:
        if not 0.0 <= self.prob <= 1.0:  # also rejects NaN
            raise ValueError(f"AugmentConfig.prob must be in [0, 1], got {self.prob!r}")
        for name in ("noise_snr", "music_snr", "babble_snr", "babble_speakers"):
            value = getattr(self, name)
            if len(value) != 2 or not value[0] <= value[1]:
                raise ValueError(f"AugmentConfig.{name} must be (low, high) with low <= high, got {value!r}")
            # YAML gives lists: store tuples so the frozen config stays hashable and compares equal
            cast = int if name == "babble_speakers" else float
            object.__setattr__(self, name, (cast(value[0]), cast(value[1])))
        if self.babble_speakers[0] < 1:
            raise ValueError(f"AugmentConfig.babble_speakers must start at >= 1, got {self.babble_speakers!r}")


# ---- DSP --------------------------------------------------------------------------------------------------
def reverberate(wave: torch.Tensor, rir: torch.Tensor) -> torch.Tensor:
    """Full convolution with the unit-energy RIR, truncated to the wave's length (as WeSpeaker does)."""
    rir = rir / torch.sqrt(torch.clamp((rir * rir).sum(), min=EPS))
    full = wave.shape[-1] + rir.shape[-1] - 1
    n = 1 << (full - 1).bit_length()  # >= full, so the circular convolution equals the linear one
    out = torch.fft.irfft(torch.fft.rfft(wave, n) * torch.fft.rfft(rir, n), n)
    return out[..., : wave.shape[-1]]


def scale_to_snr(speech: torch.Tensor, noise: torch.Tensor, snr_db: float) -> torch.Tensor:
    """`noise` scaled so that 10 log10(P_speech / P_noise) = snr_db (P = mean square)."""
    p_speech = torch.mean(speech.double() ** 2) + EPS
    p_noise = torch.mean(noise.double() ** 2) + EPS
    return noise * torch.sqrt(p_speech / (p_noise * 10.0 ** (snr_db / 10.0))).to(noise.dtype)


# ---- augmenter --------------------------------------------------------------------------------------------
class Augmenter:
    """Applies, with probability config.prob, one augmentation drawn uniformly from `available`.

    Holds only paths and frame counts (cheap to pickle into DataLoader workers); audio is read per call, and
    only the segment needed. All randomness comes from the `rng` passed in, so (rng state, wave) -> one output.
    """

    def __init__(self, noise: pd.DataFrame | None, rirs: pd.DataFrame | None, config: AugmentConfig) -> None:
        self.config = config
        self._files: dict[str, tuple[list[str], np.ndarray]] = {}  # source kind -> (paths, frames)
        for table, kinds, what in ((noise, MUSAN_KINDS, "noise"), (rirs, ("simulated", "real"), "rirs")):
            if table is None:
                continue
            missing = {"path", "kind", "duration_s"} - set(table.columns)
            if missing:
                raise ValueError(f"Augmenter {what} table lacks column(s) {sorted(missing)}")
            unknown = set(table["kind"]) - set(kinds)
            if unknown:
                raise ValueError(f"Augmenter {what} table has kind(s) {sorted(unknown)}, expected some of {kinds}")
            duration = table["duration_s"].to_numpy(dtype=float)
            if not np.all(np.isfinite(duration) & (duration > 0)):
                raise ValueError(f"Augmenter {what} table has missing or non-positive duration_s")
            # the RIR kinds are pooled: reverb draws from all RIRs alike
            groups = {"rir": np.ones(len(table), bool)} if what == "rirs" else \
                {k: (table["kind"] == k).to_numpy() for k in kinds}
            for key, rows in groups.items():
                if rows.any():
                    self._files[key] = (table["path"][rows].astype(str).tolist(),
                                        np.round(duration[rows] * SAMPLE_RATE).astype(np.int64))
        source = {"reverb": "rir", "noise": "noise", "music": "music", "babble": "speech"}
        self.available: tuple[str, ...] = tuple(t for t in TYPES if source[t] in self._files)
        if config.prob > 0 and not self.available:
            # an augmenter that can never augment is a wiring mistake, not a silent no-op
            raise ValueError("Augmenter: prob > 0 but no noise or RIR files to augment with")

    def choose(self, rng: np.random.Generator) -> str | None:
        """The augmentation for one utterance, or None (left clean) with probability 1 - config.prob."""
        if not self.available or rng.random() >= self.config.prob:
            return None
        return self.available[int(rng.integers(len(self.available)))]

    def __call__(self, wave: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        kind = self.choose(rng)
        return self._check(wave) if kind is None else self.apply(kind, wave, rng)

    def apply(self, kind: str, wave: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Apply the augmentation `kind` (one of `available`) to the 1-D `wave`; same length, float32."""
        if kind not in self.available:
            raise ValueError(f"augmentation {kind!r} is not available; available: {self.available}")
        wave = self._check(wave)
        samples = wave.shape[0]
        if samples == 0:
            return wave
        if kind == "reverb":
            paths, _ = self._files["rir"]
            rir = audio.read_audio(paths[int(rng.integers(len(paths)))])  # read_audio keeps the first channel
            return reverberate(wave, torch.from_numpy(rir).to(wave.device)).to(torch.float32)
        if kind == "babble":
            low, high = self.config.babble_speakers
            n = int(rng.integers(low, high + 1))
            paths, frames = self._files["speech"]
            # distinct talkers when there are enough files (as voxceleb_trainer's random.sample)
            picks = rng.choice(len(paths), size=n, replace=n > len(paths))
            added = sum(self._noise(wave, paths[i], int(frames[i]), self.config.babble_snr, rng) for i in picks)
            return wave + added
        paths, frames = self._files[kind]
        i = int(rng.integers(len(paths)))
        snr = self.config.noise_snr if kind == "noise" else self.config.music_snr
        return wave + self._noise(wave, paths[i], int(frames[i]), snr, rng)

    @staticmethod
    def _check(wave: torch.Tensor) -> torch.Tensor:
        if wave.dim() != 1:
            raise ValueError(f"Augmenter expects a 1-D wave, got shape {tuple(wave.shape)}")
        return wave.to(torch.float32)

    @staticmethod
    def _noise(wave: torch.Tensor, path: str, frames: int, snr_range: tuple[float, float],
               rng: np.random.Generator) -> torch.Tensor:
        """A random wave-long segment of `path` (repeated if the file is shorter), scaled to an SNR drawn in range."""
        samples = wave.shape[0]
        segment = audio.random_crop(path, frames, samples, rng)
        if len(segment) != samples:  # the file changed since the table was built: fail loudly, not add silence
            raise DataError(f"{path}: shorter than the {frames} frames its table entry says; rebuild the table")
        snr = float(rng.uniform(snr_range[0], snr_range[1]))
        return scale_to_snr(wave, torch.from_numpy(segment).to(wave.device), snr)
