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

from hp import distributed, metrics
from hp.baselines import score_ltas
from hp.checkpoint import Checkpoints, fingerprint
from hp.data import asvspoof, synth, voxceleb
from hp.data.augment import AugmentConfig, Augmenter, musan_table, rir_table
from hp.data.interop import write_cm_scores, write_kaldi_dir, write_trial_scores
from hp.data.manifest import Validation, write_parquet
from hp.data.source import AUGMENTATION_DIRS
from hp.errors import ConfigError
from hp.metrics import CM_C_FA, CM_C_MISS, CM_P_TARGET
from hp.export import Bundle, measure_costs
from hp.model import SHAPES, WavLM, load_wavlm
from hp.params import flag, integer, positive, section, typed
from hp.profile import hardware
from hp.score import det_table, score_cm, score_sv
from hp.tasks import CM_LABELS, HeadConfig, TaskModel, class_weights
from hp.train import LiveLogger, TrainConfig, seed_everything, train
from hp.utils.files import atomic_dir, atomic_path, read_json, write_json

TINY = "tiny"


def prepare(task: str, params: dict, out: Path) -> dict:
    """Write the built-in mini corpus under `out`, or check a released corpus; either way `out/corpus.json`
    says where the data is, and the manifests stage reads only that."""
    cfg = dict(section(params, f"prepare.{task}"))
    return _prepare_sv(cfg, out) if task == "sv" else _prepare_cm(cfg, out)


def _synthesise(writer, out: Path, cfg: dict, where: str) -> dict:
    """Write a mini corpus; an unknown key or an out-of-range value is named by its params.yaml group."""
    try:
        return writer(out, **cfg)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"params.yaml: {where}: {e}") from None


def _prepare_sv(cfg: dict, out: Path) -> dict:
    """mini: synthesise the corpus in VoxCeleb's layout; voxceleb: check the trees."""
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


def _prepare_cm(cfg: dict, out: Path) -> dict:
    """mini: synthesise the corpus in ASVspoof5's layout; asvspoof5 / asvspoof2019la: check the tree (only the
    chosen corpus's directory is read, so both may be set)."""
    corpus, mini = cfg.pop("corpus", None), cfg.pop("mini", None)
    if corpus != "mini" and corpus not in asvspoof.FORMATS:
        raise ConfigError(f"params.yaml: prepare.cm.corpus must be one of {['mini', *asvspoof.FORMATS]}, "
                          f"got {corpus!r}")
    dirs = {key: cfg.pop(key, None) for key in asvspoof.CORPUS_DIRS.values()}
    unknown = sorted(set(cfg) - set(AUGMENTATION_DIRS))
    if unknown:  # corpus_dir included: it is written from the corpus's own key
        raise ConfigError(f"params.yaml: unknown key prepare.cm.{unknown[0]}")
    source = typed(asvspoof.CMSource, {"corpus": "asvspoof5", "corpus_dir": ".", **cfg}, "prepare.cm")
    here = Path.cwd()
    if corpus != "mini":
        key = asvspoof.CORPUS_DIRS[corpus]
        if dirs[key] is None:
            raise ConfigError(f"params.yaml: prepare.cm.{key} is null; corpus {corpus} needs it")
        source = replace(source, corpus=corpus, corpus_dir=dirs[key]).resolved(here)
        source.check_paths()
        with atomic_dir(out) as tmp:
            source.write(tmp / "corpus.json")
        return asdict(source)
    if not isinstance(mini, dict):
        raise ConfigError("params.yaml: prepare.cm.mini must be a mapping of the mini corpus's settings")
    summary = _synthesise(synth.write_cm_corpus, out, mini, "prepare.cm.mini")
    replace(source.resolved(here), corpus_dir=".").write(out / "corpus.json")  # the corpus beside corpus.json
    return summary


