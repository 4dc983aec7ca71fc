"""report: reports/report.md, reports/report.html and their figures from both tasks' outputs."""
from pathlib import Path

from hp.params import load_params
from hp.stages.report import report

report(load_params(), Path("."), Path("reports"))
print("wrote reports/report.md and reports/report.html")
