"""Helpers that more than one benchmark uses: comma-separated list arguments, random-noise audio files."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

from hp.data.audio import SAMPLE_RATE


def comma_list(kind, allowed=None):
    """argparse type for a comma-separated list (of `allowed` values, when given)."""
    def parse(text: str) -> list:
        values = [kind(v) for v in text.split(",") if v]
        bad = [v for v in values if allowed is not None and v not in allowed]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {allowed or kind.__name__}")
        return values
    return parse


def write_noise(path: Path, seconds: float, rng: np.random.Generator, decay_s: float | None = None) -> None:
    wave = 0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE)).astype(np.float32)
    if decay_s is not None:  # an RIR: noise under an exponential decay
        wave *= np.exp(-np.arange(len(wave)) / (decay_s * SAMPLE_RATE)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, SAMPLE_RATE)
