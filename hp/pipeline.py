"""The pipeline's library side: what each DVC stage does, given typed params and paths.

Stage scripts in stages/ only read params.yaml, call one function here and exit.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import pandas as pd
import torch

from hp.data import corpora, synth, voxceleb
from hp.data.augment import AugmentConfig, Augmenter, musan_table, rir_table
from hp.data.interop import write_cm_scores, write_kaldi_dir, write_trial_scores
from hp.data.manifest import Validation, write_parquet
from hp.errors import ConfigError
from hp.model import SHAPES, WavLM, load_wavlm
from hp.params import flag, section, typed
from hp.score import cm_metrics, det_table, embed_utterances, score_sv
from hp.tasks import CM_LABELS, HeadConfig, TaskModel
from hp.train import LiveLogger, TrainConfig, seed_everything, train
from hp.utils.files import atomic_dir, atomic_path, write_json

TINY = "tiny"


def prepare(task: str, params: dict, out: Path) -> dict:
    """Write the task's raw corpus (the built-in mini corpus) under `out`, or for SV on VoxCeleb, where it is."""
    cfg = dict(section(params, f"prepare.{task}"))
    if task == "sv":
        return _prepare_sv(cfg, out)
    corpus = cfg.pop("corpus")
    if corpus != "mini":
        raise ConfigError(f"params.yaml: prepare.{task}.corpus {corpus!r} is not available yet; use 'mini'")
    return _synthesise(synth.write_cm_corpus, out, cfg, f"prepare.{task}")


def _synthesise(writer, out: Path, cfg: dict, where: str) -> dict:
    """Write a mini corpus; an unknown key or an out-of-range value is named by its params.yaml group."""
    try:
        return writer(out, **cfg)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"params.yaml: {where}: {e}") from None


def _prepare_sv(cfg: dict, out: Path) -> dict:
    """mini: synthesise the corpus in VoxCeleb's layout; voxceleb: check the trees. Either way corpus.json
    says where the data is, and the manifests stage reads only that."""
    corpus, mini = cfg.pop("corpus"), cfg.pop("mini", None)
    for key in ("trials", "train_on"):
        if not isinstance(cfg.get(key), list):
            raise ConfigError(f"params.yaml: prepare.sv.{key} must be a list, got {cfg.get(key)!r}")
        cfg[key] = tuple(cfg[key])
    source = typed(voxceleb.SVSource, cfg, "prepare.sv")
    source.check("prepare.sv")
    here = Path.cwd()
    if corpus == "voxceleb":
        if source.voxceleb1_dir is None:
            raise ConfigError("params.yaml: prepare.sv.voxceleb1_dir is null; corpus voxceleb needs it")
        if "voxceleb2" in source.train_on and source.voxceleb2_dir is None:
            raise ConfigError("params.yaml: prepare.sv.voxceleb2_dir is null but train_on includes voxceleb2")
        source = source.resolved(here)
        source.check_paths()
        with atomic_dir(out) as tmp:
            source.write(tmp / "corpus.json")
        return {"corpus": corpus, **asdict(source)}
    if corpus != "mini":
        raise ConfigError(f"params.yaml: prepare.sv.corpus must be 'mini' or 'voxceleb', got {corpus!r}")
    for key in ("voxceleb1_dir", "voxceleb2_dir"):  # a set path would be ignored: say so instead
        if getattr(source, key) is not None:
            raise ConfigError(f"params.yaml: prepare.sv.{key} is set but corpus is 'mini'; set corpus: voxceleb")
    if source.trials != ("O",) or source.train_on != ("voxceleb2",):
        raise ConfigError("params.yaml: the mini corpus has one trial list (O) and one training set (voxceleb2); "
                          "set prepare.sv.trials: [O] and train_on: [voxceleb2]")
    if not isinstance(mini, dict):
        raise ConfigError("params.yaml: prepare.sv.mini must be a mapping of the mini corpus's settings")
    summary = _synthesise(synth.write_sv_corpus, out, mini, "prepare.sv.mini")
    # MUSAN / RIRS_NOISES as given (made absolute); the corpus itself relative to corpus.json
    source = replace(source.resolved(here), voxceleb1_dir=synth.SV_DIRS["test"], voxceleb2_dir=synth.SV_DIRS["train"])
    source.write(out / "corpus.json")
    return summary


