"""report: reports/report.md, reports/report.html and their figures from both tasks' outputs."""
from __future__ import annotations

from pathlib import Path

import yaml

from hp.params import results_params
from hp.report import write_report
from hp.tasks import TASKS
from hp.version import code_version, git


def report(params: dict, root: Path, out: Path) -> None:
    """The report of every task's outputs under `root`, its params compared with the committed params.yaml."""
    committed = git("show", "HEAD:params.yaml")  # the defaults this run's params are compared with
    write_report(list(TASKS), results_params(params), root, out, code_version(ignore=(out.name,)),
                 baseline=None if committed is None else results_params(yaml.safe_load(committed)))
