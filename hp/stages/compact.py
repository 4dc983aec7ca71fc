"""compact@<task>: the fine-tuned model physically pruned."""
from __future__ import annotations

from pathlib import Path

from hp.errors import SparsityError
from hp.params import misses_target, sparsity_tolerance, target_sparsity
from hp.tasks.model import TaskModel
from hp.utils.files import write_json


def compact(params: dict, finetuned: Path, out: Path, metrics_path: Path) -> dict:
    """Physically prune the fine-tuned model (one without gates, the dense run, passes through unchanged); record
    dense vs compact size and the structure. A sparsity further than sparsity_tolerance from the target fails
    before anything is written."""
    target, tolerance = target_sparsity(params), sparsity_tolerance(params)
    model = TaskModel.load(finetuned).eval()
    small = model.compacted() if model.frontend.gates() else model
    dense, kept = model.frontend.dense_num_params, small.frontend.num_params()
    achieved = 1 - kept / dense
    if tolerance is not None and misses_target(target, achieved, tolerance):
        raise SparsityError(f"params.yaml: sparsity_tolerance: {finetuned} compacts to sparsity {achieved:.4f}, "
                            f"target_sparsity {target:g} missed by {achieved - target:+.4f}, more than {tolerance:g} "
                            "(train longer, or set sparsity_tolerance: null to keep such a model)")
    small.save(out)
    result = {"target_sparsity": target, "sparsity_tolerance": tolerance, "params_dense": dense,
              "params_compact": kept, "achieved_sparsity": achieved,
              "structure": small.frontend.structure.to_dict()}
    write_json(metrics_path, result)
    return result
