"""export@<task>: the deployable bundle (ONNX included) and what compaction bought."""
from __future__ import annotations

from pathlib import Path

import torch

from hp.errors import ConfigError
from hp.export import Bundle, measure_costs
from hp.params import integer, positive, section
from hp.tasks import get_task
from hp.tasks.model import TaskModel
from hp.utils.files import write_json


def export(task: str, params: dict, compact_dir: Path, scores_dir: Path, out: Path, metrics_path: Path) -> dict:
    """The deployable bundle of the compact model (hp.export: weights, ONNX graph checked against PyTorch,
    scoring.json from the score stage's outputs) and what compaction bought: dense vs compact parameters, MACs,
    latency (PyTorch and onnxruntime on CPU; PyTorch on CUDA when present)."""
    cfg = section(params, "export")
    seconds = positive(cfg.get("seconds"), "export.seconds")
    checked = cfg.get("parity_seconds")
    if not isinstance(checked, list) or not checked:
        raise ConfigError(f"params.yaml: export.parity_seconds must be a list of lengths in seconds, got {checked!r}")
    checked = [positive(s, "export.parity_seconds") for s in checked]
    tolerance = positive(cfg.get("tolerance"), "export.tolerance")
    repeats = integer(cfg.get("repeats"), "export.repeats", minimum=1)
    threads = integer(cfg.get("threads"), "export.threads", minimum=1, nullable=True)
    if threads is not None:
        torch.set_num_threads(threads)
    scoring = get_task(task).scoring(scores_dir)
    bundle, parity = Bundle.write(TaskModel.load(compact_dir).eval(), scoring, out, checked, tolerance)
    result = {**measure_costs(bundle, seconds, repeats, threads),
              "onnx": {"bytes": (out / "model.onnx").stat().st_size, "parity": parity, "parity_seconds": checked,
                       "tolerance": tolerance}}
    write_json(metrics_path, result)
    return result
