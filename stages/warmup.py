"""warmup@<task>: train the back-end on the frozen front end (optional).  Usage: python stages/warmup.py {sv,cm}"""
import sys
from pathlib import Path

from hp.params import load_params
from hp.pipeline import warmup

task = sys.argv[1]
print(warmup(task, load_params(), Path("data") / task / "manifests", Path("models") / task / "warmup",
             Path("dvclive") / "warmup" / task, Path("metrics") / task / "warmup.json"))
