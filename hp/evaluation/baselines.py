"""Training-free reference systems, scored on the same trials as the trained models (labelled as baselines in
the report): they show how much of a result the data's easy cues give away without any learning.

SV: cosine scoring of each utterance's long-term average log spectrum (LTAS) after the training set's mean
LTAS is subtracted. The LTAS of a 16 kHz waveform is log(max(floor, mean_t |rfft(hann * frame_t, 512)|^2)):
periodic Hann frames of 25 ms (400 samples) every 10 ms (160 samples), full frames only (no centre padding; a
wave shorter than one frame is zero-padded to one), each zero-padded to a 512-point FFT, the power spectrum
averaged over frames, then the log of it with a floor, a 257-bin vector. Nothing more (no mel warping, no
cepstra, no per-frame log): the plain LTAS, a channel-and-voice average that any spectral difference between
speakers (or sessions) shows in.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from torch.utils.data import DataLoader, Dataset

from hp.data.audio import read_audio
from hp.evaluation.score_norm import TRIAL_CHUNK
from hp.evaluation.scoring import sv_metrics, trial_indices
from hp.utils import distributed

WINDOW, HOP, N_FFT = 400, 160, 512  # 25 ms / 10 ms at 16 kHz
FLOOR = 1e-10  # of the mean power (a float32 wave in [-1, 1]): log(FLOOR) = -23 for digital silence
MEAN_UTTERANCES, MEAN_SEED = 2000, 0  # training utterances the mean LTAS is taken over (a fixed subsample)
_BLOCK = 4096  # frames per FFT block: bounds memory on long utterances


def ltas(wave: np.ndarray, window: int = WINDOW, hop: int = HOP, n_fft: int = N_FFT,
         floor: float = FLOOR) -> np.ndarray:
    """The long-term average log spectrum of `wave` (see the module docstring), float64, n_fft // 2 + 1 bins."""
    wave = np.asarray(wave, dtype=np.float64).ravel()
    if window > n_fft:
        raise ValueError(f"window {window} is longer than the FFT ({n_fft})")
    if len(wave) < window:
        wave = np.pad(wave, (0, window - len(wave)))
    frames = np.lib.stride_tricks.sliding_window_view(wave, window)[::hop]
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)  # periodic, as torch.hann_window
    power = np.zeros(n_fft // 2 + 1)
    for start in range(0, len(frames), _BLOCK):
        power += (np.abs(np.fft.rfft(frames[start:start + _BLOCK] * hann, n_fft, axis=1)) ** 2).sum(0)
    return np.log(np.maximum(power / len(frames), floor))


class _Spectra(Dataset):
    """Item i: the LTAS of the i-th utterance of a table (its column `path`)."""

    def __init__(self, paths: list[str]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        return ltas(read_audio(self.paths[i]))


def ltas_table(table: pd.DataFrame, num_workers: int = 0) -> np.ndarray:
    """[utterances, 257] LTAS of every row of `table` (read as hp.data.audio.read_audio reads `path`), decoded
    and transformed by `num_workers` processes; under torchrun shared out over the ranks, each getting them all."""
    out = np.zeros((len(table), N_FFT // 2 + 1))
    mine = distributed.share(len(table))  # under torchrun each rank does every world_size()-th utterance
    loader = DataLoader(_Spectra(table["path"].to_numpy()[mine].tolist()), batch_size=None, num_workers=num_workers)
    for i, spectrum in zip(mine, loader):
        out[i] = np.asarray(spectrum)
    return distributed.all_sum(out)


def mean_subsample(n: int, at_most: int = MEAN_UTTERANCES, seed: int = MEAN_SEED) -> np.ndarray:
    """Sorted row indices of the training utterances the mean is taken over: all of them when there are at most
    `at_most`, else `at_most` drawn without replacement by numpy's default_rng(`seed`) (the same rows on every
    run for the same table)."""
    if n <= at_most:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=at_most, replace=False))


def cosine_scores(test_ltas: np.ndarray, mean: np.ndarray, enroll: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Cosine of (LTAS - mean) of each trial's two sides."""
    x = test_ltas - mean
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    out = np.empty(len(enroll))
    for s in range(0, len(enroll), TRIAL_CHUNK):  # both sides of a million trials at once would take ~5 GB
        out[s:s + TRIAL_CHUNK] = np.einsum("ij,ij->i", x[enroll[s:s + TRIAL_CHUNK]], x[test[s:s + TRIAL_CHUNK]])
    return out


def score_ltas(test: pd.DataFrame, trials: pd.DataFrame, train: pd.DataFrame, at_most: int = MEAN_UTTERANCES,
               seed: int = MEAN_SEED, num_workers: int = 0) -> tuple[np.ndarray, dict]:
    """The training-free SV baseline on every trial (of all lists) of `trials` (columns list, label, enroll,
    test; enroll and test name rows of `test` by `utt`).

    The mean LTAS is over the training utterances `mean_subsample(len(train), at_most, seed)` picks: at real
    scale (a million VoxCeleb2 utterances) all of them would take as long as scoring does, and 2000 utterances
    pin a 257-bin mean down well enough. Returns the score of each trial and {list: hp.evaluation.scoring.sv_metrics
    (EER and minDCF at the P_targets the model's scores use)}."""
    mean = ltas_table(train.iloc[mean_subsample(len(train), at_most, seed)], num_workers).mean(0)
    enroll, test_idx = trial_indices(test["utt"].tolist(), trials)
    scores = cosine_scores(ltas_table(test, num_workers), mean, enroll, test_idx)
    labels = trials["label"].to_numpy()
    return scores, {name: sv_metrics(scores[rows], labels[rows])
                    for name, rows in trials.groupby("list", sort=False).indices.items()}
