"""report: reports/report.md, reports/report.html and their figures from both tasks' outputs."""
from __future__ import annotations

from pathlib import Path

import yaml

from hp.params import results_params
from hp.reporting.report import write_report
from hp.stages import validate
from hp.tasks import TASKS
from hp.version import code_version, git


# what the pipeline writes into git's tree: a rerun changes them (timings at least), the code that made them it
# does not, so they do not make the report's git version "-dirty"
WRITTEN = ("dvc.lock", "metrics", "plots", "dvclive", "checks")


def check(params: dict) -> None:
    """The report declares every group but pretrain's (the frozen front end's, which it reads from the checkpoint's
    own record): every stage's own check, before any work (hp.stages.validate)."""
    validate.check(params)


def report(params: dict, root: Path, out: Path) -> None:
    """The report of every task's outputs under `root`, its params compared with the committed params.yaml."""
    check(params)
    committed = git("show", "HEAD:params.yaml")  # the defaults this run's params are compared with
    write_report(list(TASKS), results_params(params), root, out, code_version(ignore=(out.name, *WRITTEN)),
                 baseline=None if committed is None else results_params(yaml.safe_load(committed)))
