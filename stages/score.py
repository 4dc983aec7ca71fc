"""score@<task>: metrics of the compact model.  Usage: python -m stages.score {sv,cm}"""
import sys
from pathlib import Path

from hp.params import load_params
from hp.stages.score import score

task = sys.argv[1]
print(score(task, load_params(), Path("models") / task / "compact", Path("data") / task / "manifests",
            Path("metrics") / task / "compact.json", Path("metrics") / f"{task}.json",
            Path("plots") / task / "det.csv", Path("scores") / task))
