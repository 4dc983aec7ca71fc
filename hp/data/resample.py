"""Band-limited resampling by a rational factor: a Kaiser-windowed sinc, applied polyphase.

An output sample at time t (in input samples) is sum_i x[i] h(t - i) with

    h(tau) = 2 fc sinc(2 fc tau) w(tau / width),   fc = min(orig, new) / 2 * rolloff / orig  (cycles per input sample),

w a Kaiser window reaching zero at |tau| = width = ZERO_CROSSINGS / (2 fc): a low-pass at `rolloff` of the lower
Nyquist frequency (anti-aliasing when downsampling, anti-imaging when upsampling), unit gain at DC. With the
rates reduced by their gcd to orig/new, output j sits at t = j * orig / new, so only `new` distinct filter phases
exist: they form a bank of `new` kernels run as one strided convolution (or, where that bank would be large, a
[new, taps] table that each output gathers its inputs for). Beyond the signal the input counts as zeros: output
within ~width input samples of either end is attenuated (edge effects). torchaudio and scipy are not dependencies.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

ZERO_CROSSINGS = 32  # of the sinc on each side: sets the transition band's width (~17% of the cutoff)
KAISER_BETA = 8.6  # ~86 dB stopband attenuation
ROLLOFF = 0.95  # cutoff as a fraction of the lower Nyquist frequency
MAX_BANK = 1 << 23  # kernel-bank elements for the strided convolution; beyond, outputs gather their inputs


def _kernel(tau: np.ndarray, fc: float, width: float) -> np.ndarray:
    """h(tau) as in the module docstring (float64)."""
    u = tau / width
    window = np.where(np.abs(u) < 1, np.i0(KAISER_BETA * np.sqrt(np.clip(1 - u * u, 0, None))), 0.0)
    return 2 * fc * np.sinc(2 * fc * tau) * window / np.i0(KAISER_BETA)


def resample(wave: np.ndarray, orig_sr: int, new_sr: int, rolloff: float = ROLLOFF) -> np.ndarray:
    """`wave` [samples] (float) at `orig_sr` Hz resampled to `new_sr` Hz: float32 [ceil(samples * new / orig)],
    output sample j at the time of input sample j * orig_sr / new_sr. Equal rates return the input unchanged."""
    for name, rate in (("orig_sr", orig_sr), ("new_sr", new_sr)):
        if not isinstance(rate, (int, np.integer)) or isinstance(rate, bool) or rate < 1:
            raise ValueError(f"{name} must be a positive integer (Hz), got {rate!r}")
    if not 0 < rolloff <= 1:
        raise ValueError(f"rolloff must be in (0, 1], got {rolloff}")
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"resample takes one channel [samples], got shape {wave.shape}")
    if orig_sr == new_sr:
        return wave
    g = math.gcd(int(orig_sr), int(new_sr))
    orig, new = int(orig_sr) // g, int(new_sr) // g
    n_out = -(-len(wave) * new // orig)  # ceil
    if n_out == 0:
        return np.zeros(0, dtype=np.float32)
    fc = min(orig, new) / 2 * rolloff / orig
    width = ZERO_CROSSINGS / (2 * fc)
    pad = math.ceil(width)
    if new * (orig + 2 * pad) <= MAX_BANK:
        return _polyphase(wave, orig, new, n_out, fc, width, pad)
    return _gathered(wave, orig, new, n_out, fc, width, pad)


def _polyphase(wave, orig, new, n_out, fc, width, pad) -> np.ndarray:
    """Output j = q * new + p is sum_k x[q * orig + k - pad] * bank[p, k]: one conv1d with stride orig."""
    k = np.arange(orig + 2 * pad + 1)
    phase = np.arange(new)[:, None] * orig / new  # t - q * orig of phase p
    bank = _kernel(phase + pad - k[None, :], fc, width)  # [new, K]
    blocks = -(-n_out // new)
    right = max(0, (blocks - 1) * orig + len(k) - pad - len(wave))
    x = F.pad(torch.from_numpy(wave)[None, None], (pad, right))
    with torch.inference_mode():
        y = F.conv1d(x, torch.from_numpy(bank).float()[:, None], stride=orig)  # [1, new, blocks]
    return y[0].T.reshape(-1)[:n_out].numpy()


def _gathered(wave, orig, new, n_out, fc, width, pad, chunk: int = 1 << 15) -> np.ndarray:
    """The same sum for ratios whose kernel bank would be large (nearly coprime rates, e.g. 16001 -> 16000 Hz):
    each output gathers its 2 pad + 2 nearest inputs and weighs them by its phase's row of a [new, taps] table."""
    taps = np.arange(-pad, pad + 2)
    table = _kernel((np.arange(new)[:, None] / new - taps[None, :]), fc, width).astype(np.float32)
    x = np.pad(wave, (pad, pad + 2))
    y = np.empty(n_out, dtype=np.float32)
    for start in range(0, n_out, chunk):
        q, phase = np.divmod(np.arange(start, min(start + chunk, n_out), dtype=np.int64) * orig, new)
        y[start:start + len(q)] = np.einsum("ij,ij->i", x[q[:, None] + pad + taps], table[phase])
    return y
