"""manifests@<task>: validated Parquet manifests (and SV trials).  Usage: python -m stages.manifests {sv,cm}"""
import sys
from pathlib import Path

from hp.params import load_params
from hp.stages.manifests import manifests

task = sys.argv[1]
data = Path("data") / task
summary = manifests(task, load_params(), data / "corpus", data / "manifests")
print({k: v for k, v in summary.items() if k != "dropped"}, f"dropped: {len(summary['dropped'])}")
