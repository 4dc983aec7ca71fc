"""The sweep's table from `dvc exp show --json`: one row per usable experiment and task (its headline error and its
costs), the broken, stale and unfinished ones skipped with a note, each row paired with its task's dense run."""
from __future__ import annotations

import json
import math
import sys
from typing import Callable

import pandas as pd

from hp.errors import HPError
from hp.evaluation.bootstrap import Bootstrap, Trials, compare
from hp.measure import prunes
from hp.params import misses_target
from hp.reporting.headlines import HEADLINES, TASKS
from hp.reporting.pareto import FRONTS, mark_fronts

NAME = "hp.reporting.sweep"  # the command, as its messages name it
TrialsLoader = Callable[[dict, str], "Trials | None"]  # (an experiment of dvc exp show, task) -> its scored trials
COLUMNS = ["experiment", "kind", "rev", "task", "target_sparsity", "target_measure", "achieved_sparsity", "off_target",
           "params_sparsity", "macs_sparsity", "params_dense", "params_compact", "macs_compact", "latency_ms",
           "latency_onnx_ms", "latency_input_s", "eer", "eer_ci95_lo", "eer_ci95_hi", "min_dcf", "scored", "pretrained",
           "eer_vs_dense", "eer_vs_dense_lo", "eer_vs_dense_hi", *FRONTS.values()]


class SweepError(HPError, ValueError):
    """The experiments cannot be read or none of them is usable."""


def _entries(shown: list) -> list[dict]:
    """Flatten `dvc exp show --json` to one dict per workspace, commit and experiment, in its order."""
    entries = []
    for commit in shown:
        if not isinstance(commit, dict):
            continue
        kind = "workspace" if commit.get("rev") == "workspace" else "commit"
        label = "workspace" if kind == "workspace" else str(commit.get("rev", "?"))[:7]
        entries.append({"label": label, "kind": kind, "rev": commit.get("rev"), "data": commit.get("data"),
                        "error": commit.get("error"), "state": None})
        for exp in commit.get("experiments") or []:
            if not isinstance(exp, dict):
                continue
            rev = (exp.get("revs") or [{}])[0]
            entries.append({"label": exp.get("name") or rev.get("name") or str(rev.get("rev", "?"))[:7],
                            "kind": "experiment", "rev": rev.get("rev"), "data": rev.get("data"),
                            "error": rev.get("error"), "state": (exp.get("executor") or {}).get("state")})
    return entries


def _signature(data: dict) -> str:
    """What a row's numbers come from: a workspace with the same signature as a commit is that commit."""
    return json.dumps([data.get("params"), data.get("metrics")], sort_keys=True, default=str)


def _file(data: dict, group: str, path: str) -> tuple[dict | None, str | None]:
    """One params or metrics file of an experiment: (content, None), (None, None) if absent, (None, why) if broken."""
    entry = (data.get(group) or {}).get(path)
    if entry is None:
        return None, None
    if not isinstance(entry, dict):
        return None, f"{path}: unreadable"
    if entry.get("error"):
        error = entry["error"]
        return None, f"{path}: {error.get('msg') or error.get('type') or 'unreadable'}" if isinstance(error, dict) \
            else f"{path}: {error}"
    content = entry.get("data")
    return (content, None) if isinstance(content, dict) else (None, f"{path}: not a JSON object")


def _dig(obj, *keys, default=math.nan):
    for key in keys:
        if not isinstance(obj, dict) or key not in obj:
            return default
        obj = obj[key]
    return default if obj is None else obj


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _row(entry: dict, task: str, metrics: dict, export: dict | None, params: dict) -> dict:
    point, dcf, scored = HEADLINES[task](metrics, _dig(params, "prepare", task, "corpus", default=None))
    eer, min_dcf = float(point["eer"]), float(point[dcf])
    ci = point.get("eer_ci95") or {"lo": math.nan, "hi": math.nan}  # runs scored before the intervals: none
    export = export or {}
    target = float(_dig(params, "target_sparsity", default=metrics.get("target_sparsity")))
    achieved = float(metrics["achieved_sparsity"])
    measure = metrics.get("target_measure", "params")  # runs from before the MAC target held parameters
    return {"experiment": entry["label"], "kind": entry["kind"], "rev": entry["rev"], "task": task,
            "target_sparsity": target, "target_measure": measure, "achieved_sparsity": achieved,
            "off_target": misses_target(target, achieved, metrics.get("sparsity_tolerance")),
            "params_sparsity": float(metrics.get("params_sparsity", achieved if measure == "params" else math.nan)),
            "macs_sparsity": float(metrics.get("macs_sparsity", math.nan)),  # older runs: not recorded
            "params_dense": int(metrics["params_dense"]), "params_compact": int(metrics["params_compact"]),
            "macs_compact": float(_dig(export, "compact", "macs")),
            "latency_ms": float(_dig(export, "compact", "latency_ms", "torch_cpu")),
            "latency_onnx_ms": float(_dig(export, "compact", "latency_ms", "onnxruntime_cpu")),
            "latency_input_s": float(_dig(export, "input", "seconds")), "eer": eer, "eer_ci95_lo": float(ci["lo"]),
            "eer_ci95_hi": float(ci["hi"]), "min_dcf": min_dcf,
            "scored": scored, "pretrained": str(_dig(params, "model", "pretrained", task, default=""))}


