"""warmup@<task>: phase 1, the back-end and loss trained on the frozen, unpruned front end (optional)."""
from __future__ import annotations

from pathlib import Path

from hp.params import checked_keys, section
from hp.stages.training import head_config, pretrained_frontend, run_training, training_configs, training_setup
from hp.tasks.task_model import TaskModel
from hp.training.config import TrainConfig
from hp.training.state import seed_everything
from hp.utils.files import atomic_dir, write_json


def check(task: str, params: dict) -> bool:
    """Every key the stage declares (warmup.<task>, finetune.<task>.head, the model group), checked before any work,
    whether the phase runs or not; returns whether it runs. At `epochs: 0` the phase reads no other warmup key,
    so the others may be left out, but those given must be known and of their type."""
    group = section(params, f"warmup.{task}")
    if isinstance(group, dict) and group.get("epochs") == 0:
        checked_keys(TrainConfig, group, f"warmup.{task}")
        head_config(task, params)
        return False
    training_configs(task, params, "warmup")
    return True


def warmup(task: str, params: dict, manifests_dir: Path, out: Path, live_dir: Path, metrics_path: Path,
           checkpoint_dir: Path) -> dict | None:
    """Phase 1 (optional): train the back-end and loss on the frozen, unpruned front end.

    `out` receives the head weights the finetune stage starts from; with `epochs: 0` only head.json, saying
    that the phase was skipped (the finetune stage then starts from a fresh head). Under torchrun only rank 0
    writes (the others return None).
    """
    if not check(task, params):
        with atomic_dir(out) as tmp:
            write_json(tmp / "head.json", {"epochs": 0})
        write_json(live_dir / "metrics.json", {"epochs": 0})  # no curves; git keeps the (uncached) output
        result, checkpoints = {"epochs": 0}, None
    else:
        cfg, head, table, labels, augmenter = training_setup(task, params, "warmup", manifests_dir)
        seed_everything(cfg.seed)
        model = TaskModel(task, pretrained_frontend(params, task, prune=False), labels, head).freeze_frontend()
        run, checkpoints = run_training(model, table, cfg, augmenter, live_dir, checkpoint_dir)
        if run is None:
            return None
        model.cpu().save_head(out, {"epochs": cfg.epochs})
        result = {"epochs": cfg.epochs, **run, "classes": len(labels)}
    write_json(metrics_path, result)
    if checkpoints is not None:
        checkpoints.clear()  # the outputs are written: nothing left to resume
    return result
