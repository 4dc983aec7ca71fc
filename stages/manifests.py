"""manifests@<task>: validated Parquet manifests (and SV trials).  Usage: python -m stages.manifests {sv,cm}"""
import sys
from pathlib import Path

from hp.data.manifest import shrunk_lists
from hp.params import load_params
from hp.stages import summary
from hp.stages.manifests import manifests

task = sys.argv[1]
data = Path("data") / task
counts = manifests(task, load_params(), data / "corpus", data / "manifests")
summary({**{k: f"{v:,}" for k, v in counts.items() if isinstance(v, int)}, "dropped": len(counts["dropped"])})
for line in shrunk_lists(counts["kept"]):  # drop_invalid shrank an official list: results are not the list's
    print(line)