def collect(shown: list, notes: list[str] | None = None, trials: TrialsLoader | None = None) -> pd.DataFrame:
    """One row per usable experiment and task (COLUMNS), sorted by task and target, Pareto fronts marked.

    Queued, running and failed experiments, broken metrics files and metrics older than their params are skipped,
    each with a line in `notes` (and on stderr), never an exception. The workspace is kept only when its numbers
    differ from every commit's and experiment's (results not committed yet). With `trials` (reading an
    experiment's scored trials, e.g. cached_trials), each row is compared with the dense fine-tune (target 0) of its
    task on the same trials: eer_vs_dense and its paired interval (hp.evaluation.bootstrap.compare)."""
    notes = [] if notes is None else notes

    def skip(label: str, why: str) -> None:
        notes.append(f"{label}: {why}")
        print(f"{NAME}: skipped {label}: {why}", file=sys.stderr)

    usable = []
    for entry in _entries(shown):
        label, error = entry["label"], entry["error"]
        if entry["state"] not in (None, "success"):  # a queued or failed run may carry its checkout's old files
            skip(label, f"experiment {entry['state']}")
        elif error:
            skip(label, error.get("msg", str(error)) if isinstance(error, dict) else str(error))
        elif not isinstance(entry["data"], dict):
            skip(label, "no data")
        else:
            usable.append(entry)
    others = {_signature(e["data"]) for e in usable if e["kind"] != "workspace"}
    rows, sources = [], []  # sources: each row's (entry, params)
    for entry in usable:
        label, data = entry["label"], entry["data"]
        if entry["kind"] == "workspace" and _signature(data) in others:
            continue  # the workspace holds a commit's or an experiment's results: it is that row
        params, why = _file(data, "params", "params.yaml")
        if why:
            skip(label, why)
            continue
        params = params or {}
        for task in TASKS:
            metrics, why = _file(data, "metrics", f"metrics/{task}.json")
            if why or metrics is None:
                if why:
                    skip(f"{label} {task}", why)
                continue
            target, ran = _dig(params, "target_sparsity", default=None), metrics.get("target_sparsity")
            if target is not None and not (_number(target) and _number(ran) and math.isclose(target, ran)):
                skip(f"{label} {task}", f"metrics/{task}.json is for target_sparsity {ran}, params.yaml says "
                                        f"{target} (not reproduced)")
                continue
            export, why = _file(data, "metrics", f"metrics/{task}/export.json")
            if why:
                skip(f"{label} {task}", f"{why} (latency left out)")
                export = None
            try:
                rows.append(_row(entry, task, metrics, export, params))
            except (KeyError, TypeError, ValueError, StopIteration) as e:
                skip(f"{label} {task}", f"metrics/{task}.json lacks {e}")
                continue
            sources.append((entry, params))
    table = pd.DataFrame(rows, columns=COLUMNS)
    if trials is not None:
        _pair_with_dense(table, sources, trials, skip)
    table["macs_compact"] = table["macs_compact"].astype(float).round().astype("Int64")  # NA: no export.json
    table = table.sort_values(["task", "target_sparsity", "experiment"], key=_task_order, kind="stable")
    return mark_fronts(table.reset_index(drop=True))


def _pair_with_dense(table: pd.DataFrame, sources: list[tuple[dict, dict]], trials: TrialsLoader, skip) -> None:
    """eer_vs_dense (and its interval) of each row in place: its EER minus that of its task's dense fine-tune on the
    same trials, paired over the same speaker resamples (the dense run's score.bootstrap_* settings)."""
    for task in TASKS:
        rows = table.index[table["task"] == task]
        dense = [i for i in rows if not prunes(table.at[i, "target_sparsity"])]
        if not dense:
            continue
        entry, params = sources[dense[0]]
        reference = trials(entry, task)
        if reference is None:
            skip(f"{entry['label']} {task}", "no scored trials in the DVC cache (no paired comparison with dense)")
            continue
        bootstrap = Bootstrap(int(_dig(params, "score", "bootstrap_resamples", default=1000)),
                              int(_dig(params, "score", "bootstrap_seed", default=0)))
        for i in rows:
            mine = reference if i == dense[0] else trials(sources[i][0], task)
            paired = None if mine is None else compare(bootstrap, mine, reference)
            if paired is None or paired["eer_ci95"] is None:
                skip(f"{table.at[i, 'experiment']} {task}", "no scored trials shared with the dense run (no paired "
                                                           "comparison)")
                continue
            table.loc[i, ["eer_vs_dense", "eer_vs_dense_lo", "eer_vs_dense_hi"]] = [paired["eer"],
                                                                                   paired["eer_ci95"]["lo"],
                                                                                   paired["eer_ci95"]["hi"]]


def _task_order(column: pd.Series) -> pd.Series:
    """SV before CM, as everywhere else in hp; other columns sort as they are."""
    return column.map({t: i for i, t in enumerate(TASKS)}) if column.name == "task" else column
