"""Benchmarks that print JSON: `python -m hp.bench compaction --shape base-plus --sparsity 0.7 --json`,
`python -m hp.bench scoring --json`."""
from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from hp.model import SHAPES, WavLM, compact
from hp.model.gates import HardConcrete
from hp.score import sv_metrics
from hp.score_norm import score_trials

# Saturated log_alpha: the deterministic mask then keeps exactly the chosen units (P(z != 0) is within 1e-4
# of 0 or 1, far from moving round(n - E[L0])), with soft values of kept units within 1e-4 of 1.
KEEP_LOG_ALPHA, DROP_LOG_ALPHA = (8.0, 12.0), (-16.0, -12.0)


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_macs(model: torch.nn.Module, wave: torch.Tensor) -> int:
    """Multiply-accumulates of one forward: convolutions, matmuls and attention (CPU SDPA included)."""
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        model(wave)
    return counter.get_total_flops() // 2


def median_latencies(models: list[torch.nn.Module], wave: torch.Tensor, repeats: int, warmup: int = 2) -> list[float]:
    """Median forward time of each model; runs alternate between models so drift hits all alike."""
    times = [[] for _ in models]
    with torch.inference_mode():
        for i in range(warmup + repeats):
            for model, t in zip(models, times):
                t0 = time.perf_counter()
                model(wave)
                if i >= warmup:
                    t.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def _set_gate(gate: HardConcrete, keep: int, rng: random.Random) -> None:
    """Make the deterministic mask keep `keep` randomly chosen units of `gate`."""
    kept = set(rng.sample(range(gate.n), keep))
    with torch.no_grad():
        for i in range(gate.n):
            lo, hi = KEEP_LOG_ALPHA if i in kept else DROP_LOG_ALPHA
            gate.log_alpha[i] = rng.uniform(lo, hi)


def draw_masks(model: WavLM, sparsity: float, seed: int, block_fraction: float = 1 / 12) -> float:
    """Random structured masks over all five unit types whose compaction removes `sparsity` of N0.

    A `block_fraction` of attention and of FFN blocks is switched off whole; in every other gate group
    the same fraction q of units is kept, chosen at random, q found by bisection. Heads come in coarse
    steps, so FFN units then get their own fraction, bisected again to land on the target. Returns q.
    """
    gates = model.gates()
    layers = len(model.encoder.layers)
    rng = random.Random(seed)
    off = {f"encoder.layers.{i}.{kind}.block_gate" for kind in ("attention", "feed_forward")
           for i in rng.sample(range(layers), max(1, round(block_fraction * layers)))}

    def apply(q: float, q_ffn: float) -> float:
        r = random.Random(seed + 1)
        for name, g in gates.items():
            if name.endswith("block_gate"):
                keep = 0 if name in off else 1
            else:
                keep = max(g.min_keep, 1, round((q_ffn if name.endswith("unit_gate") else q) * g.n))
            _set_gate(g, min(g.n, keep), r)
        return 1 - model.deterministic_num_params() / model.dense_num_params

    def bisect(f) -> float:
        lo, hi = 0.0, 1.0
        for _ in range(30):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if f(mid) < sparsity else (mid, hi)
        return min((lo, hi), key=lambda v: abs(f(v) - sparsity))

    q = bisect(lambda v: apply(v, v))
    q_ffn = bisect(lambda v: apply(q, v))
    apply(q, q_ffn)
    return q

