"""fp32 vs int8 ONNX of a compacted front end at a released model's shape: file size, onnxruntime CPU latency, output
agreement. What the mini models cannot show (their compute is the CNN's, which int8 does not touch: hp.deploy.quantize).

    python -m hp.benchmarks int8 --shape base-plus --sparsity 0.7 --json
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from hp.benchmarks.compaction import draw_masks
from hp.model.config import SHAPES


def int8(args: argparse.Namespace) -> dict:
    """An SV task model (MHFA back-end) at random masks removing --sparsity of the front end's parameters,
    compacted, exported, quantised by --method; both graphs timed alternately on one --seconds utterance."""
    from hp.deploy.export import InferenceGraph, export_onnx
    from hp.deploy.quantize import agreement, quantize
    from hp.deploy.release import OnnxModel
    from hp.model import Frontend
    from hp.tasks.task_model import HeadConfig, TaskModel
    from hp.utils.profiling import median_latencies

    torch.manual_seed(args.seed)
    head = HeadConfig(backend="mhfa", heads=64, compression=128, embedding=256, grad_multiplier=1.0, mean_norm=None,
                      ecapa_channels=0, ecapa_mfa_channels=0, margin=0.2, scale=32.0, subcenters=1, topk=0,
                      topk_penalty=0.0, class_weights=None)
    model = TaskModel("sv", Frontend(SHAPES[args.shape]), ["a", "b"], head)
    draw_masks(model.frontend, args.sparsity, args.seed)
    model = model.compacted().eval()
    wave = (0.1 * np.random.default_rng(args.seed).standard_normal((1, round(16000 * args.seconds)))
            ).astype(np.float32)
    lengths = np.array([wave.shape[1]])
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"fp32": Path(tmp) / "model.onnx", "int8": Path(tmp) / "model.int8.onnx"}
        export_onnx(InferenceGraph(model), paths["fp32"])
        calibration = [(0.1 * np.random.default_rng(i).standard_normal((1, 48000)).astype(np.float32),
                        np.array([48000])) for i in range(4)]
        quantize(paths["fp32"], paths["int8"], args.method, calibration if args.method == "static" else ())
        graphs = {name: OnnxModel(path, args.threads) for name, path in paths.items()}
        times = median_latencies([lambda g=g: g.run(wave, lengths) for g in graphs.values()], args.repeats,
                                 warmup=2)
        outputs = {name: g.run(wave, lengths) for name, g in graphs.items()}
        sizes = {name: path.stat().st_size for name, path in paths.items()}
    return {"benchmark": "int8", "shape": args.shape, "sparsity": args.sparsity, "method": args.method,
            "params_frontend": model.frontend.num_params(), "seconds": args.seconds, "threads": args.threads,
            "repeats": args.repeats, "bytes": sizes, "latency_ms": {k: round(1e3 * t, 2) for k, t in zip(graphs, times)},
            "latency_int8_vs_fp32": round(times[1] / times[0], 3), "agreement": agreement(*outputs.values())}


def add_parser(sub) -> None:
    p = sub.add_parser("int8", help="fp32 vs int8 ONNX of a compacted front end: size, CPU latency, agreement")
    p.add_argument("--shape", choices=sorted(SHAPES), default="base-plus")
    p.add_argument("--sparsity", type=float, default=0.7, help="front-end parameters removed (random masks)")
    p.add_argument("--method", choices=("dynamic", "static"), default="dynamic")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=int8)
