"""Self-supervised pretraining of a small WavLM on unlabeled synthetic speech: the mini pipeline's front end.

The recipe is HuBERT's first iteration (Hsu et al., 2021) with WavLM's utterance mixing (Chen et al., 2022):
- targets: k-means clusters of 39-dim MFCCs (13 cepstra + deltas + delta-deltas), one per 20 ms frame. The
  MFCC frames (25 ms windows every 20 ms, no padding) are exactly the CNN's output frames (receptive field 400
  samples, stride 320);
- input: spans of the CNN features are replaced by the model's learned mask embedding (span starts drawn with
  probability `mask_prob` per frame, `mask_length` frames each), and the transformer predicts the cluster of
  every masked frame (cross-entropy). Unmasked frames carry loss too, at weight `unmasked_weight` (HuBERT's
  default: none): with few steps a tiny model learns its acoustic features faster from them, and the speaker
  tasks downstream need exactly those;
- utterance mixing: with probability `mix_prob` a segment of another utterance of the batch (at most half the
  crop, at -5..5 dB) is added to an utterance, whose own targets stay; the model must tell the main speaker
  from an interfering one, which is what WavLM adds for speaker tasks.
The corpus is drawn from hp.data.synth.speech's model with its own random streams (corpus code PRETRAIN in
hp.data.synth.streams), so none of its speakers is in any mini split, and no label of any kind is used. The model
is transformers' WavLMModel, saved with save_pretrained: a genuine transformers checkpoint that hp.load_wavlm reads.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hp.data.audio import SAMPLE_RATE
from hp.data.synth.speech import peak_normalise, recording_session, speaker_voice, synthesize
from hp.data.synth.streams import PRETRAIN, SPEAKER, UTTERANCE, stream
from hp.model.config import SHAPES
from hp.training.provenance import PROVENANCE, provenance
from hp.utils.files import atomic_dir, write_json
from hp.utils.progress import Progress, stage_name

WINDOW, HOP = 400, 320  # samples: the WavLM CNN's receptive field and stride
NFFT, MEL_BANDS, CEPSTRA = 512, 40, 13


@dataclass(frozen=True)
class PretrainConfig:
    shape: str
    seed: int
    speakers: int
    utterances_per_speaker: int
    min_seconds: float
    max_seconds: float
    clusters: int
    kmeans_frames: int  # frames drawn to fit the clusters
    kmeans_iterations: int
    steps: int
    batch_size: int
    crop_seconds: float
    lr: float
    warmup_steps: int  # linear ramp, then linear decay to 0 (HuBERT's schedule)
    weight_decay: float
    mask_prob: float
    mask_length: int
    mix_prob: float
    unmasked_weight: float  # loss weight of the unmasked frames' predictions (HuBERT's 1 - alpha; 0: none)
    held_out_speakers: int  # further speakers, never trained on, whose utterances measure the model at the end
    log_every: int


# ---- unlabeled corpus ------------------------------------------------------------------------------------
def _utterance(args: tuple[int, int, int, float, float]) -> np.ndarray:
    seed, speaker, k, low, high = args
    voice = speaker_voice(stream(seed, PRETRAIN, SPEAKER, speaker))
    rng = stream(seed, PRETRAIN, UTTERANCE, speaker, k)
    session = recording_session(rng)  # every utterance its own recording conditions
    wave = synthesize(rng, voice, session, rng.uniform(low, high)).wave
    return peak_normalise(rng, wave).astype(np.float32)


def unlabeled_corpus(cfg: PretrainConfig, processes: int = 2, held_out: bool = False) -> list[np.ndarray]:
    """The pretraining waveforms, in a fixed order (each depends only on its own random-stream key); `held_out`:
    those of the `held_out_speakers` after the training speakers instead."""
    speakers = range(cfg.speakers, cfg.speakers + cfg.held_out_speakers) if held_out else range(cfg.speakers)
    jobs = [(cfg.seed, s, k, cfg.min_seconds, cfg.max_seconds)
            for s in speakers for k in range(cfg.utterances_per_speaker)]
    with Pool(processes) as pool:
        return pool.map(_utterance, jobs, chunksize=16)


# ---- targets: MFCC k-means -------------------------------------------------------------------------------
def _mel_filters() -> torch.Tensor:
    """[MEL_BANDS, NFFT // 2 + 1] triangles evenly spaced on the mel scale from 0 Hz to Nyquist (float64)."""
    mel = lambda hz: 2595 * math.log10(1 + hz / 700)  # noqa: E731
    edges = torch.linspace(0, mel(SAMPLE_RATE / 2), MEL_BANDS + 2, dtype=torch.float64)
    bins = 2595 * torch.log10(1 + torch.fft.rfftfreq(NFFT, 1 / SAMPLE_RATE, dtype=torch.float64) / 700)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return torch.clamp(torch.minimum((bins - lower) / (centre - lower), (upper - bins) / (upper - centre)), min=0)


def _dct(n_in: int, n_out: int) -> torch.Tensor:
    """[n_in, n_out] orthonormal DCT-II (float64)."""
    k, n = torch.arange(n_out, dtype=torch.float64)[None], torch.arange(n_in, dtype=torch.float64)[:, None]
    basis = torch.cos(math.pi / n_in * (n + 0.5) * k) * math.sqrt(2 / n_in)
    basis[:, 0] /= math.sqrt(2)
    return basis


def _deltas(x: torch.Tensor) -> torch.Tensor:
    """Regression deltas over +-2 frames along the first axis, edges repeated (HTK's formula)."""
    padded = torch.cat([x[:1], x[:1], x, x[-1:], x[-1:]])
    return sum(n * (padded[2 + n:len(x) + 2 + n] - padded[2 - n:len(x) + 2 - n]) for n in (1, 2)) / 10


def mfcc(wave: torch.Tensor) -> torch.Tensor:
    """[frames, 39] MFCCs + deltas + delta-deltas of a 16 kHz waveform, one row per CNN output frame."""
    frames = wave.unfold(0, WINDOW, HOP) * torch.hann_window(WINDOW, periodic=False, dtype=wave.dtype)
    power = torch.fft.rfft(frames, NFFT).abs() ** 2
    cepstra = torch.log(power @ _mel_filters().to(wave.dtype).T + 1e-8) @ _dct(MEL_BANDS, CEPSTRA).to(wave.dtype)
    first = _deltas(cepstra)
    return torch.cat([cepstra, first, _deltas(first)], dim=1)


def kmeans(x: torch.Tensor, k: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """[k, dim] centroids by Lloyd's algorithm from a k-means++ start (empty clusters re-seeded)."""
    centroids = x[torch.randint(len(x), (1,), generator=generator)]
    for _ in range(k - 1):
        d = torch.cdist(x, centroids).min(dim=1).values ** 2
        centroids = torch.cat([centroids, x[torch.multinomial(d / d.sum(), 1, generator=generator)]])
    for _ in range(iterations):
        assign = torch.cdist(x, centroids).argmin(dim=1)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        empty = counts == 0
        centroids = sums / counts.clamp(min=1)[:, None]
        if empty.any():
            centroids[empty] = x[torch.randint(len(x), (int(empty.sum()),), generator=generator)]
    return centroids


class Quantiser:
    """MFCC frame -> cluster id, after a global standardisation of the features."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, centroids: torch.Tensor):
        self.mean, self.std, self.centroids = mean, std, centroids

    @classmethod
    def fit(cls, waves: list[np.ndarray], cfg: PretrainConfig, generator: torch.Generator) -> Quantiser:
        features = torch.cat([mfcc(torch.from_numpy(w)) for w in waves])
        mean, std = features.mean(0), features.std(0)
        sample = features[torch.randperm(len(features), generator=generator)[:cfg.kmeans_frames]]
        return cls(mean, std, kmeans((sample - mean) / std, cfg.clusters, cfg.kmeans_iterations, generator))

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.cdist((mfcc(wave) - self.mean) / self.std, self.centroids).argmin(dim=1)


# ---- masked prediction -----------------------------------------------------------------------------------
def span_mask(batch: int, frames: int, prob: float, length: int, generator: torch.Generator) -> torch.Tensor:
    """[batch, frames] bool: spans of `length` frames starting at each frame with probability `prob` (at
    least one span per utterance, so that every utterance carries loss)."""
    starts = torch.rand(batch, frames - length + 1, generator=generator) < prob
    starts[torch.arange(batch), torch.randint(frames - length + 1, (batch,), generator=generator)] = True
    mask = torch.zeros(batch, frames, dtype=torch.bool)
    for offset in range(length):
        mask[:, offset:offset + starts.shape[1]] |= starts
    return mask


def mix_utterances(crops: torch.Tensor, prob: float, generator: torch.Generator) -> torch.Tensor:
    """WavLM's utterance mixing: each crop, with probability `prob`, gets a segment of another crop of the
    batch (random length up to half the crop, random place) added at an energy ratio of -5..5 dB."""
    out = crops.clone()
    n, samples = crops.shape
    for i in torch.nonzero(torch.rand(n, generator=generator) < prob).flatten().tolist():
        j = (i + int(torch.randint(1, n, (1,), generator=generator))) % n
        length = int(torch.randint(samples // 10, samples // 2 + 1, (1,), generator=generator))
        src, dst = (int(torch.randint(samples - length + 1, (1,), generator=generator)) for _ in range(2))
        segment = crops[j, src:src + length]
        ratio_db = float(torch.empty(1).uniform_(-5, 5, generator=generator))
        gain = torch.sqrt(crops[i].pow(2).mean() / segment.pow(2).mean().clamp(min=1e-8) / 10 ** (ratio_db / 10))
        out[i, dst:dst + length] += gain * segment
    return out


def _hf_config(cfg: PretrainConfig):
    import transformers

    shape = SHAPES[cfg.shape].to_dict()
    # the mask embedding exists only with mask_time_prob > 0; the masks themselves are span_mask's
    return transformers.WavLMConfig(**{**shape, "layerdrop": 0.0, "apply_spec_augment": True,
                                       "mask_time_prob": cfg.mask_prob, "mask_time_length": cfg.mask_length,
                                       "mask_feature_prob": 0.0})


@torch.no_grad()
def evaluate(model, predictor: nn.Module, quantiser: Quantiser, waves: list[np.ndarray], cfg: PretrainConfig,
             generator: torch.Generator) -> dict:
    """Masked prediction on `waves` (held-out speakers: no frame of theirs was trained on), dropout off, no
    mixing: each utterance's first `crop_seconds`, spans masked as in training. Accuracy and cross-entropy on the
    masked and on the unmasked frames, beside what knowing only the targets' frequencies gives (always the most
    frequent cluster; their entropy), so that "learned" has a yardstick."""
    crop = round(cfg.crop_seconds * SAMPLE_RATE)
    clean = torch.stack([F.pad(w, (0, max(0, crop - len(w))))[:crop] for w in map(torch.from_numpy, waves)])
    targets = torch.stack([quantiser(c) for c in clean])
    mask = span_mask(len(clean), targets.shape[1], cfg.mask_prob, cfg.mask_length, generator)
    was_training = model.training
    model.eval()
    logits = torch.cat([predictor(model(batch, mask_time_indices=m).last_hidden_state)
                        for batch, m in zip(clean.split(32), mask.split(32))])
    model.train(was_training)
    p = torch.bincount(targets.flatten(), minlength=cfg.clusters) / targets.numel()
    out = {"utterances": len(waves), "masked_frames": int(mask.sum()),
           "majority_accuracy": round(float(p.max()), 4),
           "chance_loss": round(float(-(p[p > 0] * p[p > 0].log()).sum()), 4)}  # entropy of the targets
    for name, where in (("masked", mask), ("unmasked", ~mask)):
        out[f"{name}_accuracy"] = round(float((logits[where].argmax(1) == targets[where]).float().mean()), 4)
        out[f"{name}_loss"] = round(float(F.cross_entropy(logits[where], targets[where])), 4)
    return out


def _lr_factor(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    return max(0.0, (cfg.steps - step) / (cfg.steps - cfg.warmup_steps))


def pretrain(cfg: PretrainConfig, out: Path) -> dict:
    """Pretrain, then write `out`: config.json + model.safetensors in transformers' layout, and PROVENANCE (the
    recipe; the cluster targets are a by-product and not kept). Returns the run's record: corpus size, training
    loss and masked-frame accuracy at the start and end, the held-out evaluation with its yardsticks, time."""
    import transformers

    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    start = time.time()
    waves, held_out = unlabeled_corpus(cfg), unlabeled_corpus(cfg, held_out=True)
    corpus_seconds = time.time() - start
    quantiser = Quantiser.fit(waves, cfg, generator)
    model = transformers.WavLMModel(_hf_config(cfg))
    predictor = nn.Linear(model.config.hidden_size, cfg.clusters)
    params = [*model.parameters(), *predictor.parameters()]
    optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    crop = round(cfg.crop_seconds * SAMPLE_RATE)
    history = []
    model.train()
    progress = Progress(stage_name("pretrain"), cfg.steps, items_per_unit=cfg.batch_size)
    for step in range(cfg.steps):
        index = torch.randint(len(waves), (cfg.batch_size,), generator=generator).tolist()
        crops = []
        for i in index:
            wave = torch.from_numpy(waves[i])
            if len(wave) < crop:
                wave = F.pad(wave, (0, crop - len(wave)))
            offset = int(torch.randint(len(wave) - crop + 1, (1,), generator=generator))
            crops.append(wave[offset:offset + crop])
        clean = torch.stack(crops)
        targets = torch.stack([quantiser(c) for c in clean])
        mask = span_mask(len(clean), targets.shape[1], cfg.mask_prob, cfg.mask_length, generator)
        for group in optimiser.param_groups:
            group["lr"] = cfg.lr * _lr_factor(step, cfg)
        hidden = model(mix_utterances(clean, cfg.mix_prob, generator), mask_time_indices=mask).last_hidden_state
        logits = predictor(hidden)
        masked_loss = F.cross_entropy(logits[mask], targets[mask])
        loss = masked_loss
        if cfg.unmasked_weight:
            loss = loss + cfg.unmasked_weight * F.cross_entropy(logits[~mask], targets[~mask])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimiser.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            accuracy = (logits[mask].argmax(1) == targets[mask]).float().mean().item()
            history.append({"step": step, "loss": round(loss.item(), 4), "masked_loss": round(masked_loss.item(), 4),
                            "accuracy": round(accuracy, 4)})
            progress.set(loss=f"{loss.item():.3f}", masked_accuracy=f"{accuracy:.3f}")
        progress.update()
    progress.close()
    train_seconds = time.time() - start
    held_out_result = evaluate(model, predictor, quantiser, held_out, cfg, torch.Generator().manual_seed(cfg.seed))
    model.eval()
    record = {"config": asdict(cfg), "utterances": len(waves),
              "hours": round(sum(len(w) for w in waves) / SAMPLE_RATE / 3600, 3),
              "corpus_seconds": round(corpus_seconds, 1), "train_seconds": round(train_seconds, 1),
              "held_out": held_out_result, "first": history[0], "last": history[-1], "history": history}
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        write_json(tmp / PROVENANCE, provenance(record))
    return record

