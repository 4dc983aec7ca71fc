"""score@<task>: metrics of the compact model, its scores in other toolkits' formats, DET points."""
from __future__ import annotations

import json
from pathlib import Path

from hp.data.manifest import write_parquet
from hp.params import ScoreConfig, runtime, section, typed
from hp.score import det_table
from hp.tasks import TASKS, get_task
from hp.tasks.model import TaskModel
from hp.utils.files import atomic_dir, atomic_path, write_json


def score(task: str, params: dict, model_dir: Path, manifests_dir: Path, compact_metrics: Path,
          metrics_path: Path, det_path: Path, scores_dir: Path) -> dict:
    """Scores of the compact model on each SV trial list, or on the CM dev and eval splits; metrics JSON and
    DET points (SV: the first list's final scores; CM: eval's LLRs).

    `scores_dir` receives every score (scores.parquet) and the final ones in other toolkits' formats: per SV
    list `<list>.txt` in WeSpeaker's score-file format; for CM `dev.txt` and `eval.txt` (calibrated LLRs) as
    the ASVspoof5 evaluation package reads them, and the dev-fitted calibration (calibration.json).
    """
    shared = {key: value for key, value in section(params, "score").items() if key not in TASKS}
    cfg, workers = typed(ScoreConfig, shared, "score"), runtime(params).num_workers
    spec = get_task(task)
    settings = spec.score_settings(params)  # checked before any work
    compact_info = json.loads(Path(compact_metrics).read_text())
    model = TaskModel.load(model_dir).eval()
    table, task_metrics, exports, (scores, labels) = spec.score(model, manifests_dir, cfg.batch_seconds, workers,
                                                                settings)
    with atomic_dir(scores_dir) as tmp:
        write_parquet(table, tmp / "scores.parquet")
        for name, write in exports.items():
            write(tmp / name)
    det = det_table(scores, labels)
    with atomic_path(det_path) as tmp:
        det.to_csv(tmp, index=False)
    result = {"task": task, "pretrained": section(params, f"model.pretrained.{task}"),
              **{k: v for k, v in compact_info.items() if k != "structure"}, **task_metrics}
    write_json(metrics_path, result)
    return result
