"""The pipeline's library side: what each DVC stage does, given typed params and paths.

Stage scripts in stages/ only read params.yaml, call one function here and exit.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import torch

from hp.data import corpora, synth
from hp.data.interop import write_cm_scores, write_kaldi_dir, write_trial_scores
from hp.data.manifest import Validation, write_parquet
from hp.errors import ConfigError
from hp.model import SHAPES, WavLM, load_wavlm
from hp.params import flag, section, typed
from hp.score import cm_metrics, det_table, embed_utterances, sv_metrics, trial_indices
from hp.score_norm import score_trials
from hp.tasks import CM_LABELS, HeadConfig, TaskModel
from hp.train import LiveLogger, TrainConfig, seed_everything, train
from hp.utils.files import atomic_path, write_json

TINY = "tiny"


def prepare(task: str, params: dict, out: Path) -> dict:
    """Write the task's raw corpus (the built-in mini corpus) under `out`."""
    cfg = dict(section(params, f"prepare.{task}"))
    corpus = cfg.pop("corpus")
    if corpus != "mini":
        raise ConfigError(f"params.yaml: prepare.{task}.corpus {corpus!r} is not available yet; use 'mini'")
    writer = synth.write_sv_corpus if task == "sv" else synth.write_cm_corpus
    try:
        return writer(out, **cfg)
    except (TypeError, ValueError) as e:  # an unknown key or an out-of-range value
        raise ConfigError(f"params.yaml: prepare.{task}: {e}") from None


def manifests(task: str, params: dict, corpus: Path, out: Path) -> dict:
    """Parquet manifests of every split (and SV trials), validated against the audio."""
    cfg = section(params, "manifests")
    validation = Validation(min_seconds=float(cfg["min_seconds"]), drop_invalid=flag(cfg["drop_invalid"], "manifests.drop_invalid"))
    tables: dict[str, pd.DataFrame] = {}
    if task == "sv":
        tables["train"] = corpora.voxceleb_tree(corpus / "train" / "wav", "train", validation)
        tables["test"] = corpora.voxceleb_tree(corpus / "test" / "wav", "test", validation)
        tables["trials"] = corpora.trials_table(corpus / "test" / "trials.txt", tables["test"])
    else:
        for split, name in (("train", "train"), ("dev", "dev.track_1"), ("eval", "eval.track_1")):
            protocol = corpus / "protocols" / f"ASVspoof5.{name}.tsv"
            tables[split] = corpora.asvspoof5(protocol, corpus / "flac", split, validation)
    for name, table in tables.items():
        write_parquet(table, out / f"{name}.parquet")
        if task == "sv" and name != "trials":  # the same lists for Kaldi/WeSpeaker SV recipes
            write_kaldi_dir(table, out / "kaldi" / name)
    summary = {name: len(t) for name, t in tables.items()}
    summary["dropped"] = [{"path": p, "reason": r} for p, r in validation.dropped]
    write_json(out / "summary.json", summary)
    return summary


def pretrained_frontend(params: dict) -> WavLM:
    cfg = section(params, "model")
    units = tuple(cfg["prune_units"])
    if cfg["pretrained"] == TINY:
        torch.manual_seed(int(cfg["seed"]))
        return WavLM(SHAPES[TINY], prune_units=units)
    return load_wavlm(cfg["pretrained"], prune_units=units)


def finetune(task: str, params: dict, manifests_dir: Path, out: Path, live_dir: Path, metrics_path: Path) -> dict:
    group = dict(section(params, f"finetune.{task}"))
    head = typed(HeadConfig, group.pop("head", {}), f"finetune.{task}.head")
    cfg = typed(TrainConfig, group, f"finetune.{task}", target_sparsity=float(params["target_sparsity"]))
    table = pd.read_parquet(manifests_dir / "train.parquet")
    labels = sorted(table["label"].unique()) if task == "sv" else list(CM_LABELS)
    seed_everything(cfg.seed)
    model = TaskModel(task, pretrained_frontend(params), labels, head)
    logger = LiveLogger(str(live_dir))
    start = time.time()
    run = train(model, table, cfg, logger)
    logger.close()
    model.cpu().save(out)
    result = {"train_seconds": round(time.time() - start, 1),
              "expected_sparsity": model.frontend.expected_sparsity().item(),
              "deterministic_sparsity": model.frontend.deterministic_sparsity(),
              **run, "utterances": len(table), "classes": len(labels)}
    write_json(metrics_path, result)
    return result


