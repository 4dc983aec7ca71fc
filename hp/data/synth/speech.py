"""The built-in mini corpus: deterministic, speech-like 16 kHz audio for smoke runs, with no downloads.

Model of speech (source-filter, applied frame by frame with overlap-add, i.e. a time-varying filter):
- a phone sequence (words of CV(C) syllables between pauses, from one inventory shared by all speakers) gives
  per-frame targets: formants F1-F5 with bandwidths, voicing, aspiration, and frication (band-shaped noise);
  the targets are smoothed over ~60 ms, so formants glide from phone to phone;
- the voiced source is a band-limited pulse train (harmonics up to 7 kHz) at a time-varying F0 (declination plus
  random pitch accents, jitter, shimmer) with breath noise, under a spectral tilt;
- the vocal tract is a cascade of two-pole resonators; fricatives and stop bursts are noise bands after it.
A speaker is a fixed set of traits (F0 mean and range, vocal-tract length, per-formant offsets, bandwidths, tilt,
breathiness, speaking rate); a recording session adds a channel EQ, small F0/rate shifts and background noise.
Spoofs (CM) re-synthesise fresh bona fide utterances. Train, dev and eval: A01 keeps the STFT magnitude under random
phase, A02 is a channel vocoder (band energies imposed on a pulse/noise excitation at a smoothed F0). Unseen in
training, as ASVspoof5's dev and eval attacks are, two processes designed to be closer to bona fide (A17 in dev and
eval, so that the dev-fitted calibration sees a hard attack; A18 in eval only, seen by neither): A17 is a
mixed-excitation cepstral vocoder (jitter- and shimmer-free pulses at the analysed F0 on a quarter-semitone grid,
noise above 4.5 kHz, through a minimum-phase filter with the cepstrally smoothed envelope), A18 is TD-PSOLA pitch
conversion (the bona fide waveform's own two-period grains re-spaced for an F0 6-12 % higher or lower in voiced
parts).
Codecs (CM): every third bona fide and every third spoof utterance of each split passes through a codec-like channel
(CM_CODECS): C01 band limiting (300-3400 Hz telephone, 4 kHz or 6 kHz low-pass), C02 8-bit mu-law companding (on a
telephone band or full band), C03 coarse linear quantisation (6 or 8 bits).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from itertools import combinations
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf

from hp.data.asvspoof import FORMATS
from hp.data.audio import SAMPLE_RATE
from hp.utils.files import atomic_dir

WIN, HOP = 512, 128  # 32 ms Hann frames every 8 ms
NFFT = 2 * WIN  # zero padding: a vocal-tract response up to WIN samples long filters without wrapping around
MAX_HARMONIC_HZ = 7000.0
BASE_BANDWIDTHS_HZ = np.array([60.0, 90.0, 140.0, 200.0, 280.0])
F5_HZ = 4500.0
EQ_HZ = np.geomspace(100, 8000, 6)  # control points of a session's channel EQ
CM_FORMAT = FORMATS["asvspoof5"]
# ATTACK_LABEL -> ATTACK_TAG in the protocols; the tag groups the attacks by kind: AC1 magnitude-only resynthesis,
# AC2 vocoders (a new excitation under the utterance's envelope), AC3 waveform-domain modification
CM_ATTACKS = {"A01": "AC1", "A02": "AC2", "A17": "AC2", "A18": "AC3"}
# attacks per split (numbered as ASVspoof5's eval attacks, A17...): dev adds A17 to training's two, eval adds A18,
# which neither training nor dev saw; interleaved so that any split with 2 spoofs per speaker holds an unseen one
CM_SPLIT_ATTACKS = {"train": ("A01", "A02"), "dev": ("A01", "A17", "A02"), "eval": ("A01", "A17", "A02", "A18")}
CODED_EVERY = 3  # every third bona fide and every third spoof of a split passes through a codec-like channel
SV_DIRS = {"train": "voxceleb2", "test": "voxceleb1"}
CM_PREFIXES = {"train": "T", "dev": "D", "eval": "E"}  # of speaker ids and file names, as in ASVspoof5
SV, CM = 1, 2  # corpus codes in random-stream keys
SPEAKER, SESSION, UTTERANCE, SPOOF, ORDER, CODEC, TRIALS = range(7)  # roles in random-stream keys


class Phone(NamedTuple):
    name: str
    kind: str  # vowel | fricative | nasal | stop | pause
    formants: tuple[float, float, float, float]  # F1-F4 (Hz) of an adult male
    voice: float  # amplitude of the voiced source
    noise: float  # amplitude of the frication / burst noise band
    noise_hz: float  # its centre and width
    noise_width_hz: float
    bandwidth_scale: float
    seconds: float  # mean duration


# Vowel formants after Hillenbrand et al. (1995), rounded; consonants carry the formant loci they pull towards.
PHONES = (
    Phone("i", "vowel", (270, 2290, 3010, 3500), 1.0, 0, 0, 1, 1.0, 0.13),
    Phone("I", "vowel", (390, 1990, 2550, 3500), 1.0, 0, 0, 1, 1.0, 0.09),
    Phone("e", "vowel", (476, 2089, 2691, 3500), 1.0, 0, 0, 1, 1.0, 0.13),
    Phone("E", "vowel", (530, 1840, 2480, 3500), 1.0, 0, 0, 1, 1.0, 0.10),
    Phone("ae", "vowel", (660, 1720, 2410, 3500), 1.0, 0, 0, 1, 1.0, 0.14),
    Phone("a", "vowel", (730, 1090, 2440, 3500), 1.0, 0, 0, 1, 1.0, 0.14),
    Phone("O", "vowel", (570, 840, 2410, 3500), 1.0, 0, 0, 1, 1.0, 0.13),
    Phone("o", "vowel", (497, 910, 2459, 3500), 1.0, 0, 0, 1, 1.0, 0.13),
    Phone("U", "vowel", (440, 1020, 2240, 3500), 1.0, 0, 0, 1, 1.0, 0.09),
    Phone("u", "vowel", (300, 870, 2240, 3500), 1.0, 0, 0, 1, 1.0, 0.12),
    Phone("V", "vowel", (640, 1190, 2390, 3500), 1.0, 0, 0, 1, 1.0, 0.09),
    Phone("3", "vowel", (490, 1350, 1690, 3500), 1.0, 0, 0, 1, 1.0, 0.12),
    Phone("@", "vowel", (500, 1500, 2500, 3500), 1.0, 0, 0, 1, 1.0, 0.07),
    Phone("s", "fricative", (400, 1600, 2600, 3500), 0.0, 0.7, 5500, 1200, 1.5, 0.11),
    Phone("S", "fricative", (400, 1800, 2400, 3500), 0.0, 0.6, 3000, 900, 1.5, 0.11),
    Phone("f", "fricative", (400, 1100, 2300, 3500), 0.0, 0.2, 4500, 2500, 1.5, 0.10),
    Phone("z", "fricative", (400, 1600, 2600, 3500), 0.4, 0.4, 5500, 1200, 1.5, 0.09),
    Phone("m", "nasal", (280, 1100, 2300, 3500), 0.5, 0, 0, 1, 2.5, 0.07),
    Phone("n", "nasal", (280, 1700, 2500, 3500), 0.5, 0, 0, 1, 2.5, 0.07),
    Phone("t", "stop", (400, 1800, 2600, 3500), 0.0, 1.0, 4500, 1500, 1.5, 0.09),
    Phone("k", "stop", (400, 2000, 2500, 3500), 0.0, 0.9, 2200, 700, 1.5, 0.10),
    Phone("_", "pause", (500, 1500, 2500, 3500), 0.0, 0, 0, 1, 1.0, 0.20),
)
KIND = np.array([p.kind for p in PHONES])
VOWELS = np.flatnonzero(KIND == "vowel")
CONSONANTS = np.flatnonzero((KIND != "vowel") & (KIND != "pause"))
PAUSE = len(PHONES) - 1
FORMANTS = np.array([(*p.formants, F5_HZ) for p in PHONES])
VOICE, NOISE, NOISE_HZ, NOISE_WIDTH_HZ, BANDWIDTH_SCALE, PHONE_SECONDS = (
    np.array([getattr(p, f) for p in PHONES], dtype=float)
    for f in ("voice", "noise", "noise_hz", "noise_width_hz", "bandwidth_scale", "seconds"))
STOP_CLOSURE, STOP_BURST = 0.65, 0.8  # a stop: closure (silence) until 65 %, burst until 80 %, then aspiration


@dataclass(frozen=True)
class Voice:
    """A speaker's fixed traits."""

    gender: str
    f0_hz: float
    f0_range_st: float  # spread of the pitch accents, semitones
    formant_scale: np.ndarray  # [5]: vocal-tract length factor times small per-formant idiosyncrasies
    bandwidth_scale: float
    tilt_db_per_octave: float
    breathiness: float
    rate: float  # phone duration factor (> 1: slower)
    jitter: float
    shimmer: float


