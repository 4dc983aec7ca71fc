"""Task models saved by the pipeline timed side by side: front-end parameters and MACs, embedding latency (CPU).

    python -m hp.benchmarks latency models/sv/compact other/models/sv/compact --json
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from hp.data.audio import SAMPLE_RATE
from hp.utils.profiling import count_macs, median_latencies


def latency(args: argparse.Namespace) -> dict:
    """Task models saved by the pipeline (models/<task>/compact, e.g. of two experiments) timed side by side in one
    process, runs alternating (batch 1, one `--seconds` utterance): front-end parameters and MACs, embedding latency."""
    from hp.tasks.task_model import TaskModel

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    models = [TaskModel.load(d).eval() for d in args.models]
    wave = torch.randn(1, round(args.seconds * SAMPLE_RATE))
    lengths = torch.tensor([wave.shape[1]])
    times = median_latencies([lambda m=m: m.embed(wave, lengths) for m in models], args.repeats, warmup=3)
    return {"benchmark": "latency", "seconds": args.seconds, "threads": args.threads, "repeats": args.repeats,
            "models": [{"directory": str(d), "task": m.task, "params_frontend": m.frontend.num_params(),
                        "macs_frontend": m.frontend.num_macs(args.seconds), "macs": count_macs(m.embed, wave, lengths),
                        "latency_ms": round(1e3 * t, 3)} for d, m, t in zip(args.models, models, times)],
            "torch": torch.__version__}


def add_parser(sub) -> None:
    p = sub.add_parser("latency", help="saved task models timed side by side: params, MACs, CPU latency")
    p.add_argument("models", nargs="+", type=Path, help="directories of saved task models (models/<task>/compact)")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=latency)
