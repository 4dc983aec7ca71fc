"""Which code produced a result: hp's version, a digest of its source files and, when there is one, git's view."""
from __future__ import annotations

import hashlib
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def source_digest() -> str:
    """sha256 over hp's Python sources (names and contents): changes whenever the code does, git or not."""
    h = hashlib.sha256()
    for source in sorted(PACKAGE.rglob("*.py")):
        h.update(source.relative_to(PACKAGE).as_posix().encode())
        h.update(source.read_bytes())
    return h.hexdigest()


def git(*args: str, cwd: Path | None = None) -> str | None:
    """Output of a git command, or None outside a repository or without git."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version(cwd: Path | None = None, ignore: tuple[str, ...] = ()) -> dict:
    """{"hp": package version, "source": 12 hex digits of source_digest, "git": describe --always, "-dirty" when
    a tracked file outside `ignore` (e.g. the caller's own outputs, which DVC removes before a stage runs)
    differs from HEAD; None outside git}."""
    try:
        package = version("hp")
    except PackageNotFoundError:
        package = None
    described = git("describe", "--always", cwd=cwd)
    if described is not None:
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                      *(f":(exclude){path}" for path in ignore), cwd=cwd)
        described += "-dirty" if changed else ""
    return {"hp": package, "source": source_digest()[:12], "git": described}
