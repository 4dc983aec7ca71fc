"""export@<task>: the release folder (weights, fp32 and int8 ONNX, scoring.json, the model card, SHA256SUMS) and
what compaction and quantisation bought."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from hp.deploy.export import Bundle, measure_costs
from hp.deploy.release import FP32, INT8, OnnxModel
from hp.errors import ConfigError
from hp.params import ExportConfig, model_config, score_config, section, typed
from hp.tasks import get_task
from hp.tasks.task_model import TaskModel
from hp.utils.files import read_json, write_json


def check(task: str, params: dict) -> ExportConfig:
    """The groups the stage declares (export, the score settings of the test-set check, what the card names),
    checked before any work."""
    model_config(params).source(task)
    score_config(params)
    for key in (f"prepare.{task}.corpus", f"finetune.{task}"):
        section(params, key)
    return typed(ExportConfig, section(params, "export"), "export")


def calibration_batches(manifests: Path, utterances: int):
    """`utterances` training utterances spread evenly over the training manifest, one per batch (static int8's
    activation ranges come from them)."""
    import pandas as pd

    from hp.data.audio import read_audio

    paths = pd.read_parquet(manifests / "train.parquet", columns=["path"])["path"].tolist()
    for i in np.unique(np.linspace(0, len(paths) - 1, min(utterances, len(paths))).round().astype(int)):
        wave = read_audio(paths[i]).astype(np.float32)
        yield wave[None], np.array([len(wave)], dtype=np.int64)


def export(task: str, params: dict, compact_dir: Path, scores_dir: Path, manifests: Path, metrics_dir: Path,
           out: Path) -> dict:
    """The release folder of the compact model (hp.deploy.export.Bundle: weights, the ONNX graph checked against
    PyTorch, scoring.json from the score stage's outputs), with the int8 graph (hp.deploy.quantize), both graphs
    scored on the task's first test set as `python -m hp` scores (their EER side by side, with intervals), the
    model card (hp.deploy.card) and SHA256SUMS. Writes metrics/<task>/export.json: dense vs compact parameters,
    MACs and latency (PyTorch, onnxruntime fp32 and int8 on CPU; PyTorch on CUDA when present), int8's size,
    agreement with fp32 and test-set metrics."""
    from hp.deploy.card import CardInputs, model_card  # here: the report checks params through check() above
    from hp.deploy.quantize import agreement, quantize

    cfg, spec, scoring_cfg = check(task, params), get_task(task), score_config(params)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    scoring = spec.scoring(scores_dir)
    result: dict = {}

    def finish(bundle: Bundle) -> None:  # in the folder's temporary directory, before SHA256SUMS is written
        folder = bundle.directory
        quantize(folder / FP32, folder / INT8, cfg.int8,
                 calibration_batches(manifests, cfg.calibration_utterances) if cfg.int8 == "static" else ())
        graphs = {name: OnnxModel(folder / path, cfg.threads).run for name, path in (("fp32", FP32), ("int8", INT8))}
        tested, outputs = spec.score_exported(graphs, manifests, scoring, scoring_cfg.batch_seconds,
                                              scoring_cfg.bootstrap)
        costs = measure_costs(bundle, cfg.seconds, cfg.repeats, cfg.threads)
        latency = costs["compact"]["latency_ms"]
        int8_ms = latency.pop("onnxruntime_int8_cpu")
        result.update(costs, repeats=cfg.repeats, onnx={"bytes": (folder / FP32).stat().st_size},
                      int8={"method": cfg.int8, "bytes": (folder / INT8).stat().st_size, "latency_ms": int8_ms,
                            "latency_vs_fp32": round(int8_ms / latency["onnxruntime_cpu"], 3),
                            "agreement": agreement(outputs["fp32"], outputs["int8"])},
                      test_set=tested)
        (folder / "README.md").write_text(model_card(CardInputs(
            task=task, source=section(params, f"model.pretrained.{task}"),
            corpus=section(params, f"prepare.{task}.corpus"),
            scored=read_json(metrics_dir.parent / f"{task}.json", ConfigError),
            task_json=json.loads((folder / "task.json").read_text()), export=result,
            training=read_json(metrics_dir / "finetune.json", ConfigError),
            data=read_json(manifests / "summary.json", ConfigError), settings=section(params, f"finetune.{task}"))))

    _, parity = Bundle.write(TaskModel.load(compact_dir).eval(), scoring, out, cfg.parity_seconds, cfg.tolerance,
                             exporter=cfg.exporter, finish=finish)
    result["onnx"].update(parity=parity, parity_seconds=cfg.parity_seconds, tolerance=cfg.tolerance)
    write_json(metrics_dir / "export.json", result)
    return result
