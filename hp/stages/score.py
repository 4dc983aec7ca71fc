"""score@<task>: metrics of the compact model, its scores in other toolkits' formats, DET points."""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pandas as pd

from hp.baselines import score_ltas
from hp.data.interop import write_cm_scores, write_trial_scores
from hp.data.manifest import write_parquet
from hp.errors import ConfigError
from hp.params import flag, integer, section
from hp.score import det_table, score_cm, score_sv
from hp.tasks import TaskModel
from hp.utils.files import atomic_dir, atomic_path, write_json


def score(task: str, params: dict, model_dir: Path, manifests_dir: Path, compact_metrics: Path,
          metrics_path: Path, det_path: Path, scores_dir: Path) -> dict:
    """Scores of the compact model on each SV trial list, or on the CM dev and eval splits; metrics JSON and
    DET points (SV: the first list's final scores; CM: eval's LLRs).

    `scores_dir` receives every score (scores.parquet) and the final ones in other toolkits' formats: per SV
    list `<list>.txt` in WeSpeaker's score-file format; for CM `dev.txt` and `eval.txt` (calibrated LLRs) as
    the ASVspoof5 evaluation package reads them, and the dev-fitted calibration (calibration.json).
    """
    batch_seconds = float(section(params, "score.batch_seconds"))
    workers = integer(section(params, "score").get("num_workers", 0), "score.num_workers", minimum=0)
    run = _score_sv if task == "sv" else _score_cm
    settings = (_sv_score_settings if task == "sv" else _cm_score_settings)(params)  # checked before any work
    compact_info = json.loads(Path(compact_metrics).read_text())
    model = TaskModel.load(model_dir).eval()
    table, task_metrics, exports, (scores, labels) = run(model, manifests_dir, batch_seconds, workers, **settings)
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


def _sv_score_settings(params: dict) -> dict:
    counts = {key: integer(section(params, f"score.sv.{key}"), f"score.sv.{key}", minimum=1, nullable=True)
              for key in ("asnorm_top_n", "qmf_trials")}
    qmf_seed = integer(section(params, "score.sv.qmf_seed"), "score.sv.qmf_seed")
    return {**counts, "qmf_seed": qmf_seed,
            "mean_subtraction": flag(section(params, "score.sv.mean_subtraction"), "score.sv.mean_subtraction")}


def _cm_score_settings(params: dict) -> dict:
    prior = section(params, "score.cm.calibration_prior")
    if prior is not None and (isinstance(prior, bool) or not isinstance(prior, (int, float)) or not 0 < prior < 1):
        raise ConfigError(f"params.yaml: score.cm.calibration_prior must be in (0, 1) or null, got {prior!r}")
    return {"prior": prior}


def _score_sv(model: TaskModel, manifests_dir: Path, batch_seconds: float, workers: int, asnorm_top_n: int | None,
              qmf_trials: int | None, qmf_seed: int, mean_subtraction: bool):
    """hp.score.score_sv on every trial list: cosine, AS-norm and QMF scores as `score.sv` asks; beside them the
    training-free hp.baselines.score_ltas (metrics under "baseline_ltas": {list: EER, minDCF})."""
    trials = pd.read_parquet(manifests_dir / "trials.parquet")
    train = pd.read_parquet(manifests_dir / "train.parquet")
    test = pd.read_parquet(manifests_dir / "test.parquet")
    table, task_metrics, cosine = score_sv(model, test, trials, train,
                                           batch_seconds, mean_subtraction, asnorm_top_n, qmf_trials, qmf_seed,
                                           workers)
    final = next(f"score_{kind}" for kind in ("qmf", "asnorm", "cosine") if f"score_{kind}" in table)
    exports = {f"{name}.txt": partial(write_trial_scores, rows, rows[final].to_numpy())
               for name, rows in table.groupby("list", sort=False)}
    exports["cosine.json"] = partial(write_json, obj=cosine)
    first = table[table["list"] == table["list"].iat[0]]
    if asnorm_top_n is not None:
        task_metrics["asnorm_top_n"] = min(asnorm_top_n, train["speaker"].nunique())
    task_metrics.update(qmf_trials=qmf_trials, det=f"{table['list'].iat[0]} {final}")
    task_metrics["baseline_ltas"] = score_ltas(test, trials, train, num_workers=workers)[1]
    return table, task_metrics, exports, (first[final].to_numpy(), first["label"].to_numpy())


def _score_cm(model: TaskModel, manifests_dir: Path, batch_seconds: float, workers: int, prior: float | None):
    """hp.score.score_cm: raw scores of dev and eval, LLRs calibrated on dev, metrics per split, attack, codec, and
    on the attacks the training manifest does not carry (unseen), pooled."""
    dev, evaluation = (pd.read_parquet(manifests_dir / f"{split}.parquet") for split in ("dev", "eval"))
    train = pd.read_parquet(manifests_dir / "train.parquet", columns=["label", "attack"])
    table, calibration, task_metrics = score_cm(model, dev, evaluation, batch_seconds, prior, workers, train=train)
    exports = {f"{split}.txt": partial(write_cm_scores, rows["utt"], rows["score_llr"].to_numpy())
               for split, rows in table.groupby("split", sort=False)}
    exports["calibration.json"] = partial(write_json, obj=calibration.to_dict())
    rows = table[table["split"] == "eval"]
    task_metrics.update(calibration=calibration.to_dict(), det="eval llr")
    return table, task_metrics, exports, (rows["score_llr"].to_numpy(), (rows["label"] == "bonafide").to_numpy())
