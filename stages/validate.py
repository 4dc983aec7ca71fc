"""validate: every group of params.yaml checked before any other stage runs (each depends on its output)."""
from pathlib import Path

from hp.params import load_params
from hp.stages.validate import validate

checked = validate(load_params(), Path("checks") / "params.json")
print(f"params.yaml: every group checked ({len(checked)} stage settings)")
