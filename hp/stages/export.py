"""export@<task>: the deployable bundle (ONNX included) and what compaction bought."""
from __future__ import annotations

from pathlib import Path

import torch

from hp.deploy.export import Bundle, measure_costs
from hp.params import ExportConfig, section, typed
from hp.tasks import get_task
from hp.tasks.task_model import TaskModel
from hp.utils.files import write_json


def check(task: str, params: dict) -> ExportConfig:
    """The export group, checked before any work."""
    return typed(ExportConfig, section(params, "export"), "export")


def export(task: str, params: dict, compact_dir: Path, scores_dir: Path, out: Path, metrics_path: Path) -> dict:
    """The deployable bundle of the compact model (hp.deploy.export: weights, ONNX graph checked against PyTorch,
    scoring.json from the score stage's outputs) and what compaction bought: dense vs compact parameters, MACs,
    latency (PyTorch and onnxruntime on CPU; PyTorch on CUDA when present)."""
    cfg = check(task, params)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    scoring = get_task(task).scoring(scores_dir)
    bundle, parity = Bundle.write(TaskModel.load(compact_dir).eval(), scoring, out, cfg.parity_seconds, cfg.tolerance,
                                  exporter=cfg.exporter)
    result = {**measure_costs(bundle, cfg.seconds, cfg.repeats, cfg.threads),
              "onnx": {"bytes": (out / "model.onnx").stat().st_size, "parity": parity,
                       "parity_seconds": cfg.parity_seconds, "tolerance": cfg.tolerance}}
    write_json(metrics_path, result)
    return result
