"""The Task protocol: everything a pipeline stage needs to know about one task (the registry: hp.tasks.get_task).

A task class imports what only one stage needs inside the method that needs it, so that a stage imports (and its
dvc.yaml deps name) only the code it runs: the training stages never import scoring or export code."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hp.errors import ConfigError
from hp.params import typed_value

if TYPE_CHECKING:  # annotations only
    import numpy as np
    import pandas as pd
    from torch import nn

    from hp.data.manifest import Validation
    from hp.evaluation.bootstrap import Bootstrap
    from hp.tasks.task_model import HeadConfig, TaskModel


class Task:
    """One task's side of every stage. Subclasses set `name`, `outputs` and implement each method."""

    name: str
    outputs: tuple[str, ...]  # the ONNX graph's outputs, in order (hp.deploy.export)
    calibrated = False  # whether the inference graph applies a score calibration (then `calibration` gives it)
    margin_loss = False  # whether the loss has a margin (then the margin schedule's keys are required)
    head_loss_keys: tuple[str, ...] = ()  # HeadConfig's fields this task's loss reads

    # ---- prepare / manifests -----------------------------------------------------------------------------
    def prepare_settings(self, cfg: dict) -> tuple[str, object, dict | None]:
        """prepare.<task> checked whole, before any work: (corpus name, corpus source, mini corpus settings)."""
        raise NotImplementedError

    def prepare(self, cfg: dict, out: Path) -> dict:
        """Write the mini corpus under `out`, or check a released one; `out/corpus.json` says where it is."""
        raise NotImplementedError

    def manifest_tables(self, corpus: Path, validation: Validation) -> tuple[object, dict[str, pd.DataFrame]]:
        """The corpus source (corpus.json) and the validated tables of every split."""
        raise NotImplementedError

    def write_manifest_extras(self, tables: dict[str, pd.DataFrame], out: Path, summary: dict) -> None:
        """Task-specific files beside the Parquet manifests, and counts added to `summary`."""

    # ---- training ----------------------------------------------------------------------------------------
    def labels(self, train: pd.DataFrame) -> list[str]:
        """The classes of the training head, in the order of its outputs."""
        raise NotImplementedError

    def loss(self, head: HeadConfig, labels: list[str]) -> nn.Module:
        """The training head on the embedding (also the CM scorer)."""
        raise NotImplementedError

    def check_head(self, head: HeadConfig, labels: list[str]) -> None:
        """Raise ValueError for head params this task cannot use (before the front end loads)."""

    # ---- scoring -----------------------------------------------------------------------------------------
    def score_settings(self, params: dict):
        """`score.<task>` typed (the task's own dataclass) and checked, before any work."""
        raise NotImplementedError

    def score(self, model: TaskModel, manifests: Path, batch_seconds: float, workers: int, settings,
              bootstrap: Bootstrap | None = None):
        """(scores table, metrics, {file name: writer}, (DET scores, DET labels)); under torchrun every rank embeds
        a share of the utterances (hp.utils.distributed.share) and the ranks other than 0 return None. With `bootstrap`,
        every EER and minDCF has its interval beside it (hp.evaluation.bootstrap)."""
        raise NotImplementedError

    # ---- export ------------------------------------------------------------------------------------------
    def scoring(self, scores: Path) -> dict:
        """scoring.json's task part, from the score stage's outputs."""
        raise NotImplementedError

    def calibration(self, scoring: dict):
        """The LinearCalibration the inference graph applies (scoring.json's), or None when not `calibrated`."""
        return None

    def infer(self, model: TaskModel, embedding, calibration: tuple | None) -> tuple:
        """The graph's outputs (self.outputs) from the embedding; `calibration` = (weight, bias) tensors."""
        raise NotImplementedError

    def inference_modules(self, model: TaskModel) -> tuple[nn.Module, ...]:
        """The modules inference runs (front end, back-end, and whatever turns embeddings into outputs)."""
        return model.frontend, model.backend

    def score_exported(self, runs: dict, manifests: Path, scoring: dict, batch_seconds: float,
                       bootstrap: Bootstrap | None = None) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
        """Each exported graph's metrics on the task's first test set, scored as `python -m hp` scores with
        scoring.json (`runs`: name -> (wave, lengths) -> outputs, e.g. fp32 and int8 ONNX sessions). Returns
        ({"test_set": what was scored, "trials", name: metrics}, {name: the graph's outputs on its utterances})."""
        raise NotImplementedError


def group_keys(cfg, where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    """A copy of the params group `cfg` (at `where`) holding every `required` key, maybe `optional` ones, and no
    other; the first offending key is named."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"params.yaml: {where} must be a mapping")
    unknown = [key for key in cfg if key not in required + optional]
    if unknown:
        raise ConfigError(f"params.yaml: unknown key {where}.{unknown[0]}")
    missing = [key for key in required if key not in cfg]
    if missing:
        raise ConfigError(f"params.yaml: missing key {where}.{missing[0]}")
    return dict(cfg)


def mini_settings(writer, cfg, where: str, required: bool) -> dict | None:
    """The mini corpus's params group `cfg` (at `where`; None: absent, allowed unless `required`, i.e. the corpus
    is the mini one) checked against the corpus writer's signature whenever it is there, used or not: every
    setting it takes but the output root and the thread count, each given, each an integer or a number as
    annotated (or null where it may be None). Ranges are the writer's to check, before it writes anything."""
    import inspect

    if cfg is None:
        if required:
            raise ConfigError(f"params.yaml: missing key {where} (corpus mini)")
        return None
    settings = {name: p.annotation for name, p in inspect.signature(writer).parameters.items()
                if name not in ("root", "workers")}
    cfg = group_keys(cfg, where, tuple(settings))
    # postponed annotations ("int", "float", "int | None"); the writer sees exactly what YAML gave
    for name, annotation in settings.items():
        typed_value(cfg[name], annotation, f"{where}.{name}")
    return cfg


def synthesise(writer, out: Path, cfg: dict, where: str) -> dict:
    """Write a mini corpus with `writer(out, **cfg)`, `cfg` checked by mini_settings; an out-of-range value is
    named by its params.yaml group `where`."""
    try:
        return writer(out, **cfg)
    except ValueError as e:
        raise ConfigError(f"params.yaml: {where}: {e}") from None
