"""manifests@<task>: validated Parquet manifests (and SV trials).  Usage: python -m stages.manifests {sv,cm}"""
import sys
from pathlib import Path

from hp.data.manifest import shrunk_lists
from hp.params import load_params
from hp.stages.manifests import manifests

task = sys.argv[1]
data = Path("data") / task
summary = manifests(task, load_params(), data / "corpus", data / "manifests")
print({k: v for k, v in summary.items() if k not in ("dropped", "kept")}, f"dropped: {len(summary['dropped'])}")
for line in shrunk_lists(summary["kept"]):  # drop_invalid shrank an official list: results are not the list's
    print(line)
