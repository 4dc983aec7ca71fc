"""What the pipeline wrote for each task, read from the workspace's fixed layout: its metrics, model, data summary,
DET points, training curves and scores."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

CURVES = ("task_loss", "expected_sparsity", "deterministic_sparsity", "target_sparsity", "lambda1", "lambda2", "lr")
GATE_CURVES = CURVES[1:6]  # logged only when the front end has gates (none at target_sparsity 0: the dense run)


@dataclass
class TaskOutputs:
    """What the pipeline wrote for one task, read from the workspace's fixed layout."""
    scored: dict  # metrics/<task>.json
    finetune: dict  # metrics/<task>/finetune.json
    export: dict  # metrics/<task>/export.json
    card: str  # models/<task>/export/README.md, the released folder's model card
    model: dict  # models/<task>/compact/task.json
    data: dict  # data/<task>/manifests/summary.json
    det: pd.DataFrame
    curves: pd.DataFrame
    scores: pd.DataFrame

    @classmethod
    def read(cls, root: Path, task: str) -> TaskOutputs:
        def load(path: str) -> dict:
            return json.loads((root / path).read_text())
        return cls(load(f"metrics/{task}.json"), load(f"metrics/{task}/finetune.json"),
                   load(f"metrics/{task}/export.json"), (root / "models" / task / "export" / "README.md").read_text(),
                   load(f"models/{task}/compact/task.json"),
                   load(f"data/{task}/manifests/summary.json"), pd.read_csv(root / "plots" / task / "det.csv"),
                   read_curves(root / "dvclive" / task), pd.read_parquet(root / "scores" / task / "scores.parquet"))


def read_curves(live_dir: Path) -> pd.DataFrame:
    """The DVCLive TSVs of one training run joined on step; a dense run (no gates) has no GATE_CURVES."""
    tsv = live_dir / "plots" / "metrics"
    frames = [pd.read_csv(tsv / f"{name}.tsv", sep="\t")[["step", name]]
              for name in CURVES if name not in GATE_CURVES or (tsv / f"{name}.tsv").is_file()]
    out = frames[0]
    for f in frames[1:]:
        out = out.merge(f, on="step")
    return out