def manifests(task: str, params: dict, corpus: Path, out: Path) -> dict:
    """Parquet manifests of every split (SV: and the trial lists, MUSAN/RIR lists), validated against the audio."""
    cfg = section(params, "manifests")
    validation = Validation(min_seconds=float(cfg["min_seconds"]),
                            drop_invalid=flag(cfg["drop_invalid"], "manifests.drop_invalid"))
    if task == "sv":
        source = voxceleb.SVSource.read(corpus / "corpus.json")
        tables = voxceleb.sv_tables(source, validation)
        if source.musan_dir is not None:
            tables["musan"] = musan_table(source.musan_dir)
        if source.rirs_dir is not None:
            tables["rirs"] = rir_table(source.rirs_dir)
    else:
        tables = {}
        for split, name in (("train", "train"), ("dev", "dev.track_1"), ("eval", "eval.track_1")):
            protocol = corpus / "protocols" / f"ASVspoof5.{name}.tsv"
            tables[split] = corpora.asvspoof5(protocol, corpus / "flac", split, validation)
    for name, table in tables.items():
        write_parquet(table, out / f"{name}.parquet")
        if task == "sv" and name in ("train", "test"):  # the same lists for Kaldi/WeSpeaker SV recipes
            write_kaldi_dir(table, out / "kaldi" / name)
    summary = {name: len(t) for name, t in tables.items()}
    if task == "sv":
        summary["trials_per_list"] = tables["trials"]["list"].value_counts(sort=False).to_dict()
    summary["dropped"] = [{"path": p, "reason": r} for p, r in validation.dropped]
    write_json(out / "summary.json", summary)
    return summary


def pretrained_frontend(params: dict, prune: bool = True) -> WavLM:
    """The pretrained WavLM of `model.pretrained`, with gates on `model.prune_units` (none if not `prune`)."""
    cfg = section(params, "model")
    units = tuple(cfg["prune_units"])
    if cfg["pretrained"] != TINY:
        return load_wavlm(cfg["pretrained"], prune_units=units if prune else ())
    torch.manual_seed(int(cfg["seed"]))
    model = WavLM(SHAPES[TINY], prune_units=units)  # the gates' initialisation draws from the same generator
    if prune:
        return model
    dense = WavLM(SHAPES[TINY], prune_units=())  # so copy the weights: both phases must see the same random front end
    missing, _ = dense.load_state_dict(model.state_dict(), strict=False)
    assert not missing, missing
    return dense


def _training_setup(task: str, params: dict, stage: str, manifests_dir: Path, **extra):
    """The typed config, head config, training table, labels and augmentation of `stage` (warmup/finetune)."""
    group = dict(section(params, f"{stage}.{task}"))
    head_group = section(params, f"finetune.{task}.head")  # one head for both phases
    group.pop("head", None)
    head = typed(HeadConfig, head_group, f"finetune.{task}.head")
    cfg = typed(TrainConfig, group, f"{stage}.{task}", **extra)
    table = pd.read_parquet(manifests_dir / "train.parquet")
    labels = sorted(table["label"].unique()) if task == "sv" else list(CM_LABELS)
    augmenter = None
    tables = {name: manifests_dir / f"{name}.parquet" for name in ("musan", "rirs")}
    if cfg.aug_prob > 0 and any(path.is_file() for path in tables.values()):
        noise, rirs = (pd.read_parquet(path) if path.is_file() else None for path in tables.values())
        augmenter = Augmenter(noise, rirs, AugmentConfig(prob=cfg.aug_prob))
    return cfg, head, table, labels, augmenter


def warmup(task: str, params: dict, manifests_dir: Path, out: Path, live_dir: Path, metrics_path: Path) -> dict:
    """Phase 1 (optional): train the back-end and loss on the frozen, unpruned front end.

    `out` receives the head weights the finetune stage starts from; with `epochs: 0` only head.json, saying
    that the phase was skipped (the finetune stage then starts from a fresh head).
    """
    group = section(params, f"warmup.{task}")
    if group.get("epochs") == 0:
        with atomic_dir(out) as tmp:
            write_json(tmp / "head.json", {"epochs": 0})
        write_json(live_dir / "metrics.json", {"epochs": 0})  # no curves; git keeps the (uncached) output
        result = {"epochs": 0}
    else:
        cfg, head, table, labels, augmenter = _training_setup(task, params, "warmup", manifests_dir)
        seed_everything(cfg.seed)
        model = TaskModel(task, pretrained_frontend(params, prune=False), labels, head).freeze_frontend()
        logger = LiveLogger(str(live_dir))
        start = time.time()
        run = train(model, table, cfg, logger, augmenter)
        logger.close()
        model.cpu().save_head(out, {"epochs": cfg.epochs})
        result = {"train_seconds": round(time.time() - start, 1), "epochs": cfg.epochs, **run,
                  "augmentation": augmenter is not None, "utterances": len(table), "classes": len(labels)}
    write_json(metrics_path, result)
    return result


