"""The mini CM corpus's spoofing attacks: each re-synthesises a bona fide Utterance of the speech model, from vocoders
seen in training to subtler processes only dev and eval hold (the generalisation gap ASVspoof5's eval measures)."""
# Train, dev and eval: A01 keeps the STFT magnitude under random phase, A02 is a channel vocoder (band energies
# imposed on a pulse/noise excitation at a smoothed F0). Unseen in training, as ASVspoof5's dev and eval attacks are,
# two processes designed to be closer to bona fide (A17 in dev and eval, so that the dev-fitted calibration sees a
# hard attack; A18 in eval only, seen by neither): A17 is a mixed-excitation cepstral vocoder (jitter- and
# shimmer-free pulses at the analysed F0 on a quarter-semitone grid, noise above 4.5 kHz, through a minimum-phase
# filter with the cepstrally smoothed envelope), A18 is TD-PSOLA pitch conversion (the bona fide waveform's own
# two-period grains re-spaced for an F0 6-12 % higher or lower in voiced parts).
from __future__ import annotations

import numpy as np

from hp.data.audio import SAMPLE_RATE
from hp.data.synth.speech import NFFT, WIN, Utterance, frame_times, frequencies, istft, pulse_train, smooth, stft

# ATTACK_LABEL -> ATTACK_TAG in the protocols; the tag groups the attacks by kind: AC1 magnitude-only resynthesis,
# AC2 vocoders (a new excitation under the utterance's envelope), AC3 waveform-domain modification
CM_ATTACKS = {"A01": "AC1", "A02": "AC2", "A17": "AC2", "A18": "AC3"}
# attacks per split (numbered as ASVspoof5's eval attacks, A17...): dev adds A17 to training's two, eval adds A18,
# which neither training nor dev saw; interleaved so that any split with 2 spoofs per speaker holds an unseen one
CM_SPLIT_ATTACKS = {"train": ("A01", "A02"), "dev": ("A01", "A17", "A02"), "eval": ("A01", "A17", "A02", "A18")}


def random_phase_vocoder(rng: np.random.Generator, utterance: Utterance) -> np.ndarray:
    """A01: the STFT magnitude re-synthesised with a fresh random phase in every frame and bin. The spectral
    envelope (the speaker's timbre) survives; phase coherence across bins and frames does not: glottal pulses
    smear into noise bands around the harmonics (a rough, whispery voice with a weakened pitch)."""
    magnitude = np.abs(stft(utterance.wave, WIN))
    return istft(magnitude * np.exp(2j * np.pi * rng.random(magnitude.shape)), len(utterance.wave))


def band_filters(bands: int = 20, nfft: int = WIN) -> np.ndarray:
    """[bands, nfft // 2 + 1] triangles with peaks evenly spaced on the mel scale from 0 Hz to Nyquist."""
    mel = 2595 * np.log10(1 + frequencies(nfft) / 700)
    peaks = np.linspace(0, mel[-1], bands)
    return np.maximum(0, 1 - np.abs(mel[None] - peaks[:, None]) / (peaks[1] - peaks[0]))


def channel_vocoder(rng: np.random.Generator, utterance: Utterance) -> np.ndarray:
    """A02: the utterance's energies in 20 mel bands, at a ~25 ms frame rate, imposed on a new excitation:
    jitter-free pulses at a smoothed F0 where voiced, white noise elsewhere (hard switching). Formant detail, voice
    quality and the breath noise between harmonics are lost; voiced sounds are buzzy and end at MAX_HARMONIC_HZ."""
    samples = len(utterance.wave)
    times = frame_times(samples)
    sample_times = np.arange(samples) / SAMPLE_RATE
    pulses = pulse_train(rng, np.interp(sample_times, times, smooth(utterance.f0_hz, 13)), 0.0, 0.0)
    voiced = np.interp(sample_times, times, utterance.voiced.astype(float)) > 0.5
    excitation = stft(np.where(voiced, pulses / np.sqrt(np.mean(pulses ** 2)), rng.standard_normal(samples)), WIN)
    bank = band_filters()
    # einsum rather than `@`: a multithreaded BLAS call costs more than it computes at these sizes
    target, current = (np.einsum("fk,bk->fb", np.abs(s) ** 2, bank) for s in (stft(utterance.wave, WIN), excitation))
    target = smooth(target, 5)
    gain = np.einsum("fb,bk->fk", np.sqrt(target / (current + 1e-12)), bank / bank.sum(axis=0))  # bands -> bins
    return istft(excitation * gain, samples)


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
    harmonic = stft(pulses / np.sqrt(np.mean(pulses ** 2)), NFFT)
    noise = stft(rng.standard_normal(samples), NFFT)
    voicing = smooth(utterance.voiced.astype(float), 5)[:, None] * (frequencies(NFFT) < VOICED_MAX_HZ)
    excitation = voicing * (harmonic + BREATH * noise) / np.hypot(1, BREATH) + (1 - voicing) * noise
    # half the log power ratio's cepstrum, folded onto positive quefrencies: the minimum-phase filter with that gain
    ratio = 0.5 * (_log_envelope_cepstrum(np.abs(stft(utterance.wave, NFFT)) ** 2, CEPSTRAL_ORDER)
                   - _log_envelope_cepstrum(np.abs(excitation) ** 2, CEPSTRAL_ORDER))
    ratio[:, 1:CEPSTRAL_ORDER] *= 2
    ratio[:, NFFT - CEPSTRAL_ORDER + 1:] = 0
    return istft(excitation * np.exp(np.fft.rfft(ratio, NFFT)), samples)


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
    factor = 1 + shift * np.interp(sample_times, times, smooth(utterance.voiced.astype(float), 5))

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
