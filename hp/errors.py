"""Errors that carry a one-line message naming the offending file, line or key."""


class HPError(Exception):
    """Base class of hp's user-facing errors."""


class ConfigError(HPError, ValueError):
    """A config file or key holds a value hp cannot use."""


class CheckpointError(HPError, ValueError):
    """A checkpoint is missing, of the wrong model type, or does not fit its config."""


class ExportError(HPError):
    """An exported model does not compute what the PyTorch model computes."""
