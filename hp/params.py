"""Typed views of params.yaml groups; a wrong or missing key fails with its dotted name."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, TypeVar

import yaml

from hp.errors import ConfigError

T = TypeVar("T")


# The top-level keys of params.yaml: a misspelt one (target_sparsty) must fail, not run the defaults.
TOP_LEVEL = ("target_sparsity", "model", "pretrain", "prepare", "manifests", "warmup", "finetune", "score", "export")


def load_params(path: str | Path = "params.yaml") -> dict:
    """params.yaml, its top level checked (known keys only, target_sparsity a number in [0, 1)) before any stage
    does work."""
    try:
        params = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    unknown = sorted(set(params) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key {unknown[0]!r} (known: {', '.join(TOP_LEVEL)})")
    target_sparsity(params, str(path))
    return params


def target_sparsity(params: dict, source: str = "params.yaml") -> float:
    """The fraction of front-end parameters to remove: 0 is the dense model fine-tuned without gates."""
    value = section(params, "target_sparsity", source)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{source}: target_sparsity must be a number in [0, 1), got {value!r}")
    return float(value)


def section(params: dict, dotted: str, source: str = "params.yaml") -> Any:
    """params['a']['b'] for 'a.b', with the missing key named."""
    node = params
    for i, key in enumerate(dotted.split(".")):
        if not isinstance(node, dict) or key not in node:
            raise ConfigError(f"{source}: missing key {'.'.join(dotted.split('.')[:i + 1])}")
        node = node[key]
    return node


def flag(value: Any, where: str) -> bool:
    """A true/false param; anything else (e.g. the string 'false', which bool() would take as True) fails."""
    if not isinstance(value, bool):
        raise ConfigError(f"params.yaml: {where} must be true or false, got {value!r}")
    return value


def integer(value: Any, where: str, minimum: int | None = None, nullable: bool = False) -> int | None:
    """An integer param (at least `minimum`; None too if `nullable`); a bool or a float fails, naming `where`."""
    if nullable and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        kind = {None: "an integer", 0: "an integer >= 0", 1: "a positive integer"}[minimum]
        raise ConfigError(f"params.yaml: {where} must be {kind}{' or null' if nullable else ''}, got {value!r}")
    return value


def positive(value: Any, where: str) -> float:
    """A positive finite number param (an int or a float, not a bool), as float; anything else fails, naming
    `where`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ConfigError(f"params.yaml: {where} must be a positive number, got {value!r}")
    return float(value)


def typed(cls: type[T], values: dict, where: str, **extra) -> T:
    """Build dataclass `cls` from `values`; unknown keys and wrong types are named as `where.key`."""
    if not isinstance(values, dict):
        raise ConfigError(f"params.yaml: {where} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"params.yaml: unknown key {where}.{unknown[0]}")
    for name, value in values.items():
        expected = fields[name].type
        if expected in ("float", float) and isinstance(value, int) and not isinstance(value, bool):
            values = {**values, name: float(value)}
        elif expected in ("int", int) and not (isinstance(value, int) and not isinstance(value, bool)):
            raise ConfigError(f"params.yaml: {where}.{name} must be an integer, got {value!r}")
        elif expected in ("float", float) and not isinstance(value, (int, float)):
            raise ConfigError(f"params.yaml: {where}.{name} must be a number, got {value!r}")
        elif expected in ("bool", bool):
            flag(value, f"{where}.{name}")
    try:
        return cls(**values, **extra)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"params.yaml: {where}: {e}") from None
