"""finetune@<task>: joint pruning + fine-tuning.  Usage: python -m stages.finetune {sv,cm}"""
import sys
from pathlib import Path

from hp.params import load_params, runtime
from hp.stages.finetune import check, finetune
from hp.stages import summary
from hp.stages.training import training_summary
from hp.utils import distributed

task = sys.argv[1]
params = load_params()
check(task, params)  # before any process starts
distributed.relaunch(runtime(params).nproc_per_node)  # becomes torchrun if > 1 process
result = finetune(task, params, Path("data") / task / "manifests", Path("models") / task / "warmup",
               Path("models") / task / "finetuned", Path("dvclive") / task, Path("metrics") / task / "finetune.json",
               Path("checkpoints") / "finetune" / task)
if result is not None:  # rank 0
    summary(training_summary(result))
distributed.shutdown()
