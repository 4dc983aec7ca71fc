"""Typed views of params.yaml groups; a wrong or missing key fails with its dotted name."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from hp.errors import ConfigError
from hp.measure import Measure

T = TypeVar("T")


# The tasks, each with its subgroup of prepare, warmup, finetune, score and model.pretrained (hp.tasks implements
# them and imports this)
TASKS = ("sv", "cm")
# The top-level keys of params.yaml: a misspelt one (target_sparsty) must fail, not run the defaults.
TOP_LEVEL = ("target_sparsity", "target_measure", "macs_reference_seconds", "sparsity_tolerance", "model", "pretrain",
             "prepare", "manifests", "warmup", "finetune", "score", "export", "runtime")
# How the stages run, not what they compute: no stage declares this group in dvc.yaml, so changing it reruns nothing
RUNTIME = "runtime"


@dataclass(frozen=True)
class Runtime:
    """params.yaml's runtime group: settings a stage reads that leave its results as they are."""

    device: str  # training: auto (CUDA when there is one), cpu, cuda, cuda:N
    num_workers: int  # processes decoding audio while the model runs (training and scoring)
    log_every: int  # optimiser steps between the points of the training curves
    checkpoint_every: int | None  # optimiser steps between checkpoints (they are also written at each epoch's end)
    nproc_per_node: int  # training processes on this node: > 1 relaunches the training stages under torchrun
    threads: int | None  # torch's CPU threads in the pretrain, training and score stages (None: one per core)

    def __post_init__(self):
        if not isinstance(self.device, str):
            raise ValueError(f"device must be a string (auto, cpu, cuda, cuda:N), got {self.device!r}")
        integer(self.num_workers, "runtime.num_workers", minimum=0)
        integer(self.log_every, "runtime.log_every", minimum=1)
        integer(self.checkpoint_every, "runtime.checkpoint_every", minimum=1, nullable=True)
        integer(self.nproc_per_node, "runtime.nproc_per_node", minimum=1)
        integer(self.threads, "runtime.threads", minimum=1, nullable=True)


def runtime(params: dict) -> Runtime:
    return typed(Runtime, section(params, RUNTIME), RUNTIME)


def model_config(params: dict) -> ModelConfig:
    return typed(ModelConfig, section(params, "model"), "model")


def score_config(params: dict) -> ScoreConfig:
    """The score group less each task's own subgroup (the task reads that: Task.score_settings)."""
    score = section(params, "score")
    if not isinstance(score, dict):
        raise ConfigError("params.yaml: score must be a mapping")
    return typed(ScoreConfig, {key: value for key, value in score.items() if key not in TASKS}, "score")


def results_params(params: dict) -> dict:
    """The params that can change a result: all but the runtime group (what the report compares and lists)."""
    return {key: value for key, value in params.items() if key != RUNTIME}


def load_params(path: str | Path = "params.yaml") -> dict:
    """params.yaml, its top level checked (known keys only, target_sparsity a number in [0, 1), sparsity_tolerance
    a number >= 0 or null) before any stage does work."""
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
    target_measure(params, str(path))
    sparsity_tolerance(params, str(path))
    check_layout(params, str(path))
    return params


# Groups holding one subgroup per task and nothing beside them; `score` holds ScoreConfig's keys beside its two
TASK_GROUPS = ("prepare", "warmup", "finetune", "model.pretrained")


def check_layout(params: dict, source: str = "params.yaml") -> None:
    """What no single stage reads whole: every task group holds exactly the tasks (a misspelt `prepare.sx` would
    otherwise sit there unread), `score` ScoreConfig's keys and the tasks, `runtime` its typed keys. Each stage
    checks the groups it declares in full before its work (hp.stages.<stage>.check)."""
    for dotted in TASK_GROUPS:
        group = section(params, dotted, source)
        if not isinstance(group, dict):
            raise ConfigError(f"{source}: {dotted} must be a mapping of {' and '.join(TASKS)}")
        extra = [key for key in group if key not in TASKS]
        if extra:
            raise ConfigError(f"{source}: unknown key {dotted}.{extra[0]} (known: {', '.join(TASKS)})")
        missing = [task for task in TASKS if task not in group]
        if missing:
            raise ConfigError(f"{source}: missing key {dotted}.{missing[0]}")
    score_config(params)
    missing = [task for task in TASKS if task not in section(params, "score", source)]
    if missing:
        raise ConfigError(f"{source}: missing key score.{missing[0]}")
    runtime(params)


