"""Training steps: throughput and peak memory of hp's pruning step against plain fine-tuning (`train`), and a run
with and without train-time compaction (`train-compaction`).

    python -m hp.benchmarks train --shape base-plus --batch 128 --seconds 3 --target 0.7 --json
    python -m hp.benchmarks train-compaction --shape base-plus --json

`train` sets hp's pruning step against plain fine-tuning: transformers' WavLMModel ("hf"), hp's WavLM without
gates ("dense"), with all five gate types plus the sparsity Lagrangian at their init ("pruned") and at gates of
expected sparsity `--target` with and without sampled execution ("pruned_target", "pruned_target_masked"), each
trained with AdamW on the loss sum_h mean(h^2) over all hidden states, each in a fresh process. The targets:
pruned_target >= 1.5x hf in utterances/s with peak memory <= hf's, pruned step time <= 1.10x dense, dense >= hf.
Reference: on one H100, transformers' WavLM Base+ shape, plain fine-tuning, runs 802 utt/s at batch 128 x 3 s
with a 22.0 GiB peak.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import transformers

from hp.benchmarks.common import comma_list, write_noise
from hp.benchmarks.compaction import draw_masks
from hp.data.audio import SAMPLE_RATE
from hp.model import SHAPES, UNIT_TYPES, Frontend
from hp.model.sampled import computed_units
from hp.training.sparsity import SparsityController, param_groups


# ---- training throughput and memory -------------------------------------------------------------------------
# "pruned": every gate at its init (most units kept); "pruned_target": gates drawn at the --target sparsity, with
# sampled execution (hp.model.sampled); "pruned_target_masked": the same gates, every unit computed times its mask.
VARIANTS = ("hf", "dense", "pruned", "pruned_target", "pruned_target_masked")
AT_TARGET = ("pruned_target", "pruned_target_masked")
UNIT_KIND = {"head_gate": "head", "attention.block_gate": "attlayer", "unit_gate": "interm",
             "feed_forward.block_gate": "ffnlayer"}


def unit_kind(gate_name: str) -> str:
    """The unit type (gates.UNIT_TYPES) of a gate, from its name in Frontend.gates()."""
    if gate_name.startswith("cnn."):
        return "conv"
    return next(kind for suffix, kind in UNIT_KIND.items() if gate_name.endswith(suffix))


def train_variant(variant: str, shape: str, batch: int, seconds: float, steps: int, warmup: int, device: str,
                  threads: int, target: float | None, seed: int = 0) -> dict:
    """Time `steps` training steps of one variant after `warmup` steps; run it in a fresh process (peak memory:
    every variant's process imports the same modules, this one's, so CPU peak RSS starts from the same base).

    bf16 autocast on CUDA, float32 on CPU, as TrainConfig's "auto" precision (hp.training.config).
    """
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    device = torch.device(device)
    # the same computation in all: no LayerDrop (it would make the timed steps uneven) and no SpecAugment
    # (hp has none; transformers' would add host-side mask building to its steps only)
    config = SHAPES[shape].replace(layerdrop=0.0)
    pruned = variant.startswith("pruned")
    if variant == "hf":
        model = transformers.WavLMModel(transformers.WavLMConfig(**config.to_dict(), apply_spec_augment=False))
        forward = lambda wave: model(wave, output_hidden_states=True).hidden_states  # noqa: E731
    else:
        model = forward = Frontend(config, prune_units=UNIT_TYPES if pruned else ())
    expected = None
    if variant in AT_TARGET:
        # trained gates saturate: each unit's log_alpha far from 0, so that the expected sparsity is the target
        draw_masks(model, target, seed)
        expected = round(model.expected_sparsity().item(), 4)
        model.set_sampled_execution(variant == "pruned_target")
    model.to(device).train()
    lr, reg_lr = 1e-4, 0.05
    if pruned:
        controller = SparsityController(target or 0.5, warmup_steps=0).to(device)
        main_groups, reg_groups = param_groups(model, controller, lr, reg_lr)
        clipped = [p for p in model.parameters() if p.requires_grad]  # as TrainState clips: gates included
        optimizers = [torch.optim.AdamW(main_groups), torch.optim.AdamW(reg_groups)]
    else:
        optimizers = [torch.optim.AdamW(model.parameters(), lr=lr)]
    wave = torch.randn(batch, int(seconds * SAMPLE_RATE), device=device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else lambda: None

    def step(i: int) -> None:
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = sum(h.float().pow(2).mean() for h in forward(wave))
        if pruned:  # the Lagrangian outside autocast: the count's polynomial in float64
            loss = loss + controller(model.expected_sparsity(), i)[0]
        loss.backward()
        if pruned:
            torch.nn.utils.clip_grad_norm_(clipped, 3.0)
        for optimizer in optimizers:
            optimizer.step()
        if pruned:
            controller.clamp_()

    for i in range(warmup):
        step(i)
    if cuda:  # after warm-up: the optimiser states exist, the peak is that of a steady step
        torch.cuda.reset_peak_memory_stats()
    sync()
    with computed_units() as computed:
        start = time.perf_counter()
        for i in range(warmup, warmup + steps):
            step(i)
        sync()
        step_s = (time.perf_counter() - start) / steps
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # KiB on Linux
    result = {"utt_per_s": round(batch / step_s, 3), "step_s": round(step_s, 6), "peak_memory_mib": round(peak, 1),
              "memory_kind": "cuda_allocated" if cuda else "cpu_peak_rss",
              "gpu": torch.cuda.get_device_name() if cuda else None}
    if pruned:  # the share of each unit type the timed steps computed (blocks: the share of blocks run)
        names = {gate: name for name, gate in model.gates().items()}
        by_kind: dict[str, list[int]] = {}
        for gate, (done, total) in computed.items():
            kind = by_kind.setdefault(unit_kind(names[gate]), [0, 0])
            kind[0], kind[1] = kind[0] + done, kind[1] + total
        result["units_computed"] = {kind: round(done / total, 4) for kind, (done, total) in sorted(by_kind.items())}
        result["expected_sparsity"] = expected if expected is not None else round(model.expected_sparsity().item(), 4)
    return result


def _ratio(a: float, b: float) -> float:
    return round(a / b, 4)


def train(args: argparse.Namespace) -> dict:
    """Each variant in a fresh process, in turn; `rounds` times over, so that a machine whose speed drifts (a
    shared CPU) slows every variant alike, and each variant's median round is kept."""
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    names = [v for v in args.variants if args.target is not None or v not in AT_TARGET]
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            # a fresh "spawn" process per variant: clean peak memory, no CUDA state inherited
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                runs[name].append(pool.submit(train_variant, name, args.shape, args.batch, args.seconds, args.steps,
                                              args.warmup, device, args.threads, args.target).result())
    variants, gpu = {}, None
    for name, results in runs.items():
        median = sorted(results, key=lambda r: r["step_s"])[(len(results) - 1) // 2]
        gpu = median.pop("gpu")
        variants[name] = {**median, "peak_memory_mib": max(r["peak_memory_mib"] for r in results),
                          "step_s_rounds": [r["step_s"] for r in results]}
    ratios, targets = {}, {}
    hf, dense, pruned, at_target, masked = (variants.get(v) for v in VARIANTS)
    if hf and dense:
        ratios["dense_vs_hf_throughput"] = _ratio(dense["utt_per_s"], hf["utt_per_s"])
        targets["dense_at_least_hf"] = dense["utt_per_s"] >= hf["utt_per_s"]
    if dense and pruned:
        ratios["pruned_vs_dense"] = _ratio(pruned["step_s"], dense["step_s"])  # step time
        targets["pruned_within_1_10x_dense"] = pruned["step_s"] <= 1.10 * dense["step_s"]
    if hf and pruned:
        ratios["pruned_vs_hf"] = _ratio(pruned["utt_per_s"], hf["utt_per_s"])  # throughput
    if hf and at_target:
        ratios["pruned_target_vs_hf"] = _ratio(at_target["utt_per_s"], hf["utt_per_s"])
        ratios["pruned_target_vs_hf_memory"] = _ratio(at_target["peak_memory_mib"], hf["peak_memory_mib"])
        targets["pruned_target_1_5x_hf"] = at_target["utt_per_s"] >= 1.5 * hf["utt_per_s"]
        targets["pruned_target_memory_not_above_hf"] = at_target["peak_memory_mib"] <= hf["peak_memory_mib"]
    if at_target and masked:
        ratios["pruned_target_vs_masked"] = _ratio(at_target["utt_per_s"], masked["utt_per_s"])
    return {"benchmark": "train", "shape": args.shape, "batch": args.batch, "seconds": args.seconds,
            "target_sparsity": args.target, "device": device,
            "precision": "bf16" if device.startswith("cuda") else "fp32", "threads": args.threads,
            "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds, "variants": variants,
            "ratios": ratios, "targets": targets, "torch": torch.__version__,
            "transformers": transformers.__version__, "gpu": gpu}


# ---- train-time compaction ----------------------------------------------------------------------------------
class _StepClock:
    """A training logger (log_every 1) that keeps the time at which each step starts."""

    def __init__(self):
        self.times: list[float] = []

    def log(self, step: int, values: dict) -> None:
        self.times.append(time.perf_counter())


def train_compaction(args: argparse.Namespace) -> dict:
    """One training run twice, side by side in this process: the gates at random masks of `--sparsity` (reg_lr 0: they
    stay there) freeze at step `--switch` (the end of the target warm-up), then the run goes on with the gated model
    (`compact_on_freeze: false`) or the compacted one (`true`). Step times before and after the switch, whole-run wall
    time, and how far apart the two final (compacted) models are (dropout and LayerDrop off: the same computation)."""
    from hp.params import Runtime
    from hp.tasks.task_model import HeadConfig, TaskModel
    from hp.training.config import TrainConfig
    from hp.training.loop import train as train_run

    torch.set_num_threads(args.threads)
    config = SHAPES[args.shape].replace(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                                        layerdrop=0.0)
    rng = np.random.default_rng(args.seed)
    head = HeadConfig(backend="mhfa", heads=8, compression=64, embedding=128, grad_multiplier=1.0, mean_norm=None,
                      margin=0.2, scale=32.0, subcenters=1, topk=0, topk_penalty=0.06)
    runtime = Runtime(device="cpu", num_workers=0, log_every=1, checkpoint_every=None, nproc_per_node=1, threads=None)
    results, finals = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for i in range(args.batch * 2):
            path = Path(tmp) / f"{i}.wav"
            write_noise(path, args.seconds, rng)
            rows.append({"utt": path.name, "path": str(path), "label": f"s{i % 4}", "duration_s": args.seconds})
        table = pd.DataFrame(rows)
        for compact_on_freeze in (False, True):
            cfg = TrainConfig(target_sparsity=args.sparsity, epochs=args.steps // 2, batch_size=args.batch,
                              crop_seconds=args.seconds, aug_prob=0.0, optimizer="adamw", lr=1e-4, final_lr=1e-5,
                              lr_reference_batch=None, warmup_epochs=0.0, warmup_from_zero=True, weight_decay=0.0,
                              average_last=1, grad_clip=3.0, seed=args.seed, grad_accumulation=1, precision="fp32",
                              resume="never", runtime=runtime, reg_lr=0.0, lambda_lr=0.0,
                              sparsity_warmup_epochs=args.switch / 2, freeze_tolerance=1.0,
                              compact_on_freeze=compact_on_freeze)
            torch.manual_seed(args.seed)
            model = TaskModel("sv", Frontend(config), sorted(table["label"].unique()), head)
            draw_masks(model.frontend, args.sparsity, args.seed)
            clock = _StepClock()
            start = time.perf_counter()
            run = train_run(model, table, cfg, clock)
            wall = time.perf_counter() - start
            steps = np.diff(clock.times + [start + wall])  # the last step ends with the run (finish() is cheap)
            before, after = steps[1:args.switch], steps[args.switch + 1:]  # step 0 warms up; the switch step apart
            name = "compacted" if compact_on_freeze else "gated"
            results[name] = {"step_s_before_switch": round(float(np.median(before)), 4),
                             "step_s_after_switch": round(float(np.median(after)), 4),
                             "switch_step_s": round(float(steps[args.switch]), 4), "wall_s": round(wall, 2),
                             "params_training": sum(p.numel() for p in model.parameters()),
                             "frozen_at": run["gates_frozen_at_step"], "compacted_at": run["compacted_at_step"]}
            finals[name] = model.compacted().state_dict()
    gated, compacted = results["gated"], results["compacted"]
    apart = max((finals["gated"][k] - v).abs().max().item() for k, v in finals["compacted"].items())
    after = compacted["step_s_after_switch"]
    return {"benchmark": "train-compaction", "shape": args.shape, "sparsity": args.sparsity, "batch": args.batch,
            "seconds": args.seconds, "steps": args.steps // 2 * 2, "switch": args.switch, "threads": args.threads,
            "runs": results, "after_vs_before_step_time": round(after / compacted["step_s_before_switch"], 4),
            "after_switch_compacted_vs_gated": round(after / gated["step_s_after_switch"], 4),
            "wall_compacted_vs_gated": round(compacted["wall_s"] / gated["wall_s"], 4), "final_max_abs_diff": apart,
            "torch": torch.__version__}


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="training steps of transformers' WavLM, hp dense, hp pruned: utt/s, peak memory")
    p.add_argument("--shape", choices=sorted(SHAPES), default="base-plus")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seconds", type=float, default=3.0, help="utterance length")
    p.add_argument("--steps", type=int, default=20, help="timed steps, after the warm-up steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="auto", help="auto: CUDA when present (bf16 autocast), else CPU (float32)")
    p.add_argument("--variants", type=comma_list(str, VARIANTS), default=list(VARIANTS),
                   help=f"comma-separated, of {','.join(VARIANTS)}; each runs in its own process (the last two "
                        "only with --target)")
    p.add_argument("--target", type=float, default=None,
                   help="sparsity of the gates of pruned_target and pruned_target_masked (log_alpha drawn so)")
    p.add_argument("--rounds", type=int, default=3, help="each variant timed this many times in turn; the median")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(run=train)
    p = sub.add_parser("train-compaction", help="a run with and without train-time compaction: step times, wall time")
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    p.add_argument("--sparsity", type=float, default=0.7)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=2.0, help="crop length")
    p.add_argument("--steps", type=int, default=40, help="optimiser steps (2 epochs of steps / 2)")
    p.add_argument("--switch", type=int, default=10, help="the step at which the gates freeze")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=train_compaction)
