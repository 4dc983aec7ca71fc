"""A dense model against its compaction at random structured masks: parameters, MACs, CPU latency (batch 1), parity.

    python -m hp.benchmarks compaction --shape base-plus --sparsity 0.7 --seconds 4 --threads 2 --json [--save DIR]
    python -m hp.benchmarks compaction --measure macs --json  # masks drawn to a MAC target

draw_masks (random masks at a target sparsity over all five unit types) is also what the training benchmarks and
tests set their gates with.
"""
from __future__ import annotations

import argparse
import platform
import random

import torch

from hp.measure import MEASURES, PARAMS, Measure
from hp.model import SHAPES, Frontend, compact, save_compact
from hp.model.gates import HardConcrete
from hp.utils.profiling import count_macs, median_latencies

# Saturated log_alpha: the deterministic mask then keeps exactly the chosen units (P(z != 0) is within 1e-4
# of 0 or 1, far from moving round(n - E[L0])), with soft values of kept units within 1e-4 of 1.
KEEP_LOG_ALPHA, DROP_LOG_ALPHA = (8.0, 12.0), (-16.0, -12.0)


def _set_gate(gate: HardConcrete, keep: int, rng: random.Random) -> None:
    """Make the deterministic mask keep `keep` randomly chosen units of `gate`."""
    kept = set(rng.sample(range(gate.n), keep))
    with torch.no_grad():
        for i in range(gate.n):
            lo, hi = KEEP_LOG_ALPHA if i in kept else DROP_LOG_ALPHA
            gate.log_alpha[i] = rng.uniform(lo, hi)


def draw_masks(model: Frontend, sparsity: float, seed: int, block_fraction: float = 1 / 12,
               measure: Measure = PARAMS) -> float:
    """Random structured masks over all five unit types whose compaction removes `sparsity` of the dense cost in
    `measure` (N0, or the MACs on the measure's utterance).

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
        return model.deterministic_sparsity(measure)

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
    """Gates at random masks removing --sparsity of the --measure, compacted; both models timed alternately on one
    --seconds utterance, and their outputs compared."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    config = SHAPES[args.shape]
    dense = Frontend(config, prune_units=()).eval()
    gated = Frontend(config).eval()
    gated.load_state_dict(dense.state_dict(), strict=False)
    measure = Measure(args.measure, args.seconds)  # MACs at the timed length
    keep_fraction = draw_masks(gated, args.sparsity, args.seed, measure=measure)
    small = compact(gated)
    wave = torch.randn(1, int(16000 * args.seconds))
    with torch.inference_mode():
        diff = max((a - b).abs().max().item() for a, b in zip(gated(wave), small(wave)))
    if args.save:
        save_compact(small, args.save)
    params_dense, params_compact = dense.num_params(), small.num_params()
    macs_dense, macs_compact = count_macs(dense, wave), count_macs(small, wave)
    lat_dense, lat_compact = median_latencies([lambda: dense(wave), lambda: small(wave)], args.repeats)
    structure = small.structure
    sparsity = {"params": round(1 - params_compact / params_dense, 6), "macs": round(1 - macs_compact / macs_dense, 6)}
    return {
        "benchmark": "compaction", "shape": args.shape, "target_sparsity": args.sparsity, "measure": args.measure,
        "achieved_sparsity": sparsity[args.measure], "params_sparsity": sparsity["params"],
        "macs_sparsity": sparsity["macs"], "keep_fraction": round(keep_fraction, 4),
        "params_dense": params_dense, "params_compact": params_compact,
        "macs_dense": macs_dense, "macs_compact": macs_compact, "mac_ratio": round(macs_compact / macs_dense, 4),
        "latency_dense_s": round(lat_dense, 5), "latency_compact_s": round(lat_compact, 5),
        "latency_ratio": round(lat_compact / lat_dense, 4),
        "latency_over_mac_ratio": round(lat_compact / lat_dense / (macs_compact / macs_dense), 4),
        "macs_counted_equal_profiled": small.num_macs(args.seconds) == macs_compact, "max_abs_diff": diff,
        "attention_blocks": sum(l.use_attention for l in structure.layers),
        "ffn_blocks": sum(l.use_ffn for l in structure.layers), "layers": len(structure.layers),
        "seconds": args.seconds, "batch": 1, "threads": args.threads, "repeats": args.repeats,
        "torch": torch.__version__, "machine": platform.machine(), "processor": platform.processor() or None,
    }


def add_parser(sub) -> None:
    p = sub.add_parser("compaction", help="dense vs compacted model: params, MACs, CPU latency, parity")
    p.add_argument("--shape", choices=sorted(SHAPES), default="base-plus")
    p.add_argument("--sparsity", type=float, default=0.7)
    p.add_argument("--measure", choices=MEASURES, default="params", help="what --sparsity is a fraction of")
    p.add_argument("--seconds", type=float, default=4.0, help="utterance length (batch 1), also of the MAC measure")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=11, help="timed runs after 2 warm-up runs; the median is kept")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", metavar="DIR", help="save the compact model here for hp.load_compact")
    p.set_defaults(run=compaction)