def target_sparsity(params: dict, source: str = "params.yaml") -> float:
    """The fraction of front-end parameters to remove: 0 is the dense model fine-tuned without gates."""
    value = section(params, "target_sparsity", source)
    if not _fraction(value):
        raise ConfigError(f"{source}: target_sparsity must be a number in [0, 1), got {value!r}")
    return float(value)


def target_measure(params: dict, source: str = "params.yaml") -> Measure:
    """What target_sparsity is a fraction of: `params` (the paper's) or `macs`, the front end's multiply-accumulates
    over one utterance of macs_reference_seconds."""
    name, seconds = section(params, "target_measure", source), section(params, "macs_reference_seconds", source)
    try:
        return Measure(name, seconds)
    except ValueError as e:  # Measure checks both, naming the keys
        raise ConfigError(f"{source}: {e}") from None


def _fraction(value: Any) -> bool:
    """A number (not a bool) in [0, 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1


def sparsity_tolerance(params: dict, source: str = "params.yaml") -> float | None:
    """How far the compact model's sparsity may miss target_sparsity before the compact stage fails; None: no check."""
    value = section(params, "sparsity_tolerance", source)
    if value is not None and not _fraction(value):
        raise ConfigError(f"{source}: sparsity_tolerance must be a number in [0, 1) or null, got {value!r}")
    return None if value is None else float(value)


# What the reports hold a run to when its check was off (sparsity_tolerance: null): params.yaml's default
REPORT_TOLERANCE = 0.01


def misses_target(target: float, achieved: float, tolerance: float | None) -> bool:
    """Whether a run's achieved sparsity is further from its target than its tolerance (REPORT_TOLERANCE if none);
    a miss of exactly the tolerance is within it (the 1e-9 absorbs float rounding: 0.51 - 0.5 > 0.01)."""
    return abs(achieved - target) > (REPORT_TOLERANCE if tolerance is None else tolerance) + 1e-9


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


def choice(value: Any, where: str, options: tuple[str, ...]) -> str:
    """One of `options`; anything else fails, naming `where` and the options."""
    if value not in options:
        raise ConfigError(f"params.yaml: {where} must be one of {', '.join(options)}, got {value!r}")
    return value


def checked_keys(cls: type, values: Any, where: str) -> dict:
    """`values` with each key a field of dataclass `cls` and each plain int, float or bool value of the field's
    type (ints become floats where a float is expected); the first wrong key is named as `where.key`. A value of
    the wrong type is named before any missing key: `epochs: abc` is about epochs, not about what epochs needs."""
    if not isinstance(values, dict):
        raise ConfigError(f"params.yaml: {where} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [key for key in values if key not in fields]
    if unknown:
        raise ConfigError(f"params.yaml: unknown key {where}.{unknown[0]}")
    # the annotations are strings: every module declaring configs has postponed annotations
    return {name: typed_value(value, fields[name].type, f"{where}.{name}") for name, value in values.items()}


def typed_value(value: Any, annotation: str, where: str) -> Any:
    """`value` checked against a plain annotation ("int", "float", "bool", each maybe "| None": null allowed),
    an int made a float where a float is expected; other annotations are the config's own to check."""
    expected = annotation.removesuffix(" | None")
    if value is None and expected != annotation:
        return value
    null = " or null" if expected != annotation else ""
    if expected == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
        raise ConfigError(f"params.yaml: {where} must be an integer{null}, got {value!r}")
    if expected == "float" and not isinstance(value, (int, float)):
        raise ConfigError(f"params.yaml: {where} must be a number{null}, got {value!r}")
    if expected == "bool":
        flag(value, where)
    return value


def typed(cls: type[T], values: dict, where: str, required: tuple[str, ...] = (), **extra) -> T:
    """Build dataclass `cls` from `values` (and `extra`, set by the caller); unknown keys, wrong types and missing
    keys are named as `where.key`. Every field without a default, and those named in `required`, must be in
    `values`: params.yaml is the one source of every setting a stage reads (a default stands for a setting that
    this run's code paths never read, e.g. SGD's momentum in an AdamW run)."""
    values = checked_keys(cls, values, where)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    missing = [name for name, f in fields.items() if name not in values and name not in extra and (
               name in required or (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING))]
    if missing:
        raise ConfigError(f"params.yaml: missing key {where}.{missing[0]}")
    try:
        return cls(**values, **extra)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"params.yaml: {where}: {e}") from None


