"""`dvc repro` killed with SIGKILL inside each stage kind, then rerun: the outputs equal an uninterrupted run's, no
file in the workspace is half-written at any point, and every file in DVC's cache holds what its name says."""
import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline_repo import BIN, make_repo, outputs, reference_params, repo_env, run, untimed

KINDS = ("prepare", "manifests", "finetune", "compact", "score", "export", "report")


def workspace_files(repo: Path) -> dict[str, tuple[int, int]]:
    """path -> (mtime, size) of every file outside .git and .dvc."""
    files = {}
    for root, dirs, names in os.walk(repo):
        dirs[:] = [d for d in dirs if d not in (".git", ".dvc")]
        for name in names:
            path = Path(root) / name
            try:
                stat = path.stat()
            except FileNotFoundError:  # removed while we looked
                continue
            files[path.relative_to(repo).as_posix()] = (stat.st_mtime_ns, stat.st_size)
    return files


def stage_processes(session: int, kind: str) -> list[int]:
    """Processes of the `dvc repro` session running `python -m stages.<kind>`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != session:
                continue
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if f"stages.{kind}".encode() in args:
            found.append(int(entry.name))
    return found


def repro_killed_inside(repo: Path, kind: str) -> list[str]:
    """Start `dvc repro`; once a stage of `kind` has started changing the workspace, SIGKILL dvc and the stage.
    Returns the files it had changed."""
    dvc = subprocess.Popen([str(BIN / "dvc"), "repro"], cwd=repo, env=repo_env(), start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline, before = time.time() + 900, None
    try:
        while time.time() < deadline:
            assert dvc.poll() is None, f"dvc repro ended before a {kind} stage wrote: {dvc.stderr.read()[-2000:]}"
            if before is None:
                if stage_processes(dvc.pid, kind):
                    before = workspace_files(repo)
            elif (now := workspace_files(repo)) != before:
                changed = sorted(path for path in now.keys() | before.keys() if now.get(path) != before.get(path))
                break
            time.sleep(0.005)
        else:
            pytest.fail(f"no {kind} stage changed the workspace in 900 s")
    finally:
        os.killpg(dvc.pid, signal.SIGKILL)
        dvc.wait()
        dvc.stderr.close()
    return changed


def readable(repo: Path) -> None:
    """Every JSON, Parquet and CSV file at its final name parses: none is half-written."""
    for rel in workspace_files(repo):
        path = repo / rel
        if path.name.startswith("."):  # a temporary file of a killed write, removed by the next write
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".parquet":
            pd.read_parquet(path)
        elif path.suffix == ".csv":
            pd.read_csv(path)


def cache_is_sound(repo: Path) -> None:
    """Each file under .dvc/cache is named by the md5 of what it holds (a `.dir` listing included)."""
    cache = repo / ".dvc" / "cache" / "files" / "md5"
    for path in cache.glob("*/*"):
        name = path.parent.name + path.name.removesuffix(".dir")
        assert hashlib.md5(path.read_bytes()).hexdigest() == name, f"{path}: its content is not what it is named"


@pytest.mark.slow  # a run of the whole DAG killed seven times, against the suite's reference run (minutes)
def test_killed_in_every_stage_kind_and_rerun_equals_an_uninterrupted_run(reference_run, tmp_path):
    reference = reference_run
    # the reference's settings and pretrained front end, with a checkpoint every 2 steps: a kill inside finetune
    # resumes from one (runtime is no stage's dependency, so the outputs must still be the reference's)
    repo = make_repo(tmp_path, reference_params(checkpoint_every=2), pretrained_from=reference)
    for kind in KINDS:  # each rerun goes on from where the last one was killed, to the next stage kind
        changed = repro_killed_inside(repo, kind)
        print(f"killed in {kind} after it changed {changed[:3]}")
        assert changed and "up to date" not in run(["dvc", "status"], repo)  # killed before its end
        readable(repo)
        cache_is_sound(repo)
    run(["dvc", "repro"], repo)
    assert "up to date" in run(["dvc", "status"], repo)
    cache_is_sound(repo)
    assert not [rel for rel in workspace_files(repo) if Path(rel).name.endswith((".tmp", ".old"))]
    expected, got = outputs(reference), outputs(repo)
    assert got.keys() == expected.keys() and len(got) > 20
    assert {path for path in got if got[path] != expected[path]} == set()
    for task in ("sv", "cm"):  # the timed files: everything in them but the times
        for name in ("finetune", "export"):
            a, b = (json.loads((r / "metrics" / task / f"{name}.json").read_text()) for r in (reference, repo))
            assert untimed(a) == untimed(b), (task, name)

