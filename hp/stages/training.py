"""What the two training stages (warmup, finetune) share: the front end, the typed configs, the run."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch

from hp.data.augment import AugmentConfig, Augmenter
from hp.errors import ConfigError
from hp.measure import PARAMS, Measure
from hp.model import SHAPES, Frontend, load_frontend
from hp.params import checked_keys, model_config, runtime, section, typed
from hp.tasks import get_task
from hp.tasks.task_model import HeadConfig, TaskModel
from hp.training.checkpoint import Checkpoints, fingerprint
from hp.training.config import TrainConfig
from hp.training.live_log import LiveLogger
from hp.training.loop import train
from hp.utils import distributed
from hp.utils.profiling import hardware

TINY = "tiny"


def pretrained_frontend(params: dict, task: str, prune: bool = True) -> Frontend:
    """The pretrained front end of `model.pretrained.<task>`, with gates on `model.prune_units` (none if not
    `prune`) and the LayerDrop of `model.layerdrop` in place of its config's (transformers' default is 0.1, the
    hub's Base+ config 0.05; the authors run every layer: 0)."""
    cfg = model_config(params)
    units, drop = tuple(cfg.prune_units), float(cfg.layerdrop)
    if cfg.source(task) != TINY:
        return load_frontend(cfg.source(task), prune_units=units if prune else (), layerdrop=drop)
    torch.manual_seed(cfg.seed)
    config = SHAPES[TINY].replace(layerdrop=drop)
    model = Frontend(config, prune_units=units)  # the gates' initialisation draws from the same generator
    if prune:
        return model
    dense = Frontend(config, prune_units=())  # so copy the weights: both phases must see the same random front end
    missing, _ = dense.load_state_dict(model.state_dict(), strict=False)
    assert not missing, missing
    return dense


def head_config(task: str, params: dict) -> HeadConfig:
    """The head (finetune.<task>.head, one head for both phases) typed, each key a head of these settings reads
    required, with the model and runtime groups checked too: what either training stage reads beside its group."""
    model_config(params).source(task)
    runtime(params)
    where = f"finetune.{task}.head"
    group = checked_keys(HeadConfig, section(params, where), where)
    return typed(HeadConfig, group, where, required=HeadConfig.keys_read(group, get_task(task).head_loss_keys))


def training_configs(task: str, params: dict, stage: str, target_sparsity: float = 0.0,
                     measure: Measure = PARAMS) -> tuple[TrainConfig, HeadConfig]:
    """`stage.task` (warmup/finetune; finetune's holds the head) typed, each key a run of these settings reads
    required, and head_config."""
    head = head_config(task, params)
    where = f"{stage}.{task}"
    group = section(params, where)
    if not isinstance(group, dict):
        raise ConfigError(f"params.yaml: {where} must be a mapping")
    group = {key: value for key, value in group.items() if (stage, key) != ("finetune", "head")}
    cfg = typed(TrainConfig, group, where, target_sparsity=target_sparsity, measure=measure,
                runtime=runtime(params),
                required=TrainConfig.read_only_by(group, target_sparsity, get_task(task).margin_loss))
    return cfg, head


def training_setup(task: str, params: dict, stage: str, manifests_dir: Path, target_sparsity: float = 0.0,
                   measure: Measure = PARAMS):
    """The typed config, head config, training table, labels and augmentation of `stage` (warmup/finetune), every
    key checked before any work."""
    cfg, head = training_configs(task, params, stage, target_sparsity, measure)
    spec = get_task(task)
    table = pd.read_parquet(manifests_dir / "train.parquet")
    labels = spec.labels(table)
    try:  # before the front end loads: TaskModel would fail the same way, later
        spec.check_head(head, labels)
    except ValueError as e:
        raise ConfigError(f"params.yaml: finetune.{task}.head: {e}") from None
    augmenter = None
    tables = {name: manifests_dir / f"{name}.parquet" for name in ("musan", "rirs")}
    if cfg.aug_prob > 0 and any(path.is_file() for path in tables.values()):
        noise, rirs = (pd.read_parquet(path) if path.is_file() else None for path in tables.values())
        augmenter = Augmenter(noise, rirs, AugmentConfig(prob=cfg.aug_prob))
    return cfg, head, table, labels, augmenter


def run_training(model: TaskModel, table: pd.DataFrame, cfg: TrainConfig, augmenter, live_dir: Path,
                  checkpoint_dir: Path) -> tuple[dict | None, Checkpoints]:
    """train() with checkpoints in `checkpoint_dir` (resumed when they are this run's) and, on rank 0 only,
    DVCLive curves, which replace `live_dir` only once the run has finished (a failed run leaves the last one's).
    Returns what the run did (None on the other ranks, which write nothing) and the
    checkpoints, for the caller to clear once it has written the outputs."""
    distributed.set_threads(cfg.runtime.threads)
    checkpoints = Checkpoints(checkpoint_dir, fingerprint(cfg, table, model), cfg.runtime.checkpoint_every,
                              resume=cfg.resume == "auto")
    main = distributed.is_main()
    state = checkpoints.latest()
    # the curves are staged beside the checkpoints and replace live_dir only when the run has finished
    resume_at = None if state is None else state["step"]
    logger = LiveLogger(live_dir, checkpoint_dir / "dvclive", resume_at) if main else None
    start = time.time()
    run = train(model, table, cfg, logger, augmenter, checkpoints)
    if not main:
        return None, checkpoints
    logger.close()
    device = distributed.device(cfg.runtime.device)
    return {"train_seconds": round(time.time() - start, 1), **run, "layerdrop": model.frontend.config.layerdrop,
            "processes": distributed.world_size(),
            "augmentation": augmenter is not None, "utterances": len(table),
            "hardware": {"device": device.type, **hardware(device)}}, checkpoints


def training_summary(result: dict) -> dict[str, str]:
    """The lines a warmup or finetune stage ends with (hp.stages.summary)."""
    if result.get("epochs") == 0 and "steps" not in result:
        return {"skipped": "epochs: 0 (the finetune stage starts from a fresh head)"}
    rows = {"steps": f"{result['steps']:,} in {result['train_seconds']:,} s on {result['hardware']['device']} "
                     f"({result['processes']} process{'es' if result['processes'] != 1 else ''})",
            "task loss": f"{result['final_task_loss']:.4f} at the last step (chance {result['chance_task_loss']:.4f})"}
    if result.get("gates"):
        rows["sparsity"] = (f"expected {result['expected_sparsity']:.4f}, deterministic "
                            f"{result['deterministic_sparsity']:.4f} ({result['target_measure']})")
        if result.get("gates_frozen_at_step") is not None:
            rows["gates frozen"] = f"at step {result['gates_frozen_at_step']:,}"
    if result.get("resumed_at_step") is not None:
        rows["resumed"] = f"from the checkpoint of step {result['resumed_at_step']:,}"
    return rows
