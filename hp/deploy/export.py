"""ONNX export of a compacted task model, and the bundle that off-the-shelf use (python -m hp) reads.

A bundle is one directory:
  model.safetensors, task.json  the compacted TaskModel, for PyTorch
  model.onnx                    the same computation. Inputs: wave [batch, samples] float32 (16 kHz mono,
                                zero-padded) and lengths [batch] int64 (samples). Outputs: embeddings [batch, E];
                                CM also scores (bona fide - spoof logit) and llrs (calibrated, natural log).
                                Batch and time are dynamic axes.
  scoring.json                  how outputs become decisions. SV: the training mean embedding subtracted before
                                cosine scoring (or null) and a cosine threshold; CM: the calibration (already
                                applied in `llrs`) and the Bayes threshold of the ASVspoof5 DCF.
  model.int8.onnx, README.md    added by the export stage (hp.stages.export): the int8 graph (hp.deploy.quantize)
                                and the model card (hp.deploy.card)
  SHA256SUMS                    every other file's checksum (hp.deploy.release), checked by every loader

onnx and onnxruntime are imported where they are used: the training stages must not need them (the GPU image
used for training has neither).
"""
from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hp.data.audio import SAMPLE_RATE, pad_batch
from hp.deploy.release import FP32, INT8, OnnxModel, verify, write_manifest
from hp.errors import CheckpointError, ExportError
from hp.evaluation.calibration import LinearCalibration
from hp.model import Frontend
from hp.tasks import get_task
from hp.tasks.task_model import TaskModel
from hp.utils.files import atomic_dir, read_json, write_json
from hp.utils.profiling import count_macs, hardware, median_latencies

CHECKED = ("embeddings", "scores")
OPSET = 18


