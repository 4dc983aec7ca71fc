"""The mini front end's self-supervised pretraining (hp/training/pretraining.py) and the committed checkpoint it
made."""
import json
import math

import numpy as np
import pytest
import torch
import transformers

import hp
from hp.model.config import SHAPES
from hp.training import pretraining as P
from parity import compare

from helpers import ROOT_DIR

COMMITTED = ROOT_DIR / "models" / "pretrained" / "tiny"


def config(**changes) -> P.PretrainConfig:
    """params.yaml's pretrain group with `changes`."""
    import yaml

    return P.PretrainConfig(**{**yaml.safe_load((ROOT_DIR / "params.yaml").read_text())["pretrain"], **changes})


def numpy_mfcc(wave: np.ndarray) -> np.ndarray:
    """The textbook MFCC written independently: per frame, the windowed periodogram, mel triangles computed bin
    by bin, log, DCT-II by its sum; deltas by the HTK regression with repeated edges."""
    frames = [wave[s:s + P.WINDOW] for s in range(0, len(wave) - P.WINDOW + 1, P.HOP)]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(P.WINDOW) / (P.WINDOW - 1))
    hz = np.arange(P.NFFT // 2 + 1) * 16000 / P.NFFT
    mel = 2595 * np.log10(1 + hz / 700)
    edges = np.linspace(0, 2595 * np.log10(1 + 8000 / 700), P.MEL_BANDS + 2)
    bank = np.array([[max(0.0, min((m - edges[b]) / (edges[b + 1] - edges[b]),
                                   (edges[b + 2] - m) / (edges[b + 2] - edges[b + 1]))) for m in mel]
                     for b in range(P.MEL_BANDS)])
    rows = []
    for frame in frames:
        power = np.abs(np.fft.rfft(frame * window, P.NFFT)) ** 2
        logmel = np.log(bank @ power + 1e-8)
        n = P.MEL_BANDS
        rows.append([np.sqrt((1 if k == 0 else 2) / n) * sum(logmel[i] * np.cos(np.pi * k * (i + 0.5) / n)
                                                             for i in range(n)) for k in range(P.CEPSTRA)])
    c = np.array(rows)

    def deltas(x):
        p = np.concatenate([x[:1], x[:1], x, x[-1:], x[-1:]])
        return np.array([sum(k * (p[t + 2 + k] - p[t + 2 - k]) for k in (1, 2)) / 10 for t in range(len(x))])

    d = deltas(c)
    return np.concatenate([c, d, deltas(d)], axis=1)


def test_mfcc_matches_an_independent_reference_and_the_cnn_frames():
    wave = np.random.default_rng(0).normal(0, 0.1, 16000 + 123)
    got = P.mfcc(torch.from_numpy(wave)).numpy()
    expected = numpy_mfcc(wave)
    # float64 on both sides; log-mel values are O(10): 1e-8 is rounding, any formula slip is >1e-3
    np.testing.assert_allclose(got, expected, atol=1e-8)
    model = hp.Frontend(SHAPES["tiny"], prune_units=())
    assert len(got) == int(model.frame_lengths(torch.tensor([len(wave)]))[0])  # one target per CNN frame


def test_kmeans_recovers_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.3 * torch.randn(200, 2, generator=g) for c in centres])
    found = P.kmeans(x, 3, 20, torch.Generator().manual_seed(1))
    distance = torch.cdist(found, centres).min(dim=0).values
    assert distance.max() < 0.2  # each true centre has a centroid within ~4 standard errors of its mean


def test_span_mask_spans_and_rate():
    mask = P.span_mask(64, 200, 0.08, 10, torch.Generator().manual_seed(0))
    assert mask.any(dim=1).all()  # every utterance carries loss
    # each masked run is at least one span long (spans merge, never shrink)
    for row in mask[:8]:
        runs = np.diff(np.flatnonzero(np.diff(np.r_[0, row.int().numpy(), 0])))[::2]
        assert (runs >= 10).all()
    # P(frame masked) = 1 - (1 - p)^10 away from the edges: 0.566
    assert abs(mask[:, 20:180].float().mean().item() - (1 - 0.92 ** 10)) < 0.03


def test_mixing_adds_a_segment_of_another_utterance_only():
    g = torch.Generator().manual_seed(0)
    crops = torch.randn(4, 1600, generator=g)
    mixed = P.mix_utterances(crops, 1.0, torch.Generator().manual_seed(3))
    for i in range(4):
        changed = torch.nonzero((mixed[i] - crops[i]).abs() > 0).flatten()
        assert 160 <= len(changed) <= 800 and changed[-1] - changed[0] + 1 == len(changed)  # one contiguous piece
    assert torch.equal(P.mix_utterances(crops, 0.0, g), crops)


