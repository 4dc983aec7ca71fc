"""The mini CM corpus's codec-like channels (CM_CODECS): numpy stand-ins for ASVspoof5's codecs, so that a third of
every split carries coding artefacts without any codec library."""
# C01 band limiting (300-3400 Hz telephone, 4 kHz or 6 kHz low-pass), C02 8-bit mu-law companding (on a telephone band
# or full band), C03 coarse linear quantisation (6 or 8 bits).
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hp.data.audio import SAMPLE_RATE


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
