"""The mini corpus's speech model: speakers' voices, recording sessions and a source-filter synthesiser of
deterministic, speech-like 16 kHz audio (smoke runs need no downloads), with the STFT helpers the attacks share."""
# Model of speech (source-filter, applied frame by frame with overlap-add, i.e. a time-varying filter):
# - a phone sequence (words of CV(C) syllables between pauses, from one inventory shared by all speakers) gives
#   per-frame targets: formants F1-F5 with bandwidths, voicing, aspiration, and frication (band-shaped noise);
#   the targets are smoothed over ~60 ms, so formants glide from phone to phone;
# - the voiced source is a band-limited pulse train (harmonics up to 7 kHz) at a time-varying F0 (declination plus
#   random pitch accents, jitter, shimmer) with breath noise, under a spectral tilt;
# - the vocal tract is a cascade of two-pole resonators; fricatives and stop bursts are noise bands after it.
# A speaker is a fixed set of traits (F0 mean and range, vocal-tract length, per-formant offsets, bandwidths, tilt,
# breathiness, speaking rate); a recording session adds a channel EQ, small F0/rate shifts and background noise.
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from hp.data.audio import SAMPLE_RATE

WIN, HOP = 512, 128  # 32 ms Hann frames every 8 ms
NFFT = 2 * WIN  # zero padding: a vocal-tract response up to WIN samples long filters without wrapping around
MAX_HARMONIC_HZ = 7000.0
BASE_BANDWIDTHS_HZ = np.array([60.0, 90.0, 140.0, 200.0, 280.0])
F5_HZ = 4500.0
EQ_HZ = np.geomspace(100, 8000, 6)  # control points of a session's channel EQ


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


def smooth(x: np.ndarray, frames: int) -> np.ndarray:
    """Hann-weighted moving average along the first axis (`frames` odd), edges held."""
    kernel = np.hanning(frames + 2)[1:-1]
    padded = np.pad(x, [(frames // 2, frames // 2)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    return sum(w * padded[i:i + len(x)] for i, w in enumerate(kernel / kernel.sum()))


def frame_times(samples: int) -> np.ndarray:
    """Centre (s) of each analysis frame of `stft`."""
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
        formants=smooth(FORMANTS[phone] * voice.formant_scale, 7),
        bandwidths=smooth(np.outer(BANDWIDTH_SCALE[phone] * voice.bandwidth_scale, BASE_BANDWIDTHS_HZ), 7),
        voice=smooth(VOICE[phone] * loudness, 3), aspiration=smooth(aspiration, 3),
        frication=smooth(frication, 3), noise_hz=NOISE_HZ[phone] * scale, noise_width_hz=NOISE_WIDTH_HZ[phone] * scale)


def f0_contour(rng: np.random.Generator, voice: Voice, session: Session, times: np.ndarray) -> np.ndarray:
    """F0 (Hz) per frame: random pitch accents every ~0.3 s, smoothed, over a falling declination line."""
    knots = np.arange(times[0] - 0.3, times[-1] + 0.6, 0.3)
    semitones = smooth(np.interp(times, knots, voice.f0_range_st * rng.standard_normal(len(knots))), 9)
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


def stft(x: np.ndarray, nfft: int) -> np.ndarray:
    """[frames, nfft // 2 + 1] spectra of Hann-windowed WIN-sample frames every HOP (frame times: frame_times)."""
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(x, WIN), WIN)[::HOP]
    return np.fft.rfft(frames * np.hanning(WIN + 1)[:-1], nfft)


def istft(spec: np.ndarray, samples: int) -> np.ndarray:
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


def frequencies(nfft: int) -> np.ndarray:
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
    breath, fricative = (stft(noise_std * rng.standard_normal(samples), NFFT) for _ in range(2))
    freqs = frequencies(NFFT)
    tilt = (1 + (freqs / 300) ** 2) ** (voice.tilt_db_per_octave / 12.04)  # flat below 300 Hz, then dB/octave
    source = (a["voice"][:, None] * stft(pulses, NFFT) * tilt
              + (a["aspiration"] + voice.breathiness * a["voice"])[:, None] * breath)
    band = np.exp(-0.5 * ((freqs - a["noise_hz"][:, None]) / a["noise_width_hz"][:, None]) ** 2)
    spec = source * vocal_tract(a["formants"], a["bandwidths"]) + (a["frication"][:, None] * band) * fricative
    channel = 10 ** (np.interp(np.log(np.maximum(freqs, 1)), np.log(EQ_HZ), session.eq_db) / 20)
    wave = istft(spec * channel, samples)
    return Utterance(wave + background_noise(rng, session, wave), f0, voiced=a["voice"] > 0.25)


def background_noise(rng: np.random.Generator, session: Session, speech: np.ndarray) -> np.ndarray:
    """Stationary coloured noise at the session's SNR relative to the speech's mean power."""
    spectrum = np.fft.rfft(rng.standard_normal(len(speech)))
    freqs = np.maximum(np.fft.rfftfreq(len(speech), 1 / SAMPLE_RATE), 50)
    noise = np.fft.irfft(spectrum * freqs ** (-session.noise_slope / 2), len(speech))
    return noise * np.sqrt(np.mean(speech ** 2) / np.mean(noise ** 2) / 10 ** (session.snr_db / 10))


def peak_normalise(rng: np.random.Generator, wave: np.ndarray) -> np.ndarray:
    """Peak-normalise to a random level in [0.5, 0.9]."""
    return wave * (rng.uniform(0.5, 0.9) / np.abs(wave).max())
