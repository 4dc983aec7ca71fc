"""compact@<task>: the fine-tuned model physically pruned."""
from __future__ import annotations

from pathlib import Path

from hp.errors import SparsityError
from hp.measure import PARAMS, Measure
from hp.params import misses_target, sparsity_tolerance, target_measure, target_sparsity
from hp.tasks.task_model import TaskModel
from hp.utils.files import write_json


def check(params: dict) -> tuple[float, float | None, Measure]:
    """The sparsity target, its measure and its tolerance, checked before any work."""
    return target_sparsity(params), sparsity_tolerance(params), target_measure(params)


def compact(params: dict, finetuned: Path, out: Path, metrics_path: Path) -> dict:
    """Physically prune the fine-tuned model (one without gates, the dense run, passes through unchanged); record
    dense vs compact size and MACs (at macs_reference_seconds), the sparsity in both measures, and the structure. A
    sparsity (in target_measure) further than sparsity_tolerance from the target fails before anything is written."""
    target, tolerance, measure = check(params)
    model = TaskModel.load(finetuned).eval()
    small = model.compacted() if model.frontend.gates() else model
    macs = Measure("macs", measure.seconds)
    costs = {m.name: (model.frontend.dense_cost(m), small.frontend.deterministic_cost(m)) for m in (PARAMS, macs)}
    sparsity = {name: 1 - kept / dense for name, (dense, kept) in costs.items()}
    achieved = sparsity[measure.name]
    if tolerance is not None and misses_target(target, achieved, tolerance):
        raise SparsityError(f"params.yaml: sparsity_tolerance: {finetuned} compacts to {measure.name} sparsity "
                            f"{achieved:.4f}, target_sparsity {target:g} missed by {achieved - target:+.4f}, more than "
                            f"{tolerance:g} (train longer, or set sparsity_tolerance: null to keep such a model)")
    small.save(out)
    result = {"target_sparsity": target, "target_measure": measure.name, "macs_reference_seconds": measure.seconds,
              "sparsity_tolerance": tolerance, "params_dense": costs["params"][0], "params_compact": costs["params"][1],
              "macs_dense": costs["macs"][0], "macs_compact": costs["macs"][1],
              "achieved_sparsity": achieved,  # in target_measure, what the tolerance holds
              "params_sparsity": sparsity["params"], "macs_sparsity": sparsity["macs"],
              "structure": small.frontend.structure.to_dict()}
    write_json(metrics_path, result)
    return result
