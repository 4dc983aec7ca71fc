"""compact@<task>: physical compaction of the fine-tuned model.  Usage: python -m stages.compact {sv,cm}"""
import sys
from pathlib import Path

from hp.params import load_params
from hp.stages.compact import compact

task = sys.argv[1]
result = compact(load_params(), Path("models") / task / "finetuned", Path("models") / task / "compact",
                 Path("metrics") / task / "compact.json")
print({k: v for k, v in result.items() if k != "structure"})
