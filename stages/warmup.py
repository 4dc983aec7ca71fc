"""warmup@<task>: train the back-end on the frozen front end (optional).  Usage: python -m stages.warmup {sv,cm}"""
import sys
from pathlib import Path

from hp import distributed
from hp.params import load_params
from hp.stages.training import training_processes
from hp.stages.warmup import warmup

task = sys.argv[1]
params = load_params()
distributed.relaunch(training_processes(params, f"warmup.{task}"))  # becomes torchrun if > 1 process
result = warmup(task, params, Path("data") / task / "manifests", Path("models") / task / "warmup",
             Path("dvclive") / "warmup" / task, Path("metrics") / task / "warmup.json",
             Path("checkpoints") / "warmup" / task)
if result is not None:  # rank 0
    print(result)
distributed.shutdown()
