"""Audio I/O with soundfile and the random crops training uses."""
from __future__ import annotations

import os

import numpy as np
import soundfile as sf
import torch

from hp.errors import DataError

SAMPLE_RATE = 16000
# what libsndfile and the OS raise for a file that is missing, cut short or not audio
READ_ERRORS = (sf.LibsndfileError, RuntimeError, OSError)


def read_audio(path: str, start: int = 0, frames: int = -1, *, user_input: bool = False) -> np.ndarray:
    """Float32 samples of `path` at 16 kHz, optionally a segment: the one audio reader of hp.

    Corpus files (the default) must be 16 kHz; of several channels the first is kept (RIRS_NOISES' multi-microphone
    RIRs must not be averaged across microphones; the speech corpora are mono). A file that cannot be read fails
    naming it: in training and scoring that is a file the manifests stage did not decode (manifests.check_audio:
    header) or one changed since. `user_input` (the command line, python -m hp): any rate soundfile reads is
    resampled to 16 kHz (hp.data.resample), channels are averaged, and NaN or infinite samples are refused."""
    try:
        wave, sr = sf.read(path, start=start, frames=frames, dtype="float32", always_2d=True)
    except READ_ERRORS as e:
        if user_input:
            raise DataError(unreadable(path, e)) from None
        raise DataError(f"{path}: cannot read audio ({e}); the manifests stage's decode check "
                        "(manifests.check_audio: decode) finds every such file") from None
    if not user_input:
        if sr != SAMPLE_RATE:
            raise DataError(f"{path}: sample rate {sr} Hz, expected {SAMPLE_RATE}")
        return wave[:, 0]
    from hp.data.resample import resample  # user input only: the pipeline's corpora are 16 kHz already

    mono = wave[:, 0] if wave.shape[1] == 1 else wave.mean(axis=1, dtype=np.float64).astype(np.float32)
    if not np.isfinite(mono).all():
        raise DataError(f"{path}: holds NaN or infinite samples")
    return resample(mono, sr, SAMPLE_RATE)


def unreadable(path: str, error: Exception) -> str:
    """Why `path` could not be opened, in the words a user acts on (missing, a directory, no permission, not audio)."""
    if not os.path.exists(path):
        return f"{path}: file not found"
    if os.path.isdir(path):
        return f"{path}: is a directory, not an audio file"
    if not os.access(path, os.R_OK):
        return f"{path}: permission denied"
    reason = (getattr(error, "error_string", None) or str(error)).strip().rstrip(".")
    if "does not exist" in reason:  # libsndfile's words when its MPEG decoder gives up on a file that does exist
        reason = "its content could not be decoded"
    return f"{path}: not a readable audio file ({reason})"


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