def compaction(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    config = SHAPES[args.shape]
    dense = WavLM(config, prune_units=()).eval()
    gated = WavLM(config).eval()
    gated.load_state_dict(dense.state_dict(), strict=False)
    keep_fraction = draw_masks(gated, args.sparsity, args.seed)
    small = compact(gated)
    wave = torch.randn(1, int(16000 * args.seconds))
    with torch.inference_mode():
        diff = max((a - b).abs().max().item() for a, b in zip(gated(wave), small(wave)))
    if args.save:
        small.save(args.save)
    params_dense, params_compact = dense.num_params(), small.num_params()
    macs_dense, macs_compact = count_macs(dense, wave), count_macs(small, wave)
    lat_dense, lat_compact = median_latencies([dense, small], wave, args.repeats)
    structure = small.structure
    return {
        "benchmark": "compaction", "shape": args.shape, "target_sparsity": args.sparsity,
        "achieved_sparsity": round(1 - params_compact / params_dense, 6), "keep_fraction": round(keep_fraction, 4),
        "params_dense": params_dense, "params_compact": params_compact,
        "macs_dense": macs_dense, "macs_compact": macs_compact, "mac_ratio": round(macs_compact / macs_dense, 4),
        "latency_dense_s": round(lat_dense, 5), "latency_compact_s": round(lat_compact, 5),
        "latency_ratio": round(lat_compact / lat_dense, 4), "max_abs_diff": diff,
        "attention_blocks": sum(l.use_attention for l in structure.layers),
        "ffn_blocks": sum(l.use_ffn for l in structure.layers), "layers": len(structure.layers),
        "seconds": args.seconds, "batch": 1, "threads": args.threads, "repeats": args.repeats,
        "torch": torch.__version__, "machine": platform.machine(), "processor": platform.processor() or None,
    }


def scoring(args: argparse.Namespace) -> dict:
    """SV scoring from embeddings: cosine trials, AS-norm (training-speaker cohort), EER and minDCF."""
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    # speaker structure, so that the metrics are computed on a non-degenerate score distribution
    speakers = rng.integers(0, args.utterances // 10, args.utterances)
    centres = rng.normal(size=(args.utterances // 10, args.dim)).astype(np.float32)
    embeddings = centres[speakers] + 1.5 * rng.normal(size=(args.utterances, args.dim)).astype(np.float32)
    train = rng.normal(size=(args.cohort * 4, args.dim)).astype(np.float32)
    train_speakers = np.repeat(np.arange(args.cohort), 4)
    enroll = rng.integers(0, args.utterances, args.trials)
    test = np.where(rng.random(args.trials) < 0.5, rng.integers(0, args.utterances, args.trials),
                    _same_speaker(speakers, enroll, rng))
    labels = (speakers[enroll] == speakers[test]).astype(int)
    start = time.perf_counter()
    scored = score_trials(embeddings, enroll, test, train, train_speakers, top_n=args.top_n)
    results = {name: sv_metrics(s, labels) for name, s in scored.items()}
    seconds = time.perf_counter() - start
    return {"benchmark": "scoring", "utterances": args.utterances, "trials": args.trials, "cohort": args.cohort,
            "top_n": args.top_n, "dim": args.dim, "threads": args.threads, "seconds": round(seconds, 3),
            "target_trials": int(labels.sum()), "eer_raw": results["raw"]["eer"],
            "eer_asnorm": results["asnorm"]["eer"], "torch": torch.__version__}


def _same_speaker(speakers: np.ndarray, enroll: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each enrollment utterance, a random utterance of the same speaker (target trials)."""
    order = np.argsort(speakers, kind="stable")
    starts = np.searchsorted(speakers[order], speakers[enroll], "left")
    ends = np.searchsorted(speakers[order], speakers[enroll], "right")
    return order[starts + (rng.random(len(enroll)) * (ends - starts)).astype(int)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hp.bench", description=__doc__)
    sub = parser.add_subparsers(dest="benchmark", required=True)
    p = sub.add_parser("compaction", help="dense vs compacted model: params, MACs, CPU latency, parity")
    p.add_argument("--shape", choices=sorted(SHAPES), default="base-plus")
    p.add_argument("--sparsity", type=float, default=0.7)
    p.add_argument("--seconds", type=float, default=4.0, help="utterance length (batch 1)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=11, help="timed runs after 2 warm-up runs; the median is kept")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", metavar="DIR", help="save the compact model here for hp.load_compact")
    p.add_argument("--json", action="store_true", help="print one JSON line (default: indented JSON)")
    p = sub.add_parser("scoring", help="SV scoring with AS-norm on random embeddings: wall time")
    p.add_argument("--utterances", type=int, default=5000)
    p.add_argument("--trials", type=int, default=550_000)
    p.add_argument("--cohort", type=int, default=6000, help="training speakers (4 utterances each)")
    p.add_argument("--top-n", type=int, default=300)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON line (default: indented JSON)")
    args = parser.parse_args(argv)
    result = {"compaction": compaction, "scoring": scoring}[args.benchmark](args)
    json.dump(result, sys.stdout, indent=None if args.json else 2)
    print()


if __name__ == "__main__":
    main()
