"""prepare@<task>: write the task's raw corpus.  Usage: python -m stages.prepare {sv,cm}"""
import sys
from pathlib import Path

from hp.params import load_params
from hp.stages import summary
from hp.stages.prepare import prepare


def describe(value) -> str:
    """A split's counts (speakers 48, utterances 288, ...) or a setting as it is."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in value.items())
    return str(value)


task = sys.argv[1]
summary({key: describe(value) for key, value in prepare(task, load_params(), Path("data") / task / "corpus").items()})