def compact(params: dict, finetuned: Path, out: Path, metrics_path: Path) -> dict:
    """Physically prune the fine-tuned model; record dense vs compact size and the structure."""
    model = TaskModel.load(finetuned).eval()
    small = model.compacted()
    small.save(out)
    dense = model.frontend.dense_num_params
    result = {"target_sparsity": float(params["target_sparsity"]), "params_dense": dense,
              "params_compact": small.frontend.num_params(),
              "achieved_sparsity": 1 - small.frontend.num_params() / dense,
              "structure": small.frontend.structure.to_dict()}
    write_json(metrics_path, result)
    return result


def score(task: str, params: dict, model_dir: Path, manifests_dir: Path, compact_metrics: Path,
          metrics_path: Path, det_path: Path, scores_path: Path, export_path: Path) -> dict:
    """Scores of the compact model on the test trials (SV) or eval split (CM); metrics JSON and DET points.

    SV: cosine scores (after subtracting the training set's mean embedding, if asked) and, with
    `score.sv.asnorm_top_n` set, AS-normed scores against the training speakers; the top-level metrics and the
    DET points are the raw scores', the AS-normed ones sit under "asnorm".
    `scores_path` (Parquet) holds every score; `export_path` the final ones in another toolkit's format:
    SV in WeSpeaker's score-file format (AS-normed when AS-norm is on), CM in the ASVspoof5 evaluation
    package's (uncalibrated bona fide - spoof logit differences).
    """
    batch_seconds = float(section(params, "score.batch_seconds"))
    if task == "sv":  # check the params before any work
        cfg = section(params, "score.sv")
        top_n = cfg["asnorm_top_n"]
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
            raise ConfigError(f"params.yaml: score.sv.asnorm_top_n must be a positive integer or null, got {top_n!r}")
        mean_subtraction = flag(cfg["mean_subtraction"], "score.sv.mean_subtraction")
    compact_info = json.loads(Path(compact_metrics).read_text())
    model = TaskModel.load(model_dir).eval()
    if task == "sv":
        test = pd.read_parquet(manifests_dir / "test.parquet")
        trials = pd.read_parquet(manifests_dir / "trials.parquet")
        train = pd.read_parquet(manifests_dir / "train.parquet")
        enroll, test_idx = trial_indices(test["utt"].tolist(), trials)
        scored = score_trials(embed_utterances(model, test, batch_seconds), enroll, test_idx,
                              embed_utterances(model, train, batch_seconds), train["speaker"].to_numpy(),
                              mean_subtraction, top_n)
        scores, labels = scored["raw"], trials["label"].to_numpy()
        task_metrics = sv_metrics(scores, labels)
        table = trials.assign(score=scores)
        if "asnorm" in scored:
            task_metrics["asnorm"] = sv_metrics(scored["asnorm"], labels)
            task_metrics["asnorm_top_n"] = min(top_n, train["speaker"].nunique())
            table = table.assign(score_asnorm=scored["asnorm"])
        write_trial_scores(trials, scored.get("asnorm", scores), export_path)
    else:
        evaluation = pd.read_parquet(manifests_dir / "eval.parquet")
        embeddings = embed_utterances(model, evaluation, batch_seconds)
        with torch.inference_mode():
            scores = model.cm_scores(torch.from_numpy(embeddings)).numpy()
        labels = (evaluation["label"] == "bonafide").to_numpy().astype(int)
        task_metrics = cm_metrics(scores, labels)
        table = evaluation[["utt", "label", "attack"]].assign(score=scores)
        write_cm_scores(evaluation["utt"], scores, export_path)
    write_parquet(table, scores_path)
    det = det_table(scores, labels)
    with atomic_path(det_path) as tmp:
        det.to_csv(tmp, index=False)
    result = {"task": task, "pretrained": section(params, "model.pretrained"),
              **{k: v for k, v in compact_info.items() if k != "structure"}, **task_metrics,
              "trials" if task == "sv" else "utterances": int(len(labels))}
    write_json(metrics_path, result)
    return result
