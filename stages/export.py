"""export@<task>: the deployable bundle (ONNX included) and dense-vs-compact cost.
Usage: python -m stages.export {sv,cm}"""
import sys
from pathlib import Path

from hp.params import load_params
from hp.stages.export import export

task = sys.argv[1]
result = export(task, load_params(), Path("models") / task / "compact", Path("scores") / task,
                Path("data") / task / "manifests", Path("metrics") / task, Path("models") / task / "export")
print({name: result[name]["latency_ms"] for name in ("dense", "compact")}, {"int8": result["int8"]["latency_ms"]})