def finetune(task: str, params: dict, manifests_dir: Path, warmup_dir: Path, out: Path, live_dir: Path,
             metrics_path: Path) -> dict:
    """Phase 2: joint pruning + fine-tuning, from the warm-up's head when there was a warm-up."""
    cfg, head, table, labels, augmenter = _training_setup(task, params, "finetune", manifests_dir,
                                                        target_sparsity=float(params["target_sparsity"]))
    seed_everything(cfg.seed)
    model = TaskModel(task, pretrained_frontend(params), labels, head)
    if (warmup_dir / "head.safetensors").is_file():
        model.load_head(warmup_dir)
    logger = LiveLogger(str(live_dir))
    start = time.time()
    run = train(model, table, cfg, logger, augmenter)
    logger.close()
    model.cpu().save(out)
    result = {"train_seconds": round(time.time() - start, 1),
              "expected_sparsity": model.frontend.expected_sparsity().item(),
              "deterministic_sparsity": model.frontend.deterministic_sparsity(),
              **run, "augmentation": augmenter is not None, "utterances": len(table), "classes": len(labels)}
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
          metrics_path: Path, det_path: Path, scores_dir: Path) -> dict:
    """Scores of the compact model on each SV trial list, or on the CM eval split; metrics JSON and DET points.

    SV (hp.score.score_sv): cosine, AS-norm and QMF scores as `score.sv` asks, metrics per trial list; the
    DET points are the first list's final scores (the last kind computed). `scores_dir` receives every score
    (scores.parquet) and the final ones in another toolkit's format: per SV list `<list>.txt` in WeSpeaker's
    score-file format, for CM `eval.txt` as the ASVspoof5 evaluation package reads it (uncalibrated bona fide
    - spoof logit differences).
    """
    batch_seconds = float(section(params, "score.batch_seconds"))
    if task == "sv":  # check the params before any work
        counts = {key: section(params, f"score.sv.{key}") for key in ("asnorm_top_n", "qmf_trials")}
        for key, value in counts.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"params.yaml: score.sv.{key} must be a positive integer or null, got {value!r}")
        qmf_seed = section(params, "score.sv.qmf_seed")
        if isinstance(qmf_seed, bool) or not isinstance(qmf_seed, int):
            raise ConfigError(f"params.yaml: score.sv.qmf_seed must be an integer, got {qmf_seed!r}")
        mean_subtraction = flag(section(params, "score.sv.mean_subtraction"), "score.sv.mean_subtraction")
    compact_info = json.loads(Path(compact_metrics).read_text())
    model = TaskModel.load(model_dir).eval()
    exports = {}
    if task == "sv":
        trials = pd.read_parquet(manifests_dir / "trials.parquet")
        train = pd.read_parquet(manifests_dir / "train.parquet")
        table, task_metrics = score_sv(model, pd.read_parquet(manifests_dir / "test.parquet"), trials, train,
                                       batch_seconds, mean_subtraction, counts["asnorm_top_n"],
                                       counts["qmf_trials"], qmf_seed)
        final = next(f"score_{kind}" for kind in ("qmf", "asnorm", "cosine") if f"score_{kind}" in table)
        for name, rows in table.groupby("list", sort=False):
            exports[f"{name}.txt"] = partial(write_trial_scores, rows, rows[final].to_numpy())
        first = table[table["list"] == table["list"].iat[0]]
        scores, labels = first[final].to_numpy(), first["label"].to_numpy()
        if counts["asnorm_top_n"] is not None:
            task_metrics["asnorm_top_n"] = min(counts["asnorm_top_n"], train["speaker"].nunique())
        task_metrics.update(qmf_trials=counts["qmf_trials"], det=f"{table['list'].iat[0]} {final}")
    else:
        evaluation = pd.read_parquet(manifests_dir / "eval.parquet")
        embeddings = embed_utterances(model, evaluation, batch_seconds)
        with torch.inference_mode():
            scores = model.cm_scores(torch.from_numpy(embeddings)).numpy()
        labels = (evaluation["label"] == "bonafide").to_numpy().astype(int)
        task_metrics = {**cm_metrics(scores, labels), "utterances": int(len(labels))}
        table = evaluation[["utt", "label", "attack"]].assign(score=scores)
        exports["eval.txt"] = partial(write_cm_scores, evaluation["utt"], scores)
    with atomic_dir(scores_dir) as tmp:
        write_parquet(table, tmp / "scores.parquet")
        for name, write in exports.items():
            write(tmp / name)
    det = det_table(scores, labels)
    with atomic_path(det_path) as tmp:
        det.to_csv(tmp, index=False)
    result = {"task": task, "pretrained": section(params, "model.pretrained"),
              **{k: v for k, v in compact_info.items() if k != "structure"}, **task_metrics}
    write_json(metrics_path, result)
    return result
