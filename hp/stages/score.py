"""score@<task>: metrics of the compact model, its scores in other toolkits' formats, DET points."""
from __future__ import annotations

import json
from pathlib import Path

from hp.data.manifest import write_parquet
from hp.evaluation.scoring import det_table
from hp.params import ScoreConfig, model_config, runtime, score_config, section
from hp.tasks import get_task
from hp.tasks.task_model import TaskModel
from hp.utils import distributed
from hp.utils.files import atomic_dir, atomic_path, write_json
from hp.utils.timing import timed


def check(task: str, params: dict) -> tuple[ScoreConfig, dict]:
    """Every key the stage declares (model.pretrained.<task>, score's own keys, score.<task>), checked before any
    work: the score settings shared by the tasks and this task's own."""
    model_config(params).source(task)
    return score_config(params), get_task(task).score_settings(params)


def score(task: str, params: dict, model_dir: Path, manifests_dir: Path, compact_metrics: Path,
          metrics_path: Path, det_path: Path, scores_dir: Path) -> dict | None:
    """Scores of the compact model on each SV trial list, or on the CM dev and eval splits; metrics JSON and
    DET points (SV: the first list's final scores; CM: eval's LLRs).

    `scores_dir` receives every score (scores.parquet) and the final ones in other toolkits' formats: per SV
    list `<list>.txt` in WeSpeaker's score-file format; for CM `dev.txt` and `eval.txt` (calibrated LLRs) as
    the ASVspoof5 evaluation package reads them, and the dev-fitted calibration (calibration.json).

    Under torchrun (runtime.nproc_per_node > 1) the ranks share the embedding out and rank 0 alone scores the
    trials and writes; the others return None.
    """
    (cfg, settings), run, spec = check(task, params), runtime(params), get_task(task)
    compact_info = json.loads(Path(compact_metrics).read_text())
    distributed.set_threads(run.threads)
    device = distributed.device(run.device)
    distributed.init(device)  # under torchrun: each rank embeds a share of the utterances, and gets them all
    model = TaskModel.load(model_dir).eval().to(device)
    scored = spec.score(model, manifests_dir, cfg.batch_seconds, run.num_workers, settings, cfg.bootstrap)
    if scored is None:  # a rank other than 0: it embedded its share, rank 0 scores and writes
        return None
    table, task_metrics, exports, (scores, labels) = scored
    with timed("write scores", len(table)), atomic_dir(scores_dir) as tmp:
        write_parquet(table, tmp / "scores.parquet")
        for name, write in exports.items():
            write(tmp / name)
    with timed("DET", len(scores)):
        det = det_table(scores, labels)
    with atomic_path(det_path) as tmp:
        det.to_csv(tmp, index=False)
    result = {"task": task, "pretrained": section(params, f"model.pretrained.{task}"),
              **{k: v for k, v in compact_info.items() if k != "structure"}, **task_metrics}
    write_json(metrics_path, result)
    return result
