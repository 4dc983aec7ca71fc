"""validate: every group of params.yaml checked before any stage works, as the DAG's first stage.

Each stage checks the groups it declares before it starts, but DVC runs the stages in order: a bad key of
finetune.sv used to surface only after prepare and manifests had run (hours on a real corpus). This stage declares
every group but runtime (which no stage declares: changing it must rerun nothing; each stage checks it when it reads
it) and the frozen pretrain stage's, runs every stage's own check on them, and writes the same small file each time, so that every other stage can
depend on it: DVC runs it first, and as its output never changes, it reruns nothing downstream."""
from __future__ import annotations

from pathlib import Path

from hp.tasks import TASKS
from hp.utils.files import write_json


def check(params: dict) -> list[str]:
    """Each stage's own check, for each task; the stages checked. Not the frozen pretrain stage's group: `dvc repro`
    never runs that stage, and a recipe (a hub front end) has no such group."""
    from hp.stages import compact, export, finetune, manifests, prepare, score, warmup

    compact.check(params)
    stages = (prepare, manifests, warmup, finetune, score, export)
    for task in TASKS:
        for stage in stages:
            stage.check(task, params)
    return ["compact", *(f"{stage.__name__.rsplit('.', 1)[1]}@{task}" for task in TASKS for stage in stages)]


def validate(params: dict, out: Path) -> list[str]:
    checked = check(params)
    write_json(out, {"checked": checked})  # the same content whenever the params pass
    return checked