def manifests(task: str, params: dict, corpus: Path, out: Path) -> dict:
    """Parquet manifests of every split (SV: and the trial lists, MUSAN/RIR lists), validated against the audio."""
    cfg = section(params, "manifests")
    validation = Validation(min_seconds=float(cfg["min_seconds"]),
                            drop_invalid=flag(cfg["drop_invalid"], "manifests.drop_invalid"))
    if task == "sv":
        source = voxceleb.SVSource.read(corpus / "corpus.json")
        tables = voxceleb.sv_tables(source, validation)
    else:
        source = asvspoof.CMSource.read(corpus / "corpus.json")
        tables = asvspoof.cm_tables(source, validation)
    if source.musan_dir is not None:
        tables["musan"] = musan_table(source.musan_dir)
    if source.rirs_dir is not None:
        tables["rirs"] = rir_table(source.rirs_dir)
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


def layerdrop(params: dict) -> float:
    """`model.layerdrop`: the LayerDrop probability training uses, whatever the checkpoint's config.json says
    (transformers' default is 0.1, the hub's Base+ config 0.05; the authors run every layer: 0)."""
    value = section(params, "model.layerdrop")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"params.yaml: model.layerdrop must be a probability in [0, 1], got {value!r}")
    return float(value)


def pretrained_frontend(params: dict, task: str, prune: bool = True) -> WavLM:
    """The pretrained WavLM of `model.pretrained.<task>`, with gates on `model.prune_units` (none if not `prune`)
    and the LayerDrop of `model.layerdrop` in place of its config's."""
    pretrained = section(params, f"model.pretrained.{task}")
    units = tuple(section(params, "model.prune_units"))
    drop = layerdrop(params)
    if pretrained != TINY:
        return load_wavlm(pretrained, prune_units=units if prune else (), layerdrop=drop)
    torch.manual_seed(int(section(params, "model.seed")))
    config = SHAPES[TINY].replace(layerdrop=drop)
    model = WavLM(config, prune_units=units)  # the gates' initialisation draws from the same generator
    if prune:
        return model
    dense = WavLM(config, prune_units=())  # so copy the weights: both phases must see the same random front end
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
    try:  # before the front end loads: TaskModel would fail the same way, later
        class_weights(head, task, labels)
    except ValueError as e:
        raise ConfigError(f"params.yaml: finetune.{task}.head: {e}") from None
    augmenter = None
    tables = {name: manifests_dir / f"{name}.parquet" for name in ("musan", "rirs")}
    if cfg.aug_prob > 0 and any(path.is_file() for path in tables.values()):
        noise, rirs = (pd.read_parquet(path) if path.is_file() else None for path in tables.values())
        augmenter = Augmenter(noise, rirs, AugmentConfig(prob=cfg.aug_prob))
    return cfg, head, table, labels, augmenter


def training_processes(params: dict, group: str) -> int:
    """`<group>.nproc_per_node` (1 when absent): how many processes a training stage runs on this node."""
    return integer(section(params, group).get("nproc_per_node", 1), f"{group}.nproc_per_node", minimum=1)


def _run_training(model: TaskModel, table: pd.DataFrame, cfg: TrainConfig, augmenter, live_dir: Path,
                  checkpoint_dir: Path) -> tuple[dict | None, Checkpoints]:
    """train() with checkpoints in `checkpoint_dir` (resumed when they are this run's) and, on rank 0 only,
    DVCLive curves. Returns what the run did (None on the other ranks, which write nothing) and the
    checkpoints, for the caller to clear once it has written the outputs."""
    checkpoints = Checkpoints(checkpoint_dir, fingerprint(cfg, table, model), cfg.checkpoint_every,
                              resume=cfg.resume == "auto")
    main = distributed.is_main()
    state = checkpoints.latest()
    logger = LiveLogger(str(live_dir), None if state is None else state["step"]) if main else None
    start = time.time()
    run = train(model, table, cfg, logger, augmenter, checkpoints)
    if not main:
        return None, checkpoints
    logger.close()
    device = distributed.device(cfg.device)
    return {"train_seconds": round(time.time() - start, 1), **run, "layerdrop": model.frontend.config.layerdrop,
            "processes": distributed.world_size(),
            "augmentation": augmenter is not None, "utterances": len(table),
            "hardware": {"device": device.type, **hardware(device)}}, checkpoints


