"""One module per DVC stage: what the stage does, given params.yaml and its paths. The scripts in stages/
read nothing but the task name and call one function here, so each stage depends on exactly the code it runs.

A stage that fails on one of hp's own errors (hp.errors: params, data, checkpoint, sparsity) ends with one line
on stderr, `<stage>: error: <message naming the file, line or key>`, and exit status 1; Ctrl-C ends it with one
line and status 130; HP_TRACEBACK=1 shows the traceback instead. Any other exception is a bug and keeps its
traceback.

HP_RECORD_IMPORTS=<dir>: each stage process writes <dir>/<script>@<task>.json at exit, the repository files it
imported; the end-to-end test compares them with the stage's dvc.yaml deps."""
import atexit
import json
import os
import sys
from pathlib import Path

from hp.errors import TRACEBACK_ENV, HPError, one_line

_ROOT = Path(__file__).resolve().parents[2]


INTERRUPTED = 130  # the shell's status for a process ended by SIGINT (128 + 2)


def _stage() -> str:
    """This stage process's name as dvc.yaml gives it: finetune@sv. hp.utils.progress.stage_name says the same for
    the layers below, which cannot import this package; this package does not import it, as it brings torch, which
    prepare and validate do without."""
    return Path(sys.argv[0]).stem + (f"@{sys.argv[1]}" if len(sys.argv) > 1 else "")


def _one_line_errors(kind, error, traceback) -> None:
    """sys.excepthook of a stage process: hp's errors and Ctrl-C as one line, everything else as Python shows it."""
    interrupted = issubclass(kind, KeyboardInterrupt)
    if not (interrupted or issubclass(kind, HPError)) or os.environ.get(TRACEBACK_ENV) == "1":
        sys.__excepthook__(kind, error, traceback)
        return
    stage = _stage()
    if interrupted:
        print(f"{stage}: interrupted (Ctrl-C); `dvc repro` runs it again (training resumes from its last "
              "checkpoint)", file=sys.stderr)
    else:
        print(f"{stage}: error: {one_line(error)}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: objects finalised after the modules they need (dvclive's, DataLoader workers')
    # print "Exception ignored ..." tracebacks after the message. Temporary files are gone already: hp writes
    # through context managers, which cleaned up while the error unwound.
    os._exit(INTERRUPTED if interrupted else 1)


if Path(sys.argv[0]).parent.name == "stages":  # a stage process (python -m stages.<name>), not a test or a shell
    sys.excepthook = _one_line_errors


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


def summary(rows: dict[str, object]) -> None:
    """What a stage did, as a few aligned lines under its name (finetune@sv), instead of a dict's repr."""
    width = max(map(len, rows), default=0)
    print("\n".join([f"{_stage()}:", *(f"  {key:<{width}}  {value}" for key, value in rows.items())]))


def eer(metrics: dict) -> str:
    """An EER with its interval, in %."""
    ci = metrics.get("eer_ci95")
    return f"{100 * metrics['eer']:.2f} %" + ("" if ci is None else f" [{100 * ci['lo']:.2f}, {100 * ci['hi']:.2f}]")
