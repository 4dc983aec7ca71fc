"""warmup@<task>: phase 1, the back-end and loss trained on the frozen, unpruned front end (optional)."""
from __future__ import annotations

from pathlib import Path

from hp.params import section
from hp.stages.training import pretrained_frontend, run_training, training_setup
from hp.tasks.model import TaskModel
from hp.train import seed_everything
from hp.utils.files import atomic_dir, write_json


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