@dataclass(frozen=True)
class Session:
    """One recording of a speaker: what changes between a speaker's sessions."""

    eq_db: np.ndarray  # channel gain at EQ_HZ
    snr_db: float
    noise_slope: float  # background noise power ~ f ** -noise_slope
    f0_factor: float
    rate_factor: float


@dataclass(frozen=True)
class Utterance:
    """A bona fide waveform and what a vocoder's analysis would extract from it."""

    wave: np.ndarray
    f0_hz: np.ndarray  # per frame (frame_times)
    voiced: np.ndarray  # per frame


def _rng(*key: int) -> np.random.Generator:
    """An independent stream per (seed, corpus, role, indices): any file's audio depends only on its own key."""
    return np.random.default_rng(key)


def speaker_voice(rng: np.random.Generator) -> Voice:
    """Two broad groups: lower F0 and a longer vocal tract (M), higher F0 and a shorter one (F)."""
    male = rng.random() < 0.5
    f0 = np.exp(rng.uniform(np.log(85), np.log(150)) if male else rng.uniform(np.log(165), np.log(260)))
    vtl = rng.uniform(0.85, 1.02) if male else rng.uniform(1.02, 1.2)
    return Voice(gender="M" if male else "F", f0_hz=float(f0), f0_range_st=rng.uniform(1.0, 3.5),
                 formant_scale=vtl * (1 + 0.04 * rng.standard_normal(5)), bandwidth_scale=rng.uniform(0.7, 1.5),
                 tilt_db_per_octave=rng.uniform(-7.0, -2.0), breathiness=rng.uniform(0.02, 0.3),
                 rate=rng.uniform(0.8, 1.25), jitter=rng.uniform(0.005, 0.02), shimmer=rng.uniform(0.02, 0.08))


def recording_session(rng: np.random.Generator) -> Session:
    return Session(eq_db=2.0 * rng.standard_normal(len(EQ_HZ)), snr_db=rng.uniform(25, 45),
                   noise_slope=rng.uniform(0, 1.5), f0_factor=float(np.exp(0.03 * rng.standard_normal())),
                   rate_factor=float(np.exp(0.05 * rng.standard_normal())))


