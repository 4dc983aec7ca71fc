"""python -m hp.reporting.sweep --table: the headline columns of `dvc exp show`, one line per experiment and task,
read from the committed sweep's saved `dvc exp show --json` (nothing written)."""
import json

from helpers import ROOT_DIR
from hp.reporting.experiments import collect
from hp.reporting.sweep import main

SHOWN = ROOT_DIR / "reports" / "sweep" / "experiments.json"


def test_table_prints_one_line_per_experiment_and_task(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written here
    assert main(["--table", "--json", str(SHOWN)]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = collect(json.loads(SHOWN.read_text()))
    assert lines[0].split() == ["experiment", "task", "target", "achieved", "params", "EER", "%", "[95", "%]",
                                "scored", "on", "latency", "ms"]
    rows = [line for line in lines[1:] if not line.startswith("note:")]
    assert len(rows) == len(table) and list(tmp_path.iterdir()) == []
    for line, (_, row) in zip(rows, table.iterrows()):
        assert line.split()[:2] == [row["experiment"], row["task"]]
        assert f"{100 * row['eer']:.2f} [{100 * row['eer_ci95_lo']:.2f}, {100 * row['eer_ci95_hi']:.2f}]" in line
        assert f"{row['params_compact']:,}" in line
