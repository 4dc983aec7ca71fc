"""Benchmarks that print JSON: `python -m hp.benchmarks.suite compaction --shape base-plus --sparsity 0.7 --json`,
`python -m hp.benchmarks.suite scoring --json`, `python -m hp.benchmarks.suite train --shape base-plus --batch 128 --json`,
`python -m hp.benchmarks.suite loader --json`, `python -m hp.benchmarks.suite compaction --measure macs --json` (masks drawn to a MAC target),
`python -m hp.benchmarks.suite train-compaction --shape base-plus --json` (a run with and without train-time compaction),
`python -m hp.benchmarks.suite latency models/sv/compact other/models/sv/compact --json` (saved models timed side by side).

`train` sets hp's pruning step against plain fine-tuning: transformers' WavLMModel ("hf"), hp's WavLM without
gates ("dense"), with all five gate types plus the sparsity Lagrangian at their init ("pruned") and at gates of
expected sparsity `--target` with and without sampled execution ("pruned_target", "pruned_target_masked"), each
trained with AdamW on the loss sum_h mean(h^2) over all hidden states, each in a fresh process. The targets:
pruned_target >= 1.5x hf in utterances/s with peak memory <= hf's, pruned step time <= 1.10x dense, dense >= hf.
Reference: on one H100, transformers' WavLM Base+ shape, plain fine-tuning, runs 802 utt/s at batch 128 x 3 s
with a 22.0 GiB peak.
`loader` times the data path alone (decode, crop, MUSAN/RIR augmentation) for several DataLoader worker counts.
`audio-check` times the manifests stage's audio check (manifests.check_audio: header | decode) on generated files:
`python -m hp.benchmarks.suite audio-check --format flac --json`.
`corpus-scale` runs the SV prepare, manifests and score stages on a VoxCeleb-size tree (hp/benchmarks/corpus_scale.py).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import platform
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
import transformers
from torch.utils.data import DataLoader, RandomSampler

from hp.data.audio import SAMPLE_RATE
from hp.data.augment import AugmentConfig, Augmenter, musan_table, rir_table
from hp.benchmarks import corpus_scale
from hp.benchmarks.audio_check import audio_check
from hp.model import SHAPES, UNIT_TYPES, WavLM, compact, save_compact
from hp.measure import MEASURES, PARAMS, Measure
from hp.model.gates import HardConcrete
from hp.model.sampled import computed_units
from hp.utils.profiling import count_macs, median_latencies
from hp.evaluation.scoring import sv_metrics
from hp.evaluation.score_norm import score_trials
from hp.training.sparsity import SparsityController, param_groups
from hp.training.loop import CropDataset

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


def draw_masks(model: WavLM, sparsity: float, seed: int, block_fraction: float = 1 / 12,
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
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    config = SHAPES[args.shape]
    dense = WavLM(config, prune_units=()).eval()
    gated = WavLM(config).eval()
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

    bf16 autocast on CUDA, float32 on CPU, as hp.training.loop's "auto" precision.
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
        model = forward = WavLM(config, prune_units=UNIT_TYPES if pruned else ())
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
        clipped = [p for p in model.parameters() if p.requires_grad]  # as hp.training.loop: gates included
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
    from hp.training.loop import TrainConfig, train as train_run

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
            _write_noise(path, args.seconds, rng)
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
            model = TaskModel("sv", WavLM(config), sorted(table["label"].unique()), head)
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


# ---- saved models side by side ------------------------------------------------------------------------------
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


# ---- data loading -------------------------------------------------------------------------------------------
def _write_noise(path: Path, seconds: float, rng: np.random.Generator, decay_s: float | None = None) -> None:
    wave = 0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE)).astype(np.float32)
    if decay_s is not None:  # an RIR: noise under an exponential decay
        wave *= np.exp(-np.arange(len(wave)) / (decay_s * SAMPLE_RATE)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, SAMPLE_RATE)


def loader_corpus(root: Path, utterances: int, seed: int = 0) -> tuple[pd.DataFrame, Augmenter]:
    """A random-noise corpus under `root`: the manifest of `utterances` 4-8 s FLAC files, and an Augmenter
    (every crop augmented) over MUSAN and RIRS_NOISES trees in their distributed layouts."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(utterances):
        path, duration = root / "wav" / f"utt{i:05d}.flac", float(rng.uniform(4, 8))
        _write_noise(path, duration, rng)
        rows.append({"utt": path.stem, "path": str(path), "speaker": f"spk{i % 4}", "label": f"spk{i % 4}",
                     "duration_s": sf.info(path).frames / SAMPLE_RATE, "sample_rate": SAMPLE_RATE,
                     "split": "train"})
    for kind in ("noise", "music", "speech"):
        for j in range(4):  # 4 talkers: babble draws 3-7
            _write_noise(root / "musan" / kind / "x" / f"{kind}-{j:04d}.wav", 6.0, rng)
    for j in range(4):
        _write_noise(root / "RIRS_NOISES/simulated_rirs/smallroom/Room001" / f"Room001-{j:05d}.wav", 0.5, rng,
                     decay_s=0.1)
    augmenter = Augmenter(musan_table(root), rir_table(root), AugmentConfig(prob=1.0))
    return pd.DataFrame(rows), augmenter


