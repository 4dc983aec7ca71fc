"""report: reports/report.md and its figures from both tasks' outputs."""
from pathlib import Path

from hp.params import load_params, section
from hp.report import write_report

params = load_params()
tasks = ["sv", "cm"]
write_report(tasks, Path("metrics"), Path("plots"), Path("dvclive"), Path("models"), Path("scores"), Path("reports"),
             pretrained={t: section(params, f"model.pretrained.{t}") for t in tasks},
             corpora={t: section(params, f"prepare.{t}.corpus") for t in tasks})
print("wrote reports/report.md")
