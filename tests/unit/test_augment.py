"""MUSAN / RIR augmentation: tables from tiny trees as distributed, and the DSP checked against numpy references."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

import hp.data.audio
from hp.data.augment import AugmentConfig, Augmenter, musan_table, rir_table
from hp.data.manifest import DataError

SR = 16000
T = 1600  # test waves: 0.1 s
CLEAN_BIN = 30  # the clean wave of the babble test is a sinusoid on this rfft bin of a T-long wave
SPEECH_BINS = (50, 70, 90, 110, 130, 150, 170, 190)  # one MUSAN 'speech' file per bin: talkers are separable


def write(path: Path, data: np.ndarray, sr: int = SR) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sr, subtype="FLOAT")  # float: what we read back is exactly what we wrote
    return data


def sinusoid(k: int, n: int, phase: float = 0.0, amplitude: float = 0.3) -> np.ndarray:
    """k whole cycles per T samples: every T-long crop of it lies entirely on rfft bin k."""
    return (amplitude * np.sin(2 * np.pi * k * np.arange(n) / T + phase)).astype(np.float32)


def build_musan(root: Path, kinds=("noise", "music", "speech")) -> dict[str, np.ndarray]:
    """A MUSAN tree (music/noise/speech/<subset>/*.wav); returns path -> samples."""
    rng = np.random.default_rng(1)
    files = {}
    if "noise" in kinds:
        for name, n in (("free-sound/noise-free-sound-0000", 8000), ("free-sound/noise-free-sound-0001", 4800),
                        ("sound-bible/noise-sound-bible-0000", 3200)):
            files[root / "musan/noise" / f"{name}.wav"] = (rng.standard_normal(n) * 0.1).astype(np.float32)
    if "music" in kinds:
        for name, n in (("fma/music-fma-0000", 6400), ("hd-classical/music-hd-0000", 5000)):
            files[root / "musan/music" / f"{name}.wav"] = (rng.standard_normal(n) * 0.2).astype(np.float32)
    if "speech" in kinds:
        for i, k in enumerate(SPEECH_BINS):
            files[root / f"musan/speech/librivox/speech-librivox-{i:04d}.wav"] = sinusoid(k, 4000, phase=i)
    for path, data in files.items():
        write(path, data)
    if "noise" in kinds:
        (root / "musan/noise/free-sound/ANNOTATIONS").write_text("not audio\n")
    return {str(p): d for p, d in files.items()}


def build_rirs(root: Path) -> dict[str, np.ndarray]:
    """RIRS_NOISES with simulated RIRs, real ones (one 2-channel), an isotropic noise and a point-source noise."""
    rng = np.random.default_rng(2)

    def rir(n: int) -> np.ndarray:
        return (rng.standard_normal(n) * np.exp(-np.arange(n) / (n / 6))).astype(np.float32)

    base = root / "RIRS_NOISES"
    files = {base / "simulated_rirs/smallroom/Room001/Room001-00001.wav": rir(800),
             base / "simulated_rirs/largeroom/Room002/Room002-00001.wav": rir(3000),  # longer than the wave
             base / "real_rirs_isotropic_noises/RVB2014_type1_rir_largeroom1_near_angla.wav": rir(1200),
             base / "real_rirs_isotropic_noises/RWCP_type2_rir_cirline_ofc_imp050.wav":
                 np.stack([rir(2000), rir(2000)], axis=1)}
    for path, data in files.items():
        write(path, data)
    # not RIRs: they must stay out of the table
    write(base / "real_rirs_isotropic_noises/RVB2014_type1_noise_largeroom1_1.wav", rir(900))
    write(base / "pointsource_noises/noise-free-sound-0001.wav", rir(900))
    return {str(p): d for p, d in files.items()}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    musan, rirs = build_musan(root), build_rirs(root)
    return dict(root=root, musan=musan, rirs=rirs, musan_table=musan_table(root), rir_table=rir_table(root))


def full_augmenter(corpora, **config) -> Augmenter:
    return Augmenter(corpora["musan_table"], corpora["rir_table"], AugmentConfig(**config))


def random_wave(seed: int = 0, n: int = T) -> torch.Tensor:
    return torch.from_numpy((np.random.default_rng(seed).standard_normal(n) * 0.5).astype(np.float32))


def snr_db(clean: np.ndarray, added: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(added.astype(np.float64) ** 2)))


def best_cosine(signal: np.ndarray, source: np.ndarray) -> float:
    """Largest cosine similarity between `signal` and any contiguous len(signal)-long window of `source`."""
    windows = np.lib.stride_tricks.sliding_window_view(source.astype(np.float64), len(signal))
    cos = windows @ signal / (np.linalg.norm(windows, axis=1) * np.linalg.norm(signal))
    return float(cos.max())


# ---- tables ---------------------------------------------------------------------------------------------------
def test_musan_table(corpora):
    table, written = corpora["musan_table"], corpora["musan"]
    assert list(table.columns) == ["path", "kind", "duration_s"]
    assert table["path"].tolist() == sorted(written)  # every wav, nothing else (ANNOTATIONS), sorted
    assert table["kind"].value_counts().to_dict() == {"speech": 8, "noise": 3, "music": 2}
    for path, kind, duration in table.itertuples(index=False):
        assert f"/musan/{kind}/" in path
        assert duration == len(written[path]) / SR
    # the musan dir itself and its parent give the same table
    pd.testing.assert_frame_equal(musan_table(corpora["root"] / "musan"), table)


def test_rir_table(corpora):
    table, written = corpora["rir_table"], corpora["rirs"]
    assert list(table.columns) == ["path", "kind", "duration_s"]
    assert table["path"].tolist() == sorted(written)  # no isotropic / point-source noise
    assert not table["path"].str.contains("_noise_").any()
    kinds = dict(zip(table["path"], table["kind"]))
    assert sorted(kinds.values()) == ["real", "real", "simulated", "simulated"]
    assert all((kind == "simulated") == ("/simulated_rirs/" in path) for path, kind in kinds.items())
    assert dict(zip(table["path"], table["duration_s"])) == {p: len(d) / SR for p, d in written.items()}
    pd.testing.assert_frame_equal(rir_table(corpora["root"] / "RIRS_NOISES"), table)


def test_musan_table_without_a_kind(tmp_path):
    build_musan(tmp_path, kinds=("noise", "speech"))
    assert set(musan_table(tmp_path)["kind"]) == {"noise", "speech"}


def one_line_error(call, *names) -> str:
    with pytest.raises(DataError) as e:
        call()
    message = str(e.value)
    assert "\n" not in message
    for name in names:
        assert str(name) in message
    return message


@pytest.mark.parametrize("table", [musan_table, rir_table])
def test_table_no_files(tmp_path, table):
    one_line_error(lambda: table(tmp_path / "absent"), tmp_path / "absent")
    one_line_error(lambda: table(tmp_path), tmp_path)  # empty directory
    (tmp_path / "musan/noise/free-sound").mkdir(parents=True)
    (tmp_path / "RIRS_NOISES/real_rirs_isotropic_noises").mkdir(parents=True)
    (tmp_path / "musan/noise/free-sound/ANNOTATIONS").write_text("x")
    write(tmp_path / "RIRS_NOISES/real_rirs_isotropic_noises/RVB2014_type1_noise_largeroom1_1.wav", np.zeros(10))
    one_line_error(lambda: table(tmp_path), tmp_path)  # nothing but non-wav files / noise recordings


@pytest.mark.parametrize("table, relative", [
    (musan_table, "musan/music/fma/music-fma-0001.wav"),
    (rir_table, "RIRS_NOISES/simulated_rirs/mediumroom/Room003/Room003-00002.wav"),
    (rir_table, "RIRS_NOISES/real_rirs_isotropic_noises/air_type1_air_binaural_lecture_1_1.wav"),
])
def test_table_bad_files(tmp_path, table, relative):
    bad = tmp_path / relative
    write(bad, np.zeros(800, np.float32), sr=8000)
    assert "8000" in one_line_error(lambda: table(tmp_path), bad)
    bad.write_bytes(b"RIFF not really a wav file")
    one_line_error(lambda: table(tmp_path), bad)
    write(bad, np.zeros(0, np.float32))
    one_line_error(lambda: table(tmp_path), bad)


def test_musan_rejects_multichannel(tmp_path):
    bad = tmp_path / "musan/noise/free-sound/noise-free-sound-0000.wav"
    write(bad, np.zeros((800, 2), np.float32))
    assert "channels" in one_line_error(lambda: musan_table(tmp_path), bad)


# ---- config -----------------------------------------------------------------------------------------------------
def test_config_defaults_and_normalisation():
    c = AugmentConfig()
    assert (c.prob, c.noise_snr, c.music_snr, c.babble_snr, c.babble_speakers) == \
        (0.6, (0.0, 15.0), (5.0, 15.0), (13.0, 20.0), (3, 7))
    assert AugmentConfig(noise_snr=[1, 2], babble_speakers=[2, 2]) == \
        AugmentConfig(noise_snr=(1.0, 2.0), babble_speakers=(2, 2))  # lists from YAML become tuples
    with pytest.raises(AttributeError):
        c.prob = 1.0  # frozen


@pytest.mark.parametrize("field, value", [
    ("prob", -0.1), ("prob", 1.5), ("prob", float("nan")), ("noise_snr", (10.0, 0.0)), ("music_snr", (15.0, 5.0)),
    ("babble_snr", (20.0, 13.0)), ("babble_speakers", (7, 3)), ("babble_speakers", (0, 2)), ("noise_snr", (1.0,)),
])
def test_config_validation(field, value):
    with pytest.raises(ValueError, match=field):
        AugmentConfig(**{field: value})


# ---- DSP ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, snr", [("noise", 7.0), ("music", 11.5)])
def test_noise_snr_and_segment(corpora, kind, snr):
    aug = full_augmenter(corpora, **{f"{kind}_snr": (snr, snr)})
    sources = [d for p, d in corpora["musan"].items() if f"/musan/{kind}/" in p]
    for seed in range(4):
        wave = random_wave(seed)
        out = aug.apply(kind, wave, np.random.default_rng(seed))
        assert out.dtype == torch.float32 and out.shape == wave.shape
        added = (out - wave).numpy()
        assert abs(snr_db(wave.numpy(), added) - snr) < 0.05
        # what was added is a contiguous segment of one of the files of that kind
        assert max(best_cosine(added, s) for s in sources) > 1 - 1e-6


def test_noise_snr_range(corpora):
    aug = full_augmenter(corpora)  # noise_snr = (0, 15)
    wave = random_wave()
    rng = np.random.default_rng(3)
    snrs = [snr_db(wave.numpy(), (aug.apply("noise", wave, rng) - wave).numpy()) for _ in range(200)]
    assert -0.05 < min(snrs) < 1.5 and 13.5 < max(snrs) < 15.05  # P(min > 1.5) = 0.9^200: the whole range is used


def test_noise_short_file_repeats_and_only_a_segment_is_read(tmp_path, monkeypatch):
    short = write(tmp_path / "musan/noise/x/short.wav", (np.random.default_rng(4).standard_normal(500) * 0.1))
    long_ = write(tmp_path / "musan/noise/x/long.wav", (np.random.default_rng(5).standard_normal(9000) * 0.1))
    table = musan_table(tmp_path)
    wave = random_wave()
    aug = Augmenter(table[table["path"].str.endswith("short.wav")], None, AugmentConfig())
    added = (aug.apply("noise", wave, np.random.default_rng(0)) - wave).numpy()
    assert best_cosine(added, np.resize(short, T)) > 1 - 1e-6  # the short file, repeated end to end

    reads = []
    read_audio = hp.data.audio.read_audio

    def spy(path, start=0, frames=-1):
        reads.append(frames)
        return read_audio(path, start, frames)

    monkeypatch.setattr(hp.data.audio, "read_audio", spy)
    aug = Augmenter(table[table["path"].str.endswith("long.wav")], None, AugmentConfig())
    added = (aug.apply("noise", wave, np.random.default_rng(0)) - wave).numpy()
    assert reads == [T]  # the long file is read as one wave-long segment, never whole
    assert best_cosine(added, long_) > 1 - 1e-6


def test_stale_table_fails(tmp_path):
    write(tmp_path / "musan/noise/x/a.wav", np.ones(2000, np.float32))
    table = musan_table(tmp_path).assign(duration_s=10.0)  # the file shrank since the table was built
    aug = Augmenter(table, None, AugmentConfig())
    with pytest.raises(DataError, match="a.wav"):
        aug.apply("noise", random_wave(), np.random.default_rng(0))


@pytest.mark.parametrize("name", ["Room001-00001", "Room002-00001", "RWCP_type2_rir_cirline_ofc_imp050"])
def test_reverb_matches_numpy(corpora, name):
    table = corpora["rir_table"]
    aug = Augmenter(None, table[table["path"].str.contains(name)], AugmentConfig())
    (path,) = [p for p in corpora["rirs"] if name in p]
    rir = corpora["rirs"][path].astype(np.float64)
    rir = rir[:, 0] if rir.ndim == 2 else rir  # the first channel of a multi-channel real RIR
    wave = random_wave(1)
    out = aug.apply("reverb", wave, np.random.default_rng(0))
    expected = np.convolve(wave.numpy().astype(np.float64), rir / np.sqrt(np.sum(rir ** 2)))[:T]
    assert out.dtype == torch.float32 and out.shape == wave.shape
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-4, rtol=0)


def test_babble(corpora):
    """Talkers sit on separate rfft bins, so the count of talkers and each one's SNR can be read off the output."""
    aug = full_augmenter(corpora)  # babble_speakers (3, 7), babble_snr (13, 20)
    wave = torch.from_numpy(sinusoid(CLEAN_BIN, T))
    p_clean = float(np.mean(wave.numpy().astype(np.float64) ** 2))
    rng = np.random.default_rng(6)
    counts, snrs = [], []
    for _ in range(150):
        added = (aug.apply("babble", wave, rng) - wave).numpy().astype(np.float64)
        power = 2 * np.abs(np.fft.rfft(added)) ** 2 / T ** 2  # mean-square power of each bin's sinusoid
        bins = np.flatnonzero(power > 1e-6 * power.max())
        assert set(bins) <= set(SPEECH_BINS)
        counts.append(len(bins))
        snrs.extend(10 * np.log10(p_clean / power[bins]))
    assert set(counts) == {3, 4, 5, 6, 7}  # inclusive bounds, distinct talkers; P(a count never drawn) ~ 0.8^150
    assert 13 - 0.05 < min(snrs) < 13.5 and 19.5 < max(snrs) < 20 + 0.05  # each talker at its own SNR vs the clean


# ---- choice and randomness --------------------------------------------------------------------------------------
def test_prob_zero_is_identity(corpora):
    aug = full_augmenter(corpora, prob=0.0)
    wave = random_wave()
    rng = np.random.default_rng(0)
    assert all(torch.equal(aug(wave, rng), wave) for _ in range(100))
    assert torch.equal(Augmenter(None, None, AugmentConfig(prob=0.0))(wave, rng), wave)
    with pytest.raises(ValueError, match="prob"):
        Augmenter(None, None, AugmentConfig())  # would never augment: a wiring mistake


def test_prob_one_always_changes(corpora):
    aug = full_augmenter(corpora, prob=1.0)
    wave = random_wave()
    rng = np.random.default_rng(0)
    for _ in range(60):
        out = aug(wave, rng)
        assert out.dtype == torch.float32 and out.shape == wave.shape
        assert not torch.allclose(out, wave, atol=1e-3)


def test_choice_frequencies(corpora):
    aug = full_augmenter(corpora, prob=1.0)
    assert aug.available == ("reverb", "noise", "music", "babble")
    rng = np.random.default_rng(7)
    counts = pd.Series([aug.choose(rng) for _ in range(2000)]).value_counts()
    # 2000 draws over 4 types: 500 each, sd = sqrt(2000 * 1/4 * 3/4) = 19.4; +-100 is ~5 sd
    assert set(counts.index) == set(aug.available) and all(abs(counts - 500) < 100)
    aug = full_augmenter(corpora)  # prob 0.6: the clean share is 0.4, sd = sqrt(0.24 / 2000) = 0.011
    clean = sum(aug.choose(rng) is None for _ in range(2000)) / 2000
    assert abs(clean - 0.4) < 0.055


def test_only_available_types(corpora, tmp_path):
    build_musan(tmp_path, kinds=("noise", "speech"))
    aug = Augmenter(musan_table(tmp_path), None, AugmentConfig(prob=1.0))
    assert aug.available == ("noise", "babble")
    rng = np.random.default_rng(8)
    assert {aug.choose(rng) for _ in range(500)} == {"noise", "babble"}
    for kind in ("music", "reverb"):
        with pytest.raises(ValueError, match=kind):
            aug.apply(kind, random_wave(), rng)
    aug = Augmenter(None, corpora["rir_table"], AugmentConfig(prob=1.0))
    assert aug.available == ("reverb",)
    assert {aug.choose(rng) for _ in range(50)} == {"reverb"}


def test_determinism(corpora):
    aug = full_augmenter(corpora, prob=1.0)
    wave = random_wave()
    outs = []
    for seed in range(12):
        torch.manual_seed(seed + 100)  # global generators must play no part
        np.random.seed(seed + 200)
        a = aug(wave, np.random.default_rng(seed))
        torch.manual_seed(seed + 300)
        np.random.seed(seed + 400)
        assert torch.equal(a, aug(wave, np.random.default_rng(seed)))
        outs.append(a)
    # reverb has only the RIR to draw (4 here), so whole outputs may repeat; the noise kinds draw continuous SNRs
    assert len({tuple(o.tolist()) for o in outs}) >= 6
    for kind in ("noise", "music", "babble"):
        outs = [aug.apply(kind, wave, np.random.default_rng(seed)) for seed in range(12)]
        assert all(not torch.equal(outs[i], outs[j]) for i in range(12) for j in range(i))


def test_call_is_choose_then_apply(corpora):
    aug = full_augmenter(corpora)
    wave = random_wave()
    for seed in range(30):
        rng = np.random.default_rng(seed)
        kind = aug.choose(rng)
        expected = wave if kind is None else aug.apply(kind, wave, rng)
        assert torch.equal(aug(wave, np.random.default_rng(seed)), expected)


def test_pickles_small_and_equal(corpora):
    aug = full_augmenter(corpora, prob=1.0)
    blob = pickle.dumps(aug)
    audio_bytes = sum(d.nbytes for d in [*corpora["musan"].values(), *corpora["rirs"].values()])
    assert len(blob) < audio_bytes / 10  # paths and frame counts, no audio
    clone = pickle.loads(blob)
    wave = random_wave()
    assert torch.equal(clone(wave, np.random.default_rng(5)), aug(wave, np.random.default_rng(5)))


def test_rejects_bad_input(corpora):
    aug = full_augmenter(corpora, prob=1.0)
    with pytest.raises(ValueError, match="1-D"):
        aug(torch.zeros(2, T), np.random.default_rng(0))
    with pytest.raises(ValueError, match="kind"):
        Augmenter(corpora["rir_table"], None, AugmentConfig())  # an RIR table passed as noise
