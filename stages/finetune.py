"""finetune@<task>: joint pruning + fine-tuning.  Usage: python -m stages.finetune {sv,cm}"""
import sys
from pathlib import Path

from hp import distributed
from hp.params import load_params
from hp.stages.finetune import finetune
from hp.stages.training import training_processes

task = sys.argv[1]
params = load_params()
distributed.relaunch(training_processes(params, f"finetune.{task}"))  # becomes torchrun if > 1 process
result = finetune(task, params, Path("data") / task / "manifests", Path("models") / task / "warmup",
               Path("models") / task / "finetuned", Path("dvclive") / task, Path("metrics") / task / "finetune.json",
               Path("checkpoints") / "finetune" / task)
if result is not None:  # rank 0
    print(result)
distributed.shutdown()