def phone_sequence(rng: np.random.Generator, seconds: float, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Phone ids and their end times (s): words of 1-3 (C)V(C) syllables, mostly separated by pauses,
    between a leading and a trailing pause (so that cutting the last one at `seconds` makes no click)."""
    ids, durations = [PAUSE], [rng.uniform(0.1, 0.3)]
    while sum(durations) < seconds - 0.3:
        for _ in range(rng.integers(1, 4)):
            syllable = ([rng.choice(CONSONANTS)] if rng.random() < 0.8 else []) + [rng.choice(VOWELS)]
            ids += syllable + ([rng.choice(CONSONANTS)] if rng.random() < 0.3 else [])
        if rng.random() < 0.6:
            ids.append(PAUSE)
        durations += [PHONE_SECONDS[i] * rate * rng.uniform(0.7, 1.3) for i in ids[len(durations):]]
    ids.append(PAUSE)
    durations.append(max(0.3, seconds - sum(durations) + 0.1))
    return np.array(ids), np.cumsum(durations)


def _smooth(x: np.ndarray, frames: int) -> np.ndarray:
    """Hann-weighted moving average along the first axis (`frames` odd), edges held."""
    kernel = np.hanning(frames + 2)[1:-1]
    padded = np.pad(x, [(frames // 2, frames // 2)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    return sum(w * padded[i:i + len(x)] for i, w in enumerate(kernel / kernel.sum()))


def frame_times(samples: int) -> np.ndarray:
    """Centre (s) of each analysis frame of `_stft`."""
    return (np.arange((samples + WIN) // HOP + 1) * HOP - WIN / 2) / SAMPLE_RATE


def articulation(rng: np.random.Generator, voice: Voice, ids: np.ndarray, ends: np.ndarray,
                 times: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame formants, bandwidths and source amplitudes from the phone sequence.

    Formant targets are smoothed over ~60 ms (coarticulation), source amplitudes over ~20 ms (crisp stops)."""
    index = np.minimum(np.searchsorted(ends, times, side="right"), len(ids) - 1)
    phone = ids[index]
    starts = np.concatenate([[0.0], ends[:-1]])[index]
    position = np.clip((times - starts) / (ends[index] - starts), 0, 1)
    stop = KIND[phone] == "stop"
    loudness = rng.uniform(0.5, 1.0, len(ids))[index]  # a stress level per phone
    burst = stop & (position >= STOP_CLOSURE) & (position < STOP_BURST)
    frication = np.where(stop & ~burst, 0.0, NOISE[phone]) * loudness
    aspiration = np.where(stop & (position >= STOP_BURST), 0.3, 0.0) * loudness
    scale = voice.formant_scale.mean()
    return dict(
        formants=_smooth(FORMANTS[phone] * voice.formant_scale, 7),
        bandwidths=_smooth(np.outer(BANDWIDTH_SCALE[phone] * voice.bandwidth_scale, BASE_BANDWIDTHS_HZ), 7),
        voice=_smooth(VOICE[phone] * loudness, 3), aspiration=_smooth(aspiration, 3),
        frication=_smooth(frication, 3), noise_hz=NOISE_HZ[phone] * scale, noise_width_hz=NOISE_WIDTH_HZ[phone] * scale)


def f0_contour(rng: np.random.Generator, voice: Voice, session: Session, times: np.ndarray) -> np.ndarray:
    """F0 (Hz) per frame: random pitch accents every ~0.3 s, smoothed, over a falling declination line."""
    knots = np.arange(times[0] - 0.3, times[-1] + 0.6, 0.3)
    semitones = _smooth(np.interp(times, knots, voice.f0_range_st * rng.standard_normal(len(knots))), 9)
    semitones -= rng.uniform(1.0, 3.0) * (times - times[0]) / (times[-1] - times[0])
    return voice.f0_hz * session.f0_factor * 2 ** (semitones / 12)


def pulse_train(rng: np.random.Generator, f0_hz: np.ndarray, jitter: float, shimmer: float) -> np.ndarray:
    """Band-limited glottal pulses at the per-sample F0: sum_{k<=K} cos(k phase) in closed form (Dirichlet kernel),
    every harmonic at amplitude 1. K (harmonics below MAX_HARMONIC_HZ) is fixed within each period, so it only
    changes at a pulse peak; jitter perturbs F0 and shimmer the amplitude once per (nominal) period."""
    nominal = np.arange(len(f0_hz)) * f0_hz.mean() // SAMPLE_RATE
    f0_hz = f0_hz * (1 + jitter * rng.standard_normal(int(nominal[-1]) + 1))[nominal.astype(int)]
    phase = 2 * np.pi * np.cumsum(f0_hz) / SAMPLE_RATE
    period = (phase // (2 * np.pi)).astype(int)  # 0, 1, 2, ... (at most one step per sample)
    theta = phase - 2 * np.pi * period
    first = np.flatnonzero(np.diff(period, prepend=-1))
    harmonics = np.floor(MAX_HARMONIC_HZ / f0_hz[first])[period]
    half = np.sin(theta / 2)
    near_peak = np.abs(half) < 1e-6
    dirichlet = np.sin((harmonics + 0.5) * theta) / (2 * np.where(near_peak, 1, half)) - 0.5
    pulses = np.where(near_peak, harmonics, dirichlet)
    return pulses * (1 + shimmer * rng.standard_normal(period[-1] + 1))[period]


def _stft(x: np.ndarray, nfft: int) -> np.ndarray:
    """[frames, nfft // 2 + 1] spectra of Hann-windowed WIN-sample frames every HOP (frame times: frame_times)."""
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(x, WIN), WIN)[::HOP]
    return np.fft.rfft(frames * np.hanning(WIN + 1)[:-1], nfft)


def _istft(spec: np.ndarray, samples: int) -> np.ndarray:
    """Overlap-add of the frames' inverse FFTs. NFFT-point spectra are filtered frames (a time-varying filter):
    plain overlap-add, the periodic Hann windows summing to 2. WIN-point spectra are re-synthesised frames:
    weighted overlap-add with a second Hann window, Hann^2 summing to 1.5."""
    segments = np.fft.irfft(spec)
    if segments.shape[1] == WIN:
        segments, norm = segments * np.hanning(WIN + 1)[:-1], 1.5
    else:
        norm = 2.0
    blocks = segments.reshape(len(segments), -1, HOP)
    out = np.zeros((len(segments) + blocks.shape[1] - 1, HOP))
    for j in range(blocks.shape[1]):
        out[j:j + len(segments)] += blocks[:, j]
    return out.ravel()[WIN:WIN + samples] / norm


def _frequencies(nfft: int) -> np.ndarray:
    return np.fft.rfftfreq(nfft, 1 / SAMPLE_RATE)


def vocal_tract(formants: np.ndarray, bandwidths: np.ndarray) -> np.ndarray:
    """[frames, NFFT // 2 + 1] complex response of cascaded two-pole resonators with unit gain at 0 Hz
    (Klatt's cascade: relative formant levels come out right without per-formant amplitudes).

    The cascade is the all-pole filter 1 / A(z), A = prod_i (1 - 2 r_i cos(w_i) z^-1 + r_i^2 z^-2): multiplying
    out A's coefficients and taking one FFT per frame is much faster than evaluating each resonator on the grid."""
    radius = np.exp(-np.pi * bandwidths / SAMPLE_RATE)
    cos2 = 2 * radius * np.cos(2 * np.pi * formants / SAMPLE_RATE)
    a = np.zeros((len(formants), 2 * formants.shape[1] + 1))
    a[:, 0] = 1
    for i in range(formants.shape[1]):
        a = a - cos2[:, i, None] * np.pad(a[:, :-1], ((0, 0), (1, 0))) \
            + (radius[:, i, None] ** 2) * np.pad(a[:, :-2], ((0, 0), (2, 0)))
    return a.sum(axis=1, keepdims=True) / np.fft.rfft(a, NFFT)


def synthesize(rng: np.random.Generator, voice: Voice, session: Session, seconds: float) -> Utterance:
    """One bona fide utterance of exactly round(seconds * SAMPLE_RATE) samples, before level normalisation."""
    samples = round(seconds * SAMPLE_RATE)
    times = frame_times(samples)
    ids, ends = phone_sequence(rng, seconds, voice.rate * session.rate_factor)
    a = articulation(rng, voice, ids, ends, times)
    f0 = f0_contour(rng, voice, session, times)
    sample_times = np.arange(samples) / SAMPLE_RATE
    pulses = pulse_train(rng, np.interp(sample_times, times, f0), voice.jitter, voice.shimmer)
    # white noise with the pulse train's power spectral density (0.5 / F0 per Hz), so amplitudes compare directly
    noise_std = np.sqrt(SAMPLE_RATE / (4 * voice.f0_hz))
    breath, fricative = (_stft(noise_std * rng.standard_normal(samples), NFFT) for _ in range(2))
    freqs = _frequencies(NFFT)
    tilt = (1 + (freqs / 300) ** 2) ** (voice.tilt_db_per_octave / 12.04)  # flat below 300 Hz, then dB/octave
    source = (a["voice"][:, None] * _stft(pulses, NFFT) * tilt
              + (a["aspiration"] + voice.breathiness * a["voice"])[:, None] * breath)
    band = np.exp(-0.5 * ((freqs - a["noise_hz"][:, None]) / a["noise_width_hz"][:, None]) ** 2)
    spec = source * vocal_tract(a["formants"], a["bandwidths"]) + (a["frication"][:, None] * band) * fricative
    channel = 10 ** (np.interp(np.log(np.maximum(freqs, 1)), np.log(EQ_HZ), session.eq_db) / 20)
    wave = _istft(spec * channel, samples)
    return Utterance(wave + background_noise(rng, session, wave), f0, voiced=a["voice"] > 0.25)


def background_noise(rng: np.random.Generator, session: Session, speech: np.ndarray) -> np.ndarray:
    """Stationary coloured noise at the session's SNR relative to the speech's mean power."""
    spectrum = np.fft.rfft(rng.standard_normal(len(speech)))
    freqs = np.maximum(np.fft.rfftfreq(len(speech), 1 / SAMPLE_RATE), 50)
    noise = np.fft.irfft(spectrum * freqs ** (-session.noise_slope / 2), len(speech))
    return noise * np.sqrt(np.mean(speech ** 2) / np.mean(noise ** 2) / 10 ** (session.snr_db / 10))


def random_phase_vocoder(rng: np.random.Generator, utterance: Utterance) -> np.ndarray:
    """A01: the STFT magnitude re-synthesised with a fresh random phase in every frame and bin. The spectral
    envelope (the speaker's timbre) survives; phase coherence across bins and frames does not: glottal pulses
    smear into noise bands around the harmonics (a rough, whispery voice with a weakened pitch)."""
    magnitude = np.abs(_stft(utterance.wave, WIN))
    return _istft(magnitude * np.exp(2j * np.pi * rng.random(magnitude.shape)), len(utterance.wave))


def band_filters(bands: int = 20, nfft: int = WIN) -> np.ndarray:
    """[bands, nfft // 2 + 1] triangles with peaks evenly spaced on the mel scale from 0 Hz to Nyquist."""
    mel = 2595 * np.log10(1 + _frequencies(nfft) / 700)
    peaks = np.linspace(0, mel[-1], bands)
    return np.maximum(0, 1 - np.abs(mel[None] - peaks[:, None]) / (peaks[1] - peaks[0]))


def channel_vocoder(rng: np.random.Generator, utterance: Utterance) -> np.ndarray:
    """A02: the utterance's energies in 20 mel bands, at a ~25 ms frame rate, imposed on a new excitation:
    jitter-free pulses at a smoothed F0 where voiced, white noise elsewhere (hard switching). Formant detail, voice
    quality and the breath noise between harmonics are lost; voiced sounds are buzzy and end at MAX_HARMONIC_HZ."""
    samples = len(utterance.wave)
    times = frame_times(samples)
    sample_times = np.arange(samples) / SAMPLE_RATE
    pulses = pulse_train(rng, np.interp(sample_times, times, _smooth(utterance.f0_hz, 13)), 0.0, 0.0)
    voiced = np.interp(sample_times, times, utterance.voiced.astype(float)) > 0.5
    excitation = _stft(np.where(voiced, pulses / np.sqrt(np.mean(pulses ** 2)), rng.standard_normal(samples)), WIN)
    bank = band_filters()
    # einsum rather than `@`: a multithreaded BLAS call costs more than it computes at these sizes
    target, current = (np.einsum("fk,bk->fb", np.abs(s) ** 2, bank) for s in (_stft(utterance.wave, WIN), excitation))
    target = _smooth(target, 5)
    gain = np.einsum("fb,bk->fk", np.sqrt(target / (current + 1e-12)), bank / bank.sum(axis=0))  # bands -> bins
    return _istft(excitation * gain, samples)


F0_STEP_ST = 0.25  # A17's F0 grid (semitones)
CEPSTRAL_ORDER = 30  # A17's lifter: cepstral coefficients kept (~1.9 ms of quefrency, ~530 Hz of smoothing)
VOICED_MAX_HZ = 4500.0  # A17: harmonic excitation below, noise above (in voiced frames)
BREATH = 0.3  # A17: noise amplitude mixed into the harmonic band, relative to the pulses


def _log_envelope_cepstrum(power: np.ndarray, order: int) -> np.ndarray:
    """[frames, NFFT] real cepstra of NFFT-point power spectra, kept below quefrency `order` (samples): the log
    spectrum low-passed along frequency, i.e. its smooth envelope."""
    cepstrum = np.fft.irfft(np.log(power + 1e-12 * power.max()), NFFT)
    cepstrum[:, order:NFFT - order + 1] = 0
    return cepstrum


def cepstral_vocoder(rng: np.random.Generator, utterance: Utterance) -> np.ndarray:
    """A17 (eval only): a mixed-excitation cepstral vocoder. Jitter- and shimmer-free pulses at the analysed F0,
    rounded to a quarter-semitone grid, with a fixed breath noise (BREATH), below VOICED_MAX_HZ in voiced frames;
    white noise above it and in unvoiced frames (voicing cross-faded over ~40 ms); all through a minimum-phase
    filter with the utterance's cepstrally smoothed spectral envelope (CEPSTRAL_ORDER coefficients; the
    excitation's own envelope divided out). Timbre, noise bands, level contour and the pulses' ringing survive;
    formant peaks are flattened a little, the harmonics above 4.5 kHz become noise and the pitch is too regular,
    moving in small steps."""
    samples = len(utterance.wave)
    times = frame_times(samples)
    sample_times = np.arange(samples) / SAMPLE_RATE
    semitones = np.round(12 * np.log2(utterance.f0_hz / 100) / F0_STEP_ST) * F0_STEP_ST
    pulses = pulse_train(rng, np.interp(sample_times, times, 100 * 2 ** (semitones / 12)), 0.0, 0.0)
    harmonic = _stft(pulses / np.sqrt(np.mean(pulses ** 2)), NFFT)
    noise = _stft(rng.standard_normal(samples), NFFT)
    voicing = _smooth(utterance.voiced.astype(float), 5)[:, None] * (_frequencies(NFFT) < VOICED_MAX_HZ)
    excitation = voicing * (harmonic + BREATH * noise) / np.hypot(1, BREATH) + (1 - voicing) * noise
    # half the log power ratio's cepstrum, folded onto positive quefrencies: the minimum-phase filter with that gain
    ratio = 0.5 * (_log_envelope_cepstrum(np.abs(_stft(utterance.wave, NFFT)) ** 2, CEPSTRAL_ORDER)
                   - _log_envelope_cepstrum(np.abs(excitation) ** 2, CEPSTRAL_ORDER))
    ratio[:, 1:CEPSTRAL_ORDER] *= 2
    ratio[:, NFFT - CEPSTRAL_ORDER + 1:] = 0
    return _istft(excitation * np.exp(np.fft.rfft(ratio, NFFT)), samples)


def psola(rng: np.random.Generator, utterance: Utterance) -> np.ndarray:
    """A18 (eval only): time-domain pitch-synchronous overlap-add (TD-PSOLA), the classic waveform-level pitch
    conversion. Grains of two local periods (Hann-windowed) are cut at analysis marks one period apart along the
    analysed F0 contour, and re-placed at synthesis marks spaced by the converted period: F0 scaled by a factor in
    [0.88, 0.94] or [1.06, 1.12] in voiced frames (cross-faded over ~40 ms), unchanged elsewhere, the duration kept
    (each synthesis mark takes the nearest analysis grain, so grains repeat or drop). The spectral envelope, the
    noise and the recording are the bona fide ones; what betrays it is subtle: marks not aligned with the glottal
    pulses, harmonics shifted under a fixed envelope, and grain repetition making the aperiodic part periodic."""
    wave, samples = utterance.wave, len(utterance.wave)
    times = frame_times(samples)
    sample_times = np.arange(samples) / SAMPLE_RATE
    f0 = np.interp(sample_times, times, utterance.f0_hz)
    shift = rng.uniform(0.06, 0.12) * rng.choice([-1, 1])
    factor = 1 + shift * np.interp(sample_times, times, _smooth(utterance.voiced.astype(float), 5))

    def marks(rate: np.ndarray) -> np.ndarray:  # the samples where the integrated rate crosses a whole period
        return np.flatnonzero(np.diff(np.floor(np.cumsum(rate) / SAMPLE_RATE), prepend=0))

    analysis, synthesis = marks(f0), marks(f0 * factor)
    nearest = np.clip(np.searchsorted(analysis, synthesis), 1, len(analysis) - 1)
    nearest -= (synthesis - analysis[nearest - 1]) < (analysis[nearest] - synthesis)
    out, weight = np.zeros(samples), np.zeros(samples)
    for a, s in zip(analysis[nearest], synthesis):
        half = int(SAMPLE_RATE / f0[a])
        lo, hi = max(-half, -a, -s), min(half, samples - 1 - a, samples - 1 - s)
        window = np.hanning(2 * half + 3)[1:-1][half + lo:half + hi + 1]
        out[s + lo:s + hi + 1] += window * wave[a + lo:a + hi + 1]
        weight[s + lo:s + hi + 1] += window
    return out / np.maximum(weight, 0.5)


CM_SPOOFERS = {"A01": random_phase_vocoder, "A02": channel_vocoder, "A17": cepstral_vocoder, "A18": psola}


class Channel(NamedTuple):
    """A codec-like channel: band limiting to [low_hz, high_hz], then (bits set) quantisation to 2 ** bits levels,
    mu-law companded when mu > 0 (G.711's 8-bit mu-law: mu = 255)."""

    low_hz: float = 0.0
    high_hz: float = SAMPLE_RATE / 2
    bits: int | None = None
    mu: float = 0.0


# CODEC -> {CODEC_Q: channel}, named as ASVspoof5 names its codecs (C01..., quality 1 the lowest); numpy stand-ins,
# not ASVspoof5's C01-C11 (opus, amr, ...)
CM_CODECS = {
    "C01": {1: Channel(300.0, 3400.0), 2: Channel(0.0, 4000.0), 3: Channel(0.0, 6000.0)},  # band limiting
    "C02": {1: Channel(300.0, 3400.0, bits=8, mu=255.0), 2: Channel(bits=8, mu=255.0)},  # mu-law, 8 bits
    "C03": {1: Channel(bits=6), 2: Channel(bits=8)},  # coarse linear quantisation
}
BAND_EDGE_HZ = 100.0  # raised-cosine transition inside each band edge


def band_limit(wave: np.ndarray, low_hz: float, high_hz: float) -> np.ndarray:
    """Zero every component outside [low_hz, high_hz] (one FFT over the whole utterance), with raised-cosine
    transitions BAND_EDGE_HZ wide inside the band so that the filter rings for only ~10 ms."""
    freqs = np.fft.rfftfreq(len(wave), 1 / SAMPLE_RATE)
    mask = np.clip(np.minimum(freqs - low_hz if low_hz > 0 else np.inf, high_hz - freqs) / BAND_EDGE_HZ, 0, 1)
    return np.fft.irfft(np.fft.rfft(wave) * (0.5 - 0.5 * np.cos(np.pi * mask)), len(wave))


def codec_channel(wave: np.ndarray, channel: Channel) -> np.ndarray:
    """The waveform through `channel` (deterministic: no dither)."""
    if channel.low_hz > 0 or channel.high_hz < SAMPLE_RATE / 2:
        wave = band_limit(wave, channel.low_hz, channel.high_hz)
    if channel.bits is None:
        return wave
    x = wave / np.abs(wave).max()
    if channel.mu:
        x = np.sign(x) * np.log1p(channel.mu * np.abs(x)) / np.log1p(channel.mu)
    levels = 2 ** channel.bits  # a mid-rise quantiser: exactly `levels` output values
    x = (np.clip(np.floor((x + 1) / 2 * levels), 0, levels - 1) + 0.5) / levels * 2 - 1
    if channel.mu:
        x = np.sign(x) * np.expm1(np.abs(x) * np.log1p(channel.mu)) / channel.mu
    return x


def _finish(rng: np.random.Generator, wave: np.ndarray) -> np.ndarray:
    """Peak-normalise to a random level in [0.5, 0.9]."""
    return wave * (rng.uniform(0.5, 0.9) / np.abs(wave).max())


def _check_counts(**counts: tuple[int, int]) -> None:
    """name=(value, least allowed value)."""
    for name, (value, least) in counts.items():
        if value < least:
            raise ValueError(f"{name} must be at least {least}, got {value}")


def _check_seconds(min_seconds: float, max_seconds: float) -> None:
    if not 0.5 <= min_seconds <= max_seconds:
        raise ValueError(f"need 0.5 <= min_seconds <= max_seconds, got {min_seconds} and {max_seconds}")


def _parallel(fn, items: list, workers: int | None) -> list:
    """[fn(item) for item in items] on `workers` threads (None: one per CPU this process may use); numpy's FFTs and
    array arithmetic and libsndfile release the GIL, so threads share the work. Every file's audio depends only on
    its own random stream (_rng), so the corpus is the same for any number of workers."""
    workers = len(os.sched_getaffinity(0)) if workers is None else workers
    if workers <= 1 or len(items) < 2:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def _write_sv_utterance(wav_dir: Path, seed: int, split_code: int, min_seconds: float, max_seconds: float,
                        item: tuple[str, int, int, int]) -> float:
    """Write utterance k of session j of speaker s of a split; returns its length in seconds."""
    utt, s, j, k = item
    voice = speaker_voice(_rng(seed, SV, SPEAKER, split_code, s))
    session = recording_session(_rng(seed, SV, SESSION, split_code, s, j))
    rng = _rng(seed, SV, UTTERANCE, split_code, s, j, k)
    duration = rng.uniform(min_seconds, max_seconds)
    wave = _finish(rng, synthesize(rng, voice, session, duration).wave)
    sf.write(wav_dir / utt, wave, SAMPLE_RATE, subtype="PCM_16")
    return len(wave) / SAMPLE_RATE


def _write_sv_split(wav_dir: Path, seed: int, split_code: int, first_id: int, speakers: int, sessions: int,
                    utterances_per_session: int, min_seconds: float, max_seconds: float,
                    workers: int | None = None) -> list[tuple[str, float]]:
    """Write one split's <spk>/<session>/<NNNNN>.wav files; returns (relative path, seconds) per utterance."""
    items = [(f"id{first_id + s:05d}/s{j + 1:04d}/{k + 1:05d}.wav", s, j, k)
             for s in range(speakers) for j in range(sessions) for k in range(utterances_per_session)]
    for utt, *_ in items:
        (wav_dir / utt).parent.mkdir(parents=True, exist_ok=True)
    seconds = _parallel(partial(_write_sv_utterance, wav_dir, seed, split_code, min_seconds, max_seconds), items,
                        workers)
    return [(utt, length) for (utt, *_), length in zip(items, seconds)]


def sv_trial_list(utterances: list[str], nontarget: int | None,
                  rng: np.random.Generator) -> list[tuple[int, str, str]]:
    """(label, enroll, test) for every pair of distinct `utterances` ("<speaker>/<session>/<file>") of one speaker,
    and `nontarget` pairs of two speakers drawn without replacement (None, or more than there are: all of them), in
    the order of the pairs."""
    pairs = [(int(a.split("/")[0] == b.split("/")[0]), a, b) for a, b in combinations(utterances, 2)]
    different = [i for i, (label, _, _) in enumerate(pairs) if not label]
    if nontarget is not None and nontarget < len(different):
        dropped = set(np.asarray(different)[rng.permutation(len(different))[nontarget:]].tolist())
        pairs = [pair for i, pair in enumerate(pairs) if i not in dropped]
    return pairs


def write_sv_corpus(root: Path, seed: int = 0, train_speakers: int = 24, test_speakers: int = 8,
                    sessions: int = 2, utterances_per_session: int = 3, test_sessions: int | None = None,
                    test_utterances_per_session: int | None = None, nontarget_trials: int | None = None,
                    min_seconds: float = 2.0, max_seconds: float = 4.0, workers: int | None = None) -> dict:
    """SV corpus in VoxCeleb's layout, so that it goes through the same adapters as the real one.

    root/voxceleb2/wav/<spk>/<session>/<NNNNN>.wav  training speakers (id00001...; as VoxCeleb2-dev in wav)
    root/voxceleb1/wav/<spk>/<session>/<NNNNN>.wav  disjoint test speakers (id10001...; as VoxCeleb1)
    root/voxceleb1/veri_test2.txt  the trial list, "<1|0> <enroll> <test>", paths relative to voxceleb1/wav (the
                                   Vox1-O list's format): every pair of distinct utterances of one test speaker,
                                   and `nontarget_trials` pairs of two speakers drawn without replacement (None, or
                                   more than there are: every such pair), in the order of the utterances.
    Sessions are s0001..., utterances 00001... within a session; a test speaker has `test_sessions` x
    `test_utterances_per_session` of them (None: as a training speaker). Test audio costs only an embedding pass,
    so the test set can be large enough to resolve differences between runs while training stays short.
    `workers`: threads writing audio (None: every CPU); it changes nothing in the corpus.
    Returns counts of speakers, utterances and seconds per split, and of target / non-target trials."""
    test_sessions = sessions if test_sessions is None else test_sessions
    test_utterances_per_session = utterances_per_session if test_utterances_per_session is None \
        else test_utterances_per_session
    _check_counts(train_speakers=(train_speakers, 1), test_speakers=(test_speakers, 2), sessions=(sessions, 1),
                  utterances_per_session=(utterances_per_session, 1), test_sessions=(test_sessions, 1),
                  test_utterances_per_session=(test_utterances_per_session, 1),
                  test_utterances_per_speaker=(test_sessions * test_utterances_per_session, 2),
                  nontarget_trials=(1 if nontarget_trials is None else nontarget_trials, 1))
    _check_seconds(min_seconds, max_seconds)
    summary, written = {}, {}
    with atomic_dir(root) as tree:
        for split_code, (split, first_id, speakers, n_sessions, per_session) in enumerate((
                ("train", 1, train_speakers, sessions, utterances_per_session),
                ("test", 10001, test_speakers, test_sessions, test_utterances_per_session))):
            written[split] = _write_sv_split(tree / SV_DIRS[split] / "wav", seed, split_code, first_id, speakers,
                                             n_sessions, per_session, min_seconds, max_seconds, workers)
            summary[split] = {"speakers": speakers, "utterances": len(written[split]),
                              "seconds": round(sum(seconds for _, seconds in written[split]), 2)}
        trials = sv_trial_list([utt for utt, _ in written["test"]], nontarget_trials, _rng(seed, SV, TRIALS))
        (tree / "voxceleb1" / "veri_test2.txt").write_text("".join(f"{label} {a} {b}\n" for label, a, b in trials))
    target = sum(label for label, _, _ in trials)
    summary["trials"] = {"target": target, "nontarget": len(trials) - target}
    return summary


def _cm_role(label: str) -> int:
    return UTTERANCE if label == "bonafide" else SPOOF


def _write_cm_utterance(audio: Path, seed: int, min_seconds: float, max_seconds: float,
                        item: tuple[str, int, str, int, str | None, int | None]) -> float:
    """Write one CM file: utterance k of speaker s, bona fide or spoofed by attack `label`, coded or not; returns
    its length in seconds."""
    name, s, label, k, codec, quality = item
    rng = _rng(seed, CM, _cm_role(label), s, k)
    session = recording_session(rng)
    utterance = synthesize(rng, speaker_voice(_rng(seed, CM, SPEAKER, s)), session,
                           rng.uniform(min_seconds, max_seconds))
    wave = utterance.wave if label == "bonafide" else CM_SPOOFERS[label](rng, utterance)
    if codec is not None:
        wave = codec_channel(wave, CM_CODECS[codec][quality])
    sf.write(audio / f"{name}.flac", _finish(rng, wave), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return len(wave) / SAMPLE_RATE


def write_cm_corpus(root: Path, seed: int = 1, train_speakers: int = 12, test_speakers: int = 6,
                    bonafide_per_speaker: int = 6, spoofed_per_speaker: int = 6,
                    test_bonafide_per_speaker: int | None = None, test_spoofed_per_speaker: int | None = None,
                    min_seconds: float = 2.0, max_seconds: float = 4.0, workers: int | None = None) -> dict:
    """ASVspoof5-shaped CM corpus.

    root/{flac_T,flac_D,flac_E_eval}/<FLAC_FILE_NAME>.flac  16 kHz FLAC (the release's layout)
    root/ASVspoof5_protocols/ASVspoof5.{train,dev.track_1,eval.track_1}.tsv, space separated, no header:
      SPEAKER_ID FLAC_FILE_NAME SPEAKER_GENDER CODEC CODEC_Q CODEC_SEED ATTACK_TAG ATTACK_LABEL KEY TMP
    `train_speakers` train, then `test_speakers` dev and as many eval speakers (ids T_0001, D_0001, E_0001...;
    files T_0000000001..., numbered in a random order); a speaker's voice is drawn from its index in that order, so
    adding test speakers leaves the training audio as it was. Every bona fide utterance is its own session; spoofs
    cycle through the split's attacks (CM_SPLIT_ATTACKS: A01, A02 in train; dev adds A17, eval A17 and A18), each
    re-synthesising a fresh (unwritten) bona fide utterance of the same speaker. Every third bona fide and every third spoof of a
    split is coded (CM_CODECS, cycling through C01-C03, the quality CODEC_Q drawn per file); CODEC_SEED, in
    ASVspoof5 the uncoded utterance a coded one was made from, is the file's own name (it is coded in place, its
    only version), and all three are '-' for uncoded files. A dev or eval speaker has `test_bonafide_per_speaker`
    and `test_spoofed_per_speaker` utterances (None: as a training speaker): test audio costs only an embedding
    pass, so dev and eval can be large enough to resolve differences between runs while training stays short.
    `workers`: threads writing audio (None: every CPU); it changes nothing in the corpus.
    Returns bona fide and spoof counts, seconds, and utterances per attack and per codec, per split."""
    test_bonafide = bonafide_per_speaker if test_bonafide_per_speaker is None else test_bonafide_per_speaker
    test_spoofed = spoofed_per_speaker if test_spoofed_per_speaker is None else test_spoofed_per_speaker
    _check_counts(train_speakers=(train_speakers, 1), test_speakers=(test_speakers, 1),
                  bonafide_per_speaker=(bonafide_per_speaker, 1),
                  spoofed_per_speaker=(spoofed_per_speaker, len(CM_SPLIT_ATTACKS["train"])),
                  test_bonafide_per_speaker=(test_bonafide, 1), test_spoofed_per_speaker=(test_spoofed, 1))
    _check_seconds(min_seconds, max_seconds)
    split_speakers = np.split(np.arange(train_speakers + 2 * test_speakers),
                              [train_speakers, train_speakers + test_speakers])
    codecs = list(CM_CODECS)
    summary: dict = {}
    with atomic_dir(root) as tree:
        (tree / CM_FORMAT.protocol_dirs[0]).mkdir()
        for split_code, ((split, prefix), members) in enumerate(zip(CM_PREFIXES.items(), split_speakers)):
            audio = tree / CM_FORMAT.audio_dirs[split]
            audio.mkdir()
            attacks = CM_SPLIT_ATTACKS[split]
            # (speaker number within the split, speaker index, label, index, codec); attacks cycle within the split,
            # codecs too (every CODED_EVERY-th utterance of each class, counted across the split)
            items = []
            per_speaker = {"bonafide": bonafide_per_speaker, "spoof": spoofed_per_speaker} if split == "train" \
                else {"bonafide": test_bonafide, "spoof": test_spoofed}
            for n, s in enumerate(members, 1):
                for key, count in per_speaker.items():
                    for k in range(count):
                        j = (n - 1) * count + k  # the utterance's place among its class in the split
                        label = key if key == "bonafide" else attacks[j % len(attacks)]
                        coded = j % CODED_EVERY == CODED_EVERY - 1
                        items.append((n, s, label, k, codecs[j // CODED_EVERY % len(codecs)] if coded else None))
            order = _rng(seed, CM, ORDER, split_code).permutation(len(items))
            voices = {s: speaker_voice(_rng(seed, CM, SPEAKER, s)) for s in members}
            lines, counts = [], {"speakers": len(members), "bonafide": 0, "spoof": 0, "seconds": 0.0}
            per = {"attacks": dict.fromkeys(attacks, 0), "codecs": dict.fromkeys(["-", *codecs], 0)}
            files = []  # (file name, speaker index, label, index, codec, its quality)
            for number, i in enumerate(order, 1):
                n, s, label, k, codec = items[i]
                name, key = f"{prefix}_{number:010d}", "bonafide" if label == "bonafide" else "spoof"
                quality = None if codec is None else int(
                    _rng(seed, CM, CODEC, _cm_role(label), s, k).choice(list(CM_CODECS[codec])))
                files.append((name, s, label, k, codec, quality))
                coding = "- - -" if codec is None else f"{codec} {quality} {name}"
                tag = "-" if key == "bonafide" else CM_ATTACKS[label]
                lines.append(f"{prefix}_{n:04d} {name} {voices[s].gender} {coding} {tag} {label} {key} -\n")
                counts[key] += 1
                if key == "spoof":
                    per["attacks"][label] += 1
                per["codecs"][codec or "-"] += 1
            counts["seconds"] = sum(_parallel(partial(_write_cm_utterance, audio, seed, min_seconds, max_seconds),
                                              files, workers))
            (tree / CM_FORMAT.protocol_dirs[0] / CM_FORMAT.protocols[split]).write_text("".join(lines))
            summary[split] = {**counts, "seconds": round(counts["seconds"], 2), **per}
    return summary
