"""One module per DVC stage: what the stage does, given params.yaml and its paths. The scripts in stages/
read nothing but the task name and call one function here, so each stage depends on exactly the code it runs.

HP_RECORD_IMPORTS=<dir>: each stage process writes <dir>/<script>@<task>.json at exit, the repository files it
imported; the end-to-end test compares them with the stage's dvc.yaml deps."""
import atexit
import json
import os
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]


def _record_imports(directory: Path) -> None:
    loaded = [Path(m.__file__).resolve() for m in list(sys.modules.values()) if getattr(m, "__file__", None)]
    files = sorted({p.relative_to(_ROOT).as_posix() for p in loaded
                    if p.is_relative_to(_ROOT) and p.relative_to(_ROOT).parts[0] in ("hp", "stages")})
    script = Path(sys.argv[0]).stem
    name = f"{script}@{sys.argv[1]}" if len(sys.argv) > 1 else script
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps(files, indent=1))


if os.environ.get("HP_RECORD_IMPORTS"):
    atexit.register(_record_imports, Path(os.environ["HP_RECORD_IMPORTS"]))
