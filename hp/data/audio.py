"""Audio I/O with soundfile and the random crops training uses."""
from __future__ import annotations

import numpy as np
import soundfile as sf
import torch

SAMPLE_RATE = 16000


def read_audio(path: str, start: int = 0, frames: int = -1) -> np.ndarray:
    """Float32 samples of `path` (16 kHz), optionally a segment; of several channels the first (RIRS_NOISES'
    multi-microphone RIRs must not be averaged across microphones; the speech corpora are mono)."""
    wave, sr = sf.read(path, start=start, frames=frames, dtype="float32", always_2d=True)
    if sr != SAMPLE_RATE:
        raise ValueError(f"{path}: sample rate {sr} Hz, expected {SAMPLE_RATE}")
    return wave[:, 0]


def random_crop(path: str, num_frames: int, samples: int, rng: np.random.Generator) -> np.ndarray:
    """A random `samples`-long crop; shorter files are repeated end to end (as WeSpeaker and others do)."""
    if num_frames >= samples:
        start = int(rng.integers(0, num_frames - samples + 1))
        return read_audio(path, start, samples)
    wave = read_audio(path)
    return np.resize(wave, samples)  # np.resize repeats the array


def pad_batch(waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded [B, T] batch and the lengths."""
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        batch[i, : len(w)] = torch.from_numpy(w)
    return batch, lengths