def warmup(task: str, params: dict, manifests_dir: Path, out: Path, live_dir: Path, metrics_path: Path,
           checkpoint_dir: Path) -> dict | None:
    """Phase 1 (optional): train the back-end and loss on the frozen, unpruned front end.

    `out` receives the head weights the finetune stage starts from; with `epochs: 0` only head.json, saying
    that the phase was skipped (the finetune stage then starts from a fresh head). Under torchrun only rank 0
    writes (the others return None).
    """
    group = section(params, f"warmup.{task}")
    if group.get("epochs") == 0:
        with atomic_dir(out) as tmp:
            write_json(tmp / "head.json", {"epochs": 0})
        write_json(live_dir / "metrics.json", {"epochs": 0})  # no curves; git keeps the (uncached) output
        result, checkpoints = {"epochs": 0}, None
    else:
        cfg, head, table, labels, augmenter = _training_setup(task, params, "warmup", manifests_dir)
        seed_everything(cfg.seed)
        model = TaskModel(task, pretrained_frontend(params, task, prune=False), labels, head).freeze_frontend()
        run, checkpoints = _run_training(model, table, cfg, augmenter, live_dir, checkpoint_dir)
        if run is None:
            return None
        model.cpu().save_head(out, {"epochs": cfg.epochs})
        result = {"epochs": cfg.epochs, **run, "classes": len(labels)}
    write_json(metrics_path, result)
    if checkpoints is not None:
        checkpoints.clear()  # the outputs are written: nothing left to resume
    return result


def finetune(task: str, params: dict, manifests_dir: Path, warmup_dir: Path, out: Path, live_dir: Path,
             metrics_path: Path, checkpoint_dir: Path) -> dict | None:
    """Phase 2: joint pruning + fine-tuning, from the warm-up's head when there was a warm-up; at target_sparsity
    0 the dense front end, without gates, fine-tuned plainly. Under torchrun only rank 0 writes (the others
    return None)."""
    cfg, head, table, labels, augmenter = _training_setup(task, params, "finetune", manifests_dir,
                                                        target_sparsity=float(params["target_sparsity"]))
    seed_everything(cfg.seed)
    model = TaskModel(task, pretrained_frontend(params, task, prune=cfg.target_sparsity != 0), labels, head)
    if (warmup_dir / "head.safetensors").is_file():
        model.load_head(warmup_dir)
    run, checkpoints = _run_training(model, table, cfg, augmenter, live_dir, checkpoint_dir)
    if run is None:
        return None
    model.cpu().save(out)
    result = {"expected_sparsity": model.frontend.expected_sparsity().item(),  # no gates: 0
              "deterministic_sparsity": model.frontend.deterministic_sparsity(),
              "gates": bool(model.frontend.gates()), **run, "classes": len(labels)}
    write_json(metrics_path, result)
    checkpoints.clear()
    return result


def compact(params: dict, finetuned: Path, out: Path, metrics_path: Path) -> dict:
    """Physically prune the fine-tuned model (one without gates, the dense run, passes through unchanged); record
    dense vs compact size and the structure."""
    model = TaskModel.load(finetuned).eval()
    small = model.compacted() if model.frontend.gates() else model
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
    if task == "sv":
        scoring = read_json(scores_dir / "cosine.json", ConfigError)
    else:
        scoring = {"calibration": read_json(scores_dir / "calibration.json", ConfigError),
                   "threshold": metrics.bayes_threshold(CM_P_TARGET, CM_C_MISS, CM_C_FA),
                   "threshold_rule": "Bayes decision of the ASVspoof5 DCF (P_spoof 0.05, C_miss 1, C_fa 10)"}
    bundle, parity = Bundle.write(TaskModel.load(compact_dir).eval(), scoring, out, checked, tolerance)
    result = {**measure_costs(bundle, seconds, repeats, threads),
              "onnx": {"bytes": (out / "model.onnx").stat().st_size, "parity": parity, "parity_seconds": checked,
                       "tolerance": tolerance}}
    write_json(metrics_path, result)
    return result

