"""finetune@<task>: phase 2, joint pruning and fine-tuning."""
from __future__ import annotations

from pathlib import Path

from hp.stages.training import pretrained_frontend, run_training, training_setup
from hp.params import target_sparsity
from hp.tasks.model import TaskModel
from hp.train import seed_everything
from hp.utils.files import write_json


def finetune(task: str, params: dict, manifests_dir: Path, warmup_dir: Path, out: Path, live_dir: Path,
             metrics_path: Path, checkpoint_dir: Path) -> dict | None:
    """Phase 2: joint pruning + fine-tuning, from the warm-up's head when there was a warm-up; at target_sparsity
    0 the dense front end, without gates, fine-tuned plainly. Under torchrun only rank 0 writes (the others
    return None)."""
    cfg, head, table, labels, augmenter = training_setup(task, params, "finetune", manifests_dir,
                                                        target_sparsity=target_sparsity(params))
    seed_everything(cfg.seed)
    model = TaskModel(task, pretrained_frontend(params, task, prune=cfg.target_sparsity != 0), labels, head)
    if (warmup_dir / "head.safetensors").is_file():
        model.load_head(warmup_dir)
    run, checkpoints = run_training(model, table, cfg, augmenter, live_dir, checkpoint_dir)
    if run is None:
        return None
    model.cpu().save(out)
    result = {"expected_sparsity": model.frontend.expected_sparsity().item(),  # no gates: 0
              "deterministic_sparsity": model.frontend.deterministic_sparsity(),
              "gates": bool(model.frontend.gates()), **run, "classes": len(labels)}
    write_json(metrics_path, result)
    checkpoints.clear()
    return result
