"""compact@<task>: physical compaction of the fine-tuned model.  Usage: python -m stages.compact {sv,cm}"""
import sys
from pathlib import Path

from hp.params import load_params
from hp.stages import summary
from hp.stages.compact import compact

task = sys.argv[1]
result = compact(load_params(), Path("models") / task / "finetuned", Path("models") / task / "compact",
                 Path("metrics") / task / "compact.json")
summary({"parameters": f"{result['params_dense']:,} -> {result['params_compact']:,}",
         "sparsity": f"{result['achieved_sparsity']:.4f} of {result['target_sparsity']} ({result['target_measure']}); "
                     f"params {result['params_sparsity']:.4f}, MACs {result['macs_sparsity']:.4f}"})