class InferenceGraph(nn.Module):
    """What a user needs from a task model: the outputs its task names (hp.tasks: SV the embedding; CM also the
    raw score and its calibrated LLR, for which the graph holds the calibration)."""

    def __init__(self, model: TaskModel, calibration: LinearCalibration | None = None):
        super().__init__()
        self.spec = get_task(model.task)
        if self.spec.calibrated != (calibration is not None):
            raise ValueError(f"a {model.task} graph needs its calibration" if calibration is None
                             else f"a {model.task} graph takes no calibration")
        if calibration is not None and len(calibration.weights) != 1:
            raise ValueError(f"a calibration here maps one score, got {len(calibration.weights)} weights")
        self.model = model.eval()
        self.task = model.task
        if calibration is not None:
            self.register_buffer("llr_weight", torch.tensor(calibration.weights[0]))
            self.register_buffer("llr_bias", torch.tensor(calibration.bias))

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        embedding = self.model.embed(wave, lengths)
        calibration = (self.llr_weight, self.llr_bias) if self.spec.calibrated else None
        return self.spec.infer(self.model, embedding, calibration)

    @torch.inference_mode()
    def run(self, wave: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
        """The outputs by name, as the ONNX session returns them."""
        device = next(self.parameters()).device
        outputs = self(torch.from_numpy(wave).to(device), torch.from_numpy(lengths).to(device))
        return {name: out.float().cpu().numpy() for name, out in zip(self.spec.outputs, outputs)}


EXPORTERS = ("torchscript", "dynamo")


def export_onnx(graph: InferenceGraph, path: Path, opset: int = OPSET, exporter: str = "torchscript") -> None:
    """Write `graph` as one ONNX file with dynamic batch and time axes, atomically. `exporter`: torch's
    TorchScript tracer (~1 s for the mini model; deprecated by PyTorch since 2.9 but kept in 2.11-2.13) or
    torch.export (`dynamo`, the new default there: ~40x slower on the same model). Either graph is checked
    against PyTorch by the caller (Bundle.write's parity), so a trace that did not generalise cannot pass."""
    import onnx

    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    example = torch.randn(2, 2 * SAMPLE_RATE), torch.tensor([2 * SAMPLE_RATE, SAMPLE_RATE + 123])
    with torch.no_grad():  # not inference_mode: the cached tensors must be usable while tracing
        graph.cpu().eval()(*example)  # fills per-device index caches now, not as attributes set while tracing
    names = dict(input_names=["wave", "lengths"], output_names=list(graph.spec.outputs), opset_version=opset)
    if exporter == "dynamo":
        batch, samples = torch.export.Dim.DYNAMIC, torch.export.Dim.DYNAMIC
        proto = torch.onnx.export(graph, example, **names, dynamo=True, verbose=False,
                                  dynamic_shapes={"wave": {0: batch, 1: samples}, "lengths": {0: batch}}).model_proto
    else:
        axes = {"wave": {0: "batch", 1: "samples"}, "lengths": {0: "batch"},
                **{name: {0: "batch"} for name in graph.spec.outputs}}
        buffer = io.BytesIO()
        with warnings.catch_warnings():  # the deprecation notice, and tracer notes on shape checks it skips
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(graph, example, buffer, **names, dynamo=False, dynamic_axes=axes)
        proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        onnx.save(proto, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def random_batch(seconds: list[float], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-noise utterances of the given lengths, zero-padded into one batch."""
    rng = np.random.default_rng(seed)
    wave, lengths = pad_batch([0.1 * rng.standard_normal(round(s * SAMPLE_RATE)) for s in seconds])
    return wave.numpy(), lengths.numpy()


def parity(graph: InferenceGraph, onnx_graph: OnnxModel, seconds: list[float], seed: int = 0) -> dict[str, dict]:
    """ONNX vs PyTorch per output over one padded batch of all `seconds` and each length alone: the largest
    |difference| ("abs") and |difference| / (1 + |PyTorch|) ("scaled": absolute where values are small, relative
    where large, as CM's raw score is an unbounded logit difference that float32 resolves to ~1e-7 of itself)."""
    batches = [random_batch(seconds, seed)] + [random_batch([s], seed + 1 + i) for i, s in enumerate(seconds)]
    worst: dict[str, dict] = {}
    for wave, lengths in batches:
        ours, theirs = graph.run(wave, lengths), onnx_graph.run(wave, lengths)
        for name, value in ours.items():
            diff = np.abs(theirs[name].astype(np.float64) - value)
            w = worst.setdefault(name, {"abs": 0.0, "scaled": 0.0})
            w["abs"] = max(w["abs"], float(diff.max()))
            w["scaled"] = max(w["scaled"], float((diff / (1 + np.abs(value))).max()))
    return worst


@dataclass
class Bundle:
    """A compacted model ready to use: the PyTorch graph, the ONNX file and scoring.json's settings."""
    directory: Path
    graph: InferenceGraph
    scoring: dict

    @property
    def task(self) -> str:
        return self.graph.task

    @classmethod
    def write(cls, model: TaskModel, scoring: dict, out: Path, parity_seconds: list[float],
              tolerance: float = 1e-4, opset: int = OPSET, exporter: str = "torchscript",
              finish: Callable[[Bundle], None] | None = None) -> tuple[Bundle, dict]:
        """Save the model, export it to ONNX, check the ONNX graph against PyTorch on random utterances of
        `parity_seconds` (see parity), write scoring.json, call `finish` on the bundle (still in its temporary
        directory: the export stage adds the int8 graph and the card there) and list every file in SHA256SUMS;
        the directory appears complete or, when any step fails or the ONNX graph's scaled difference exceeds
        `tolerance`, not at all. Returns the bundle and the parity.
        `scoring`: SV {"mean", "threshold", "threshold_rule"}; CM {"calibration", "threshold", "threshold_rule"}."""
        graph = InferenceGraph(model, get_task(model.task).calibration(scoring))
        with atomic_dir(out) as tmp:
            model.save(tmp / "model")  # TaskModel.save writes a directory: lift its files into the bundle
            for f in (tmp / "model").iterdir():
                f.replace(tmp / f.name)
            (tmp / "model").rmdir()
            export_onnx(graph, tmp / FP32, opset, exporter)
            checked = parity(graph, OnnxModel(tmp / FP32), parity_seconds)
            for name in CHECKED:  # the network's outputs; llrs = w * scores + b only scales the scores' error
                if name in checked and not checked[name]["scaled"] <= tolerance:
                    raise ExportError(f"{out / FP32}: ONNX {name} differ from PyTorch's by "
                                      f"{checked[name]['scaled']:.3g} (scaled) on random utterances of "
                                      f"{parity_seconds} s, above the tolerance {tolerance:g}")
            write_json(tmp / "scoring.json", {"task": model.task, "sample_rate": SAMPLE_RATE, **scoring})
            if finish is not None:
                finish(cls(tmp, graph, scoring))
            write_manifest(tmp)
        return cls(Path(out), graph, scoring), checked

    @classmethod
    def load(cls, directory: str | Path) -> Bundle:
        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(f"{directory}: no such model directory (a bundle: models/<task>/export)")
        verify(directory)  # a file changed since export is refused before anything is read
        scoring = read_json(directory / "scoring.json", CheckpointError)
        model = TaskModel.load(directory)
        if scoring.get("task") != model.task:
            raise CheckpointError(f"{directory / 'scoring.json'}: task {scoring.get('task')!r} differs from "
                                  f"task.json's {model.task!r}")
        try:
            calibration = get_task(model.task).calibration(scoring)
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{directory / 'scoring.json'}: malformed calibration ({e})") from None
        return cls(directory, InferenceGraph(model, calibration), scoring)

    def runner(self, runtime: str = "torch", threads: int | None = None):
        """A callable (wave, lengths) -> outputs by name: PyTorch (`torch`), onnxruntime on the fp32 graph (`onnx`)
        or on the int8 one (`int8`)."""
        if runtime == "torch":
            return self.graph.run
        if runtime in ("onnx", "int8"):
            path = self.directory / (INT8 if runtime == "int8" else FP32)
            if not path.is_file():
                raise CheckpointError(f"{path}: missing; this bundle has no {runtime} graph (re-export it)")
            return OnnxModel(path, threads).run
        raise ValueError(f"runtime must be 'torch', 'onnx' or 'int8', got {runtime!r}")


def dense_counterpart(model: TaskModel) -> TaskModel:
    """The same task model over the unpruned front end of the same shape: what compaction is measured against.
    Its weights are a fresh initialisation (cost does not depend on them)."""
    frontend = Frontend(model.frontend.config, prune_units=())
    return TaskModel(model.task, frontend, model.labels, model.head_config).eval()


def _params(model: TaskModel) -> dict:
    """Front-end parameters (what sparsity counts) and those inference runs (the task's inference modules: front
    end, back-end and, for CM, the classifier whose logits give the score; SV's AAM head serves training only)."""
    used = get_task(model.task).inference_modules(model)
    return {"params": model.frontend.num_params(), "params_inference": sum(p.numel() for m in used
                                                                            for p in m.parameters())}


def measure_costs(bundle: Bundle, seconds: float, repeats: int, threads: int | None = None) -> dict:
    """Dense vs compact: parameters (front end; all that inference uses), multiply-accumulates and
    median latency of one `seconds`-long utterance (batch 1) through PyTorch on CPU, onnxruntime on CPU (compact
    only) and PyTorch on CUDA when present (float32 everywhere)."""
    compact_model = bundle.graph.model
    dense_model = dense_counterpart(compact_model)
    wave, lengths = random_batch([seconds])
    inputs = torch.from_numpy(wave), torch.from_numpy(lengths)
    out = {name: {**_params(m), "macs": count_macs(m.embed, *inputs), "latency_ms": {}}
           for name, m in (("dense", dense_model), ("compact", compact_model))}
    graphs = {"onnxruntime_cpu": OnnxModel(bundle.directory / FP32, threads)}
    if (bundle.directory / INT8).is_file():
        graphs["onnxruntime_int8_cpu"] = OnnxModel(bundle.directory / INT8, threads)
    dense_s, compact_s, *onnx_s = median_latencies(  # one call: every runtime timed alike, interleaved
        [lambda: dense_model.embed(*inputs), lambda: compact_model.embed(*inputs)]
        + [lambda g=g: g.run(wave, lengths) for g in graphs.values()], repeats, warmup=3)
    out["dense"]["latency_ms"]["torch_cpu"] = round(1e3 * dense_s, 3)
    out["compact"]["latency_ms"].update(torch_cpu=round(1e3 * compact_s, 3),
                                        **{name: round(1e3 * t, 3) for name, t in zip(graphs, onnx_s)})
    if torch.cuda.is_available():
        cuda = [copy.deepcopy(m).cuda() for m in (dense_model, compact_model)]
        on_gpu = tuple(t.cuda() for t in inputs)
        times = median_latencies([lambda m=m: m.embed(*on_gpu) for m in cuda], repeats, warmup=3,
                                 sync=torch.cuda.synchronize)
        for name, t in zip(("dense", "compact"), times):
            out[name]["latency_ms"]["torch_cuda"] = round(1e3 * t, 3)
    return {"input": {"batch": 1, "seconds": seconds}, **out,
            "speedup": {kind: round(out["dense"]["latency_ms"][kind] / out["compact"]["latency_ms"][kind], 3)
                        for kind in out["dense"]["latency_ms"]},
            "hardware": hardware()}
