"""report: reports/report.md and its figures from both tasks' outputs."""
from pathlib import Path

from hp.params import load_params, section
from hp.report import write_report

params = load_params()
write_report(["sv", "cm"], Path("metrics"), Path("plots"), Path("dvclive"), Path("models"), Path("reports"),
             pretrained=section(params, "model.pretrained"), sv_corpus=section(params, "prepare.sv.corpus"))
print("wrote reports/report.md")
