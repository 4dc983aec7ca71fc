"""report: reports/report.md, reports/report.html and their figures from both tasks' outputs."""
from pathlib import Path

import yaml

from hp.params import load_params
from hp.report import write_report
from hp.version import code_version, git

committed = git("show", "HEAD:params.yaml")  # the defaults this run's params are compared with
write_report(["sv", "cm"], load_params(), Path("."), Path("reports"), code_version(ignore=("reports",)),
             baseline=None if committed is None else yaml.safe_load(committed))
print("wrote reports/report.md and reports/report.html")