def test_held_out_evaluation_against_a_direct_computation():
    """evaluate() on a predictor that ignores its input and always answers the targets' own frequencies: its
    masked and unmasked losses are then -mean log p(target) over those frames and its accuracies the share of
    the most frequent cluster among them, computed here from the same targets and masks without a model."""
    cfg = config(speakers=2, held_out_speakers=2, utterances_per_speaker=3, clusters=8, kmeans_frames=3000,
                 crop_seconds=1.0)
    waves = P.unlabeled_corpus(cfg, processes=1, held_out=True)
    assert len(waves) == 6 and not any(np.array_equal(w, v) for w in waves for v in P.unlabeled_corpus(cfg, 1))
    quantiser = P.Quantiser.fit(waves, cfg, torch.Generator().manual_seed(0))
    model = transformers.WavLMModel(P._hf_config(config(shape="tiny")))
    clean = torch.stack([torch.from_numpy(w[:16000]) for w in waves])
    targets = torch.stack([quantiser(c) for c in clean])
    p = torch.bincount(targets.flatten(), minlength=8).double() / targets.numel()
    predictor = torch.nn.Linear(model.config.hidden_size, 8)
    torch.nn.init.zeros_(predictor.weight)
    with torch.no_grad():
        predictor.bias.copy_(p.clamp(min=1e-12).log())
    out = P.evaluate(model, predictor, quantiser, waves, cfg, torch.Generator().manual_seed(5))
    mask = P.span_mask(6, targets.shape[1], cfg.mask_prob, cfg.mask_length, torch.Generator().manual_seed(5))
    for name, where in (("masked", mask), ("unmasked", ~mask)):
        assert out[f"{name}_loss"] == pytest.approx(-p[targets[where]].log().mean().item(), abs=1e-4)
        assert out[f"{name}_accuracy"] == pytest.approx((targets[where] == p.argmax()).double().mean().item(),
                                                        abs=1e-4)
    assert out["majority_accuracy"] == pytest.approx(p.max().item(), abs=1e-4) and out["masked_frames"] == mask.sum()
    assert out["chance_loss"] == pytest.approx(-(p[p > 0] * p[p > 0].log()).sum().item(), abs=1e-4)


def test_pretraining_learns_and_writes_a_transformers_checkpoint(tmp_path):
    cfg = config(speakers=6, held_out_speakers=2, utterances_per_speaker=3, clusters=16, kmeans_frames=5000,
                 steps=40, batch_size=4, warmup_steps=5, lr=2e-3, log_every=10)
    record = P.pretrain(cfg, tmp_path / "ckpt")
    assert record["utterances"] == 18 and record["held_out"]["utterances"] == 6
    assert record["last"]["loss"] < record["first"]["loss"] - 0.3  # it learns (noise is ~0.1)
    ref = transformers.WavLMModel.from_pretrained(tmp_path / "ckpt").eval()
    model = hp.load_wavlm(tmp_path / "ckpt", prune_units=()).eval()
    torch.manual_seed(0)
    compare(ref, model, torch.randn(2, 12000), torch.tensor([12000, 7000]))


def test_the_corpus_is_deterministic_and_has_its_own_speakers():
    cfg = config(speakers=2, utterances_per_speaker=2)
    a, b = P.unlabeled_corpus(cfg, processes=1), P.unlabeled_corpus(cfg, processes=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    from hp.data import synth
    sv = synth.speaker_voice(synth.stream(0, synth.SV, synth.SPEAKER, 0, 0))
    mine = synth.speaker_voice(synth.stream(0, P.PRETRAIN, synth.SPEAKER, 0))
    assert sv.f0_hz != mine.f0_hz  # other random streams than the SV corpus's speakers


@pytest.mark.skipif(not COMMITTED.is_dir(), reason="no committed mini front end")
def test_the_committed_front_end_loads_in_transformers_and_hp_alike():
    ref = transformers.WavLMModel.from_pretrained(COMMITTED).eval()
    model = hp.load_wavlm(COMMITTED, prune_units=()).eval()
    torch.manual_seed(0)
    compare(ref, model, torch.randn(3, 16000), torch.tensor([16000, 11000, 6000]))
    record = json.loads((ROOT_DIR / "metrics" / "pretrain.json").read_text())
    held_out = record["held_out"]  # speakers it never trained on: it learned more than the targets' frequencies
    assert held_out["masked_accuracy"] >= 2 * held_out["majority_accuracy"]
    assert held_out["masked_loss"] < held_out["chance_loss"] - 0.3
    assert held_out["unmasked_loss"] < held_out["masked_loss"]  # it hears an unmasked frame's own acoustics
    assert math.isclose(record["hours"], record["utterances"] * 3.0 / 3600, rel_tol=0.05)  # 2-4 s each
