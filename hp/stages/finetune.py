"""finetune@<task>: phase 2, joint pruning and fine-tuning."""
from __future__ import annotations

from pathlib import Path

from hp.measure import prunes
from hp.params import target_measure, target_sparsity
from hp.stages.training import pretrained_frontend, run_training, training_configs, training_setup
from hp.tasks.task_model import HeadConfig, TaskModel
from hp.training.config import TrainConfig
from hp.training.state import seed_everything
from hp.utils.files import write_json


def check(task: str, params: dict) -> tuple[TrainConfig, HeadConfig]:
    """Every key the stage declares (the sparsity target, the model group, finetune.<task> with its head), checked
    before any work."""
    return training_configs(task, params, "finetune", target_sparsity(params), target_measure(params))


def finetune(task: str, params: dict, manifests_dir: Path, warmup_dir: Path, out: Path, live_dir: Path,
             metrics_path: Path, checkpoint_dir: Path) -> dict | None:
    """Phase 2: joint pruning + fine-tuning, from the warm-up's head when there was a warm-up; at target_sparsity
    0 the dense front end, without gates, fine-tuned plainly. Under torchrun only rank 0 writes (the others
    return None)."""
    cfg, head, table, labels, augmenter = training_setup(task, params, "finetune", manifests_dir,
                                                        target_sparsity(params), target_measure(params))
    seed_everything(cfg.seed)
    model = TaskModel(task, pretrained_frontend(params, task, prune=prunes(cfg.target_sparsity)), labels, head)
    if (warmup_dir / "head.safetensors").is_file():
        model.load_head(warmup_dir)
    run, checkpoints = run_training(model, table, cfg, augmenter, live_dir, checkpoint_dir)
    if run is None:
        return None
    model.cpu().save(out)
    frontend, measure = model.frontend, cfg.measure
    # the constrained measure's sparsities (no gates: 0), and what the model compacts to in both measures
    result = {"target_measure": measure.name, "expected_sparsity": frontend.expected_sparsity(measure).item(),
              "deterministic_sparsity": frontend.deterministic_sparsity(measure),
              "sparsity": frontend.sparsities(measure.seconds),
              "gates": bool(model.frontend.gates()), **run, "classes": len(labels)}
    write_json(metrics_path, result)
    checkpoints.clear()
    return result
