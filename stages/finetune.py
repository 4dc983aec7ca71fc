"""finetune@<task>: joint pruning + fine-tuning.  Usage: python stages/finetune.py {sv,cm}"""
import sys
from pathlib import Path

from hp.params import load_params
from hp.pipeline import finetune

task = sys.argv[1]
print(finetune(task, load_params(), Path("data") / task / "manifests", Path("models") / task / "warmup",
               Path("models") / task / "finetuned", Path("dvclive") / task, Path("metrics") / task / "finetune.json"))
