"""prepare@<task>: the built-in mini corpus written, or a released corpus checked; corpus.json says where."""
from __future__ import annotations

from pathlib import Path

from hp.params import section
from hp.tasks import get_task


def check(task: str, params: dict) -> None:
    """Every key the stage declares (prepare.<task>), checked before any work."""
    get_task(task).prepare_settings(section(params, f"prepare.{task}"))


def prepare(task: str, params: dict, out: Path) -> dict:
    """Write the built-in mini corpus under `out`, or check a released corpus; either way `out/corpus.json`
    says where the data is, and the manifests stage reads only that."""
    return get_task(task).prepare(section(params, f"prepare.{task}"), out)