@dataclass(frozen=True)
class ScoreConfig:
    """params.yaml's score group, less each task's own subgroup (the task reads that: Task.score_settings)."""

    batch_seconds: float  # audio per embedding batch (utterances whole, grouped by length)
    bootstrap_resamples: int  # speaker-level resamples behind each 95 % interval (hp.evaluation.bootstrap)
    bootstrap_seed: int  # which resamples: the same for every system scored on one test set (paired comparisons)

    def __post_init__(self):
        positive(self.batch_seconds, "score.batch_seconds")
        integer(self.bootstrap_resamples, "score.bootstrap_resamples", minimum=1)
        integer(self.bootstrap_seed, "score.bootstrap_seed", minimum=0)

    @property
    def bootstrap(self):
        from hp.evaluation.bootstrap import Bootstrap

        return Bootstrap(self.bootstrap_resamples, self.bootstrap_seed)


@dataclass(frozen=True)
class ExportConfig:
    """params.yaml's export group."""

    seconds: float  # utterance length of the MAC count and latency (batch 1)
    repeats: int  # timed runs per model after the warm-up runs; the median is reported
    threads: int | None  # CPU threads when timing; null: PyTorch's default
    parity_seconds: list  # random utterance lengths run through ONNX and PyTorch
    tolerance: float  # most |ONNX - PyTorch| / (1 + |PyTorch|) allowed
    exporter: str  # torchscript | dynamo (hp.deploy.export.export_onnx)
    int8: str  # dynamic | static (hp.deploy.quantize)
    calibration_utterances: int  # static int8: training utterances that fix the activation ranges

    def __post_init__(self):
        positive(self.seconds, "export.seconds")
        integer(self.repeats, "export.repeats", minimum=1)
        integer(self.threads, "export.threads", minimum=1, nullable=True)
        if not isinstance(self.parity_seconds, list) or not self.parity_seconds:
            raise ConfigError("params.yaml: export.parity_seconds must be a list of lengths in seconds, got "
                              f"{self.parity_seconds!r}")
        object.__setattr__(self, "parity_seconds", [positive(s, "export.parity_seconds") for s in self.parity_seconds])
        positive(self.tolerance, "export.tolerance")
        choice(self.exporter, "export.exporter", ("torchscript", "dynamo"))
        choice(self.int8, "export.int8", ("dynamic", "static"))
        integer(self.calibration_utterances, "export.calibration_utterances", minimum=1)


@dataclass(frozen=True)
class ManifestsConfig:
    """params.yaml's manifests group."""

    min_seconds: float  # shorter audio is an error (or dropped, with drop_invalid)
    drop_invalid: bool
    check_audio: str  # decode: every file decoded to its end; header: headers only (hp.data.manifest.Validation)

    def __post_init__(self):
        positive(self.min_seconds, "manifests.min_seconds")
        choice(self.check_audio, "manifests.check_audio", ("decode", "header"))


@dataclass(frozen=True)
class ModelConfig:
    """params.yaml's model group: each task's pretrained front end and how it is pruned and trained."""

    pretrained: dict  # task -> hub id, local directory, or `tiny` (random weights)
    prune_units: list  # unit types that get gates (hp.model.UNIT_TYPES; the front end checks the names)
    layerdrop: float  # LayerDrop in training, in place of the checkpoint's
    seed: int  # the gates' initialisation (and `tiny`'s random weights)

    def __post_init__(self):
        if not isinstance(self.pretrained, dict) or not all(isinstance(v, str) for v in self.pretrained.values()):
            raise ConfigError(f"params.yaml: model.pretrained must map each task to a hub id or a directory, got "
                              f"{self.pretrained!r}")
        if not isinstance(self.prune_units, list) or not all(isinstance(u, str) for u in self.prune_units):
            raise ConfigError(f"params.yaml: model.prune_units must be a list of unit types, got {self.prune_units!r}")
        drop = self.layerdrop
        if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not 0 <= drop <= 1:
            raise ConfigError(f"params.yaml: model.layerdrop must be a probability in [0, 1], got {drop!r}")

    def source(self, task: str) -> str:
        if task not in self.pretrained:
            raise ConfigError(f"params.yaml: missing key model.pretrained.{task}")
        return self.pretrained[task]