def loader(args: argparse.Namespace) -> dict:
    # DataLoader workers run with one torch thread; the main process (workers=0) gets --threads. With more
    # threads than free cores, every small reduction in the augmentation waits on OpenMP: 40-100x slower here
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        table, augmenter = loader_corpus(Path(tmp), args.utterances, args.seed)
        data = CropDataset(table, sorted(set(table["label"])), args.seconds, args.seed,
                           augmenter if args.augment else None)
        for workers in args.workers:
            # sampling with replacement: any number of batches from a small corpus, in one pass
            sampler = RandomSampler(data, replacement=True, num_samples=args.batch * (args.batches + 1),
                                    generator=torch.Generator().manual_seed(args.seed))
            batches = iter(DataLoader(data, batch_size=args.batch, sampler=sampler, num_workers=workers))
            next(batches)  # warm-up: worker start-up and the first reads are not timed
            start = time.perf_counter()
            count = sum(len(wave) for wave, _ in batches)
            results.append({"workers": workers, "utt_per_s": round(count / (time.perf_counter() - start), 2)})
            del batches  # shuts its workers down before the next setting
    return {"benchmark": "loader", "utterances": args.utterances, "seconds": args.seconds, "batch": args.batch,
            "batches": args.batches, "augment": args.augment, "threads": args.threads, "results": results,
            "cpus": os.cpu_count(), "torch": torch.__version__}


def _choices(kind, allowed=None):
    """argparse type for a comma-separated list (of `allowed` values, when given)."""
    def parse(text: str) -> list:
        values = [kind(v) for v in text.split(",") if v]
        bad = [v for v in values if allowed is not None and v not in allowed]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {allowed or kind.__name__}")
        return values
    return parse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hp.benchmarks.suite", description=__doc__)
    sub = parser.add_subparsers(dest="benchmark", required=True)
    p = sub.add_parser("compaction", help="dense vs compacted model: params, MACs, CPU latency, parity")
    p.add_argument("--shape", choices=sorted(SHAPES), default="base-plus")
    p.add_argument("--sparsity", type=float, default=0.7)
    p.add_argument("--measure", choices=MEASURES, default="params", help="what --sparsity is a fraction of")
    p.add_argument("--seconds", type=float, default=4.0, help="utterance length (batch 1), also of the MAC measure")
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
    p = sub.add_parser("train", help="training steps of transformers' WavLM, hp dense, hp pruned: utt/s, peak memory")
    p.add_argument("--shape", choices=sorted(SHAPES), default="base-plus")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seconds", type=float, default=3.0, help="utterance length")
    p.add_argument("--steps", type=int, default=20, help="timed steps, after the warm-up steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="auto", help="auto: CUDA when present (bf16 autocast), else CPU (float32)")
    p.add_argument("--variants", type=_choices(str, VARIANTS), default=list(VARIANTS),
                   help=f"comma-separated, of {','.join(VARIANTS)}; each runs in its own process (the last two "
                        "only with --target)")
    p.add_argument("--target", type=float, default=None,
                   help="sparsity of the gates of pruned_target and pruned_target_masked (log_alpha drawn so)")
    p.add_argument("--rounds", type=int, default=3, help="each variant timed this many times in turn; the median")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true", help="print one JSON line (default: indented JSON)")
    p = sub.add_parser("train-compaction", help="a run with and without train-time compaction: step times, wall time")
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    p.add_argument("--sparsity", type=float, default=0.7)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=2.0, help="crop length")
    p.add_argument("--steps", type=int, default=40, help="optimiser steps (2 epochs of steps / 2)")
    p.add_argument("--switch", type=int, default=10, help="the step at which the gates freeze")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON line (default: indented JSON)")
    p = sub.add_parser("latency", help="saved task models timed side by side: params, MACs, CPU latency")
    p.add_argument("models", nargs="+", type=Path, help="directories of saved task models (models/<task>/compact)")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON line (default: indented JSON)")
    p = sub.add_parser("loader", help="training data path alone (decode, crop, MUSAN/RIR augmentation): utt/s")
    p.add_argument("--utterances", type=int, default=64, help="random-noise FLAC files, 4-8 s, in a temporary corpus")
    p.add_argument("--seconds", type=float, default=3.0, help="crop length")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=_choices(int), default=[0, 2], help="comma-separated DataLoader worker counts")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="augment every crop (MUSAN noise/music/babble, RIR)")
    p.add_argument("--batches", type=int, default=8, help="timed batches, after one warm-up batch")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the main process (workers use 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON line (default: indented JSON)")
    p = sub.add_parser("audio-check", help="the manifests stage's audio check, headers vs full decode: files/s")
    p.add_argument("--files", type=int, default=4000, help="(fewer than 2,048 are checked in one process)")
    p.add_argument("--seconds", type=float, default=4.0, help="mean file length (uniform in 0.5x-1.5x)")
    p.add_argument("--format", choices=("flac", "wav"), default="flac")
    p.add_argument("--processes", type=_choices(int), default=[1, 2], help="comma-separated process counts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON line (default: indented JSON)")
    corpus_scale.add_parser(sub)
    args = parser.parse_args(argv)
    result = {"compaction": compaction, "scoring": scoring, "train": train, "train-compaction": train_compaction,
              "latency": latency,
              "loader": loader,
              "audio-check": audio_check,
              "corpus-scale": corpus_scale.corpus_scale}[args.benchmark](args)
    json.dump(result, sys.stdout, indent=None if args.json else 2)
    print()


if __name__ == "__main__":
    main()
