"""Errors that carry a one-line message naming the offending file, line or key."""

# Set to 1, a stage (or the CLI) that fails on one of these errors shows the traceback, not just the message
TRACEBACK_ENV = "HP_TRACEBACK"


class HPError(Exception):
    """Base class of hp's user-facing errors."""


class ConfigError(HPError, ValueError):
    """A config file or key holds a value hp cannot use."""


class DataError(HPError, ValueError):
    """A corpus, list, protocol or audio file does not hold what it should."""


class CheckpointError(HPError, ValueError):
    """A checkpoint is missing, of the wrong model type, or does not fit its config."""


class ExportError(HPError):
    """An exported model does not compute what the PyTorch model computes."""


class SparsityError(HPError):
    """A compacted model misses target_sparsity by more than sparsity_tolerance."""


def one_line(error: BaseException) -> str:
    """The message of `error`. One raised in a DataLoader worker comes back with the worker's traceback in its
    message (torch re-raises it as `Caught X in DataLoader worker ... Original Traceback ...`): its last line,
    `module.X: message`, holds the message."""
    text = str(error)
    if "\nOriginal Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text
