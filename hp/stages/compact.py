"""compact@<task>: the fine-tuned model physically pruned."""
from __future__ import annotations

from pathlib import Path

from hp.params import target_sparsity
from hp.tasks.model import TaskModel
from hp.utils.files import write_json


def compact(params: dict, finetuned: Path, out: Path, metrics_path: Path) -> dict:
    """Physically prune the fine-tuned model (one without gates, the dense run, passes through unchanged); record
    dense vs compact size and the structure."""
    model = TaskModel.load(finetuned).eval()
    small = model.compacted() if model.frontend.gates() else model
    small.save(out)
    dense = model.frontend.dense_num_params
    result = {"target_sparsity": target_sparsity(params), "params_dense": dense,
              "params_compact": small.frontend.num_params(),
              "achieved_sparsity": 1 - small.frontend.num_params() / dense,
              "structure": small.frontend.structure.to_dict()}
    write_json(metrics_path, result)
    return result
