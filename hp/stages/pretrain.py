"""pretrain: self-supervised pretraining of the mini pipeline's front end (a frozen stage: README "The mini front
end" says how to rebuild it)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from hp.params import runtime, section, typed
from hp.training.pretraining import PretrainConfig, pretrain as run_pretraining
from hp.utils import distributed
from hp.utils.files import atomic_path, write_json


def check(params: dict) -> PretrainConfig:
    """The pretrain group, checked before any work."""
    return typed(PretrainConfig, section(params, "pretrain"), "pretrain")


def pretrain(params: dict, models: Path, loss_csv: Path, metrics_path: Path) -> dict:
    """Pretrain `pretrain.shape` into models/<shape>; its loss curve to `loss_csv`, its summary to `metrics_path`."""
    cfg = check(params)
    distributed.set_threads(runtime(params).threads)
    record = run_pretraining(cfg, models / cfg.shape)
    history = pd.DataFrame(record.pop("history"))
    loss_csv.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(loss_csv) as tmp:
        history.to_csv(tmp, index=False)
    write_json(metrics_path, record)
    return record
