"""warmup@<task>: train the back-end on the frozen front end (optional).  Usage: python -m stages.warmup {sv,cm}"""
import sys
from pathlib import Path

from hp.params import load_params, runtime
from hp.stages.warmup import check, warmup
from hp.stages import summary
from hp.stages.training import training_summary
from hp.utils import distributed

task = sys.argv[1]
params = load_params()
skipped = not check(task, params)  # every declared key checked first; skipped: one process writes that it was
distributed.relaunch(1 if skipped else runtime(params).nproc_per_node)  # becomes torchrun if > 1 process
result = warmup(task, params, Path("data") / task / "manifests", Path("models") / task / "warmup",
             Path("dvclive") / "warmup" / task, Path("metrics") / task / "warmup.json",
             Path("checkpoints") / "warmup" / task)
if result is not None:  # rank 0
    summary(training_summary(result))
distributed.shutdown()
