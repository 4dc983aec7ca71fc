"""The training-free SV baseline (hp.evaluation.baselines): the LTAS itself, the training-mean subtraction, and that
cosine of mean-subtracted LTAS separates speakers whose spectra differ and nobody else."""
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from hp.data.audio import SAMPLE_RATE
from hp.evaluation import baselines


def reference_ltas(wave: np.ndarray, window=400, hop=160, n_fft=512, floor=1e-10) -> np.ndarray:
    """Frame by frame, the textbook way: periodic Hann as np.hanning(N + 1)[:-1], the full complex FFT cut to its
    non-negative frequencies."""
    wave = np.asarray(wave, dtype=np.float64)
    hann = np.hanning(window + 1)[:-1]
    count = 1 + (len(wave) - window) // hop
    power = np.zeros(n_fft // 2 + 1)
    for k in range(count):
        power += np.abs(np.fft.fft(wave[k * hop:k * hop + window] * hann, n_fft)[: n_fft // 2 + 1]) ** 2
    return np.log(np.maximum(power / count, floor))


@pytest.mark.parametrize("samples", [400, 559, 16000 + 37, 3 * 16000])
def test_ltas_matches_a_numpy_reference(samples):
    """Both sides are float64 and differ only in summation order and rfft vs fft: power agrees to ~1e-15
    relative, i.e. the logs to ~1e-13 absolute where the power is far above the floor; 1e-9 leaves room."""
    wave = np.random.default_rng(samples).normal(scale=0.1, size=samples).astype(np.float32)
    out = baselines.ltas(wave)
    assert out.shape == (257,) and out.dtype == np.float64
    np.testing.assert_allclose(out, reference_ltas(wave), rtol=0, atol=1e-9)


def test_ltas_edge_cases():
    """A wave shorter than a frame is zero-padded to one; silence is the floor's log everywhere."""
    short = np.random.default_rng(0).normal(size=250)
    np.testing.assert_allclose(baselines.ltas(short), reference_ltas(np.pad(short, (0, 150))), atol=1e-9)
    np.testing.assert_array_equal(baselines.ltas(np.zeros(8000)), np.full(257, np.log(1e-10)))
    long = np.random.default_rng(1).normal(size=160 * 5000)  # more frames than one FFT block
    np.testing.assert_allclose(baselines.ltas(long), reference_ltas(long), atol=1e-9)


def test_mean_subsample_is_fixed_and_bounded():
    assert np.array_equal(baselines.mean_subsample(7, at_most=10), np.arange(7))
    a = baselines.mean_subsample(5000)
    assert len(a) == baselines.MEAN_UTTERANCES == 2000 and len(np.unique(a)) == 2000 and np.all(np.diff(a) > 0)
    assert a.max() < 5000 and np.array_equal(a, baselines.mean_subsample(5000))
    assert not np.array_equal(a, baselines.mean_subsample(5000, seed=1))


# ---- a corpus of "speakers": white noise through a speaker's own smooth spectral envelope -------------------
def envelope(seed: int) -> np.ndarray:
    """A smooth random log-gain over the rfft bins of a 1.5 s wave: a few cosines, ±~10 dB."""
    rng = np.random.default_rng(seed)
    f = np.linspace(0, 1, int(1.5 * SAMPLE_RATE) // 2 + 1)
    return np.exp(sum(rng.normal(scale=0.5) * np.cos(np.pi * k * f + rng.uniform(0, 2 * np.pi)) for k in range(1, 7)))


def write_speakers(root, name: str, filters: list[int], utterances: int, seed: int) -> pd.DataFrame:
    """One table row per utterance of speaker i (filter `filters[i]`), written as 16 kHz wav under root."""
    rng, rows = np.random.default_rng(seed), []
    for i, f in enumerate(filters):
        gain = envelope(f)
        for u in range(utterances):
            noise = rng.normal(size=int(1.5 * SAMPLE_RATE))
            wave = np.fft.irfft(np.fft.rfft(noise) * gain, len(noise))
            path = root / f"{name}{i}_{u}.wav"
            sf.write(path, (0.05 * wave / wave.std()).astype(np.float32), SAMPLE_RATE)
            rows.append({"utt": f"{name}{i}/{u}", "path": str(path), "speaker": f"{name}{i}", "duration_s": 1.5})
    return pd.DataFrame(rows)


def all_pairs(test: pd.DataFrame) -> pd.DataFrame:
    pairs = list(combinations(zip(test["utt"], test["speaker"]), 2))
    return pd.DataFrame({"list": "O", "label": [int(a[1] == b[1]) for a, b in pairs],
                         "enroll": [a[0] for a, _ in pairs], "test": [b[0] for _, b in pairs]})


def test_separates_speakers_whose_spectra_differ_and_nobody_else(tmp_path):
    train = write_speakers(tmp_path, "train", [100, 101, 102, 103], utterances=3, seed=0)
    different = write_speakers(tmp_path, "diff", [1, 2, 3, 4], utterances=5, seed=1)
    _, m = baselines.score_ltas(different, all_pairs(different), train)
    assert set(m) == {"O"} and set(m["O"]) == {"eer", "min_dcf_0.01", "min_dcf_0.05"}
    assert m["O"]["eer"] < 0.02
    same = write_speakers(tmp_path, "same", [7, 7, 7, 7], utterances=5, seed=2)  # one filter for all
    _, m = baselines.score_ltas(same, all_pairs(same), train)
    assert m["O"]["eer"] > 0.3


def test_the_training_mean_is_subtracted(tmp_path):
    """Scores are cosines of LTAS - the mean LTAS of the (subsampled) training utterances: a different training
    set changes them, and with at_most below its size only the subsample's mean counts."""
    train = write_speakers(tmp_path, "train", [100, 101, 102], utterances=3, seed=0)
    test = write_speakers(tmp_path, "test", [1, 2, 3], utterances=3, seed=1)
    trials = all_pairs(test)
    spectra = np.stack([baselines.ltas(sf.read(p)[0]) for p in test["path"]])
    enroll, other = (np.array([test["utt"].tolist().index(u) for u in trials[c]]) for c in ("enroll", "test"))

    def cosines(mean):
        x = spectra - mean
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return (x[enroll] * x[other]).sum(1)

    scores, _ = baselines.score_ltas(test, trials, train)
    mean = np.stack([baselines.ltas(sf.read(p)[0]) for p in train["path"]]).mean(0)
    np.testing.assert_allclose(scores, cosines(mean), atol=1e-9)
    assert np.abs(scores - cosines(0.0)).max() > 0.1  # not the cosines of the LTAS themselves
    picked = baselines.mean_subsample(len(train), at_most=4, seed=3)
    scores, _ = baselines.score_ltas(test, trials, train, at_most=4, seed=3)
    mean = np.stack([baselines.ltas(sf.read(p)[0]) for p in train["path"].iloc[picked]]).mean(0)
    np.testing.assert_allclose(scores, cosines(mean), atol=1e-9)


def test_workers_give_the_same_spectra(tmp_path):
    table = write_speakers(tmp_path, "w", [1, 2], utterances=2, seed=0)
    np.testing.assert_array_equal(baselines.ltas_table(table), baselines.ltas_table(table, num_workers=2))
