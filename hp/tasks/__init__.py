"""Tasks: what differs between speaker verification and anti-spoofing lives in one class per task (hp.tasks.sv,
hp.tasks.cm) behind the Task protocol (hp.tasks.base); TaskModel (hp.tasks.task_model) is the network they share.

TaskModel, HeadConfig and CM_LABELS load on first use (PEP 562): a stage that only asks a task for its corpus
does not import the model and its torch stack."""
from importlib import import_module

from hp.params import TASKS
from hp.tasks.base import Task

_LAZY = {"TaskModel": "hp.tasks.task_model", "HeadConfig": "hp.tasks.task_model", "CM_LABELS": "hp.tasks.cm"}
__all__ = ["CM_LABELS", "TASKS", "HeadConfig", "Task", "TaskModel", "get_task"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'hp.tasks' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def get_task(name: str) -> Task:
    """The task called `name`. Each task's module is imported only when asked for (a stage of one task does not
    load the other's code); a new task is one module with one Task subclass and one branch here."""
    if name == "sv":
        from hp.tasks.sv import SpeakerVerification

        return SpeakerVerification()
    if name == "cm":
        from hp.tasks.cm import AntiSpoofing

        return AntiSpoofing()
    raise ValueError(f"task must be one of {list(TASKS)}, got {name!r}")
