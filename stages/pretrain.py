"""pretrain: self-supervised pretraining of the mini pipeline's front end (frozen in dvc.yaml; README "The mini
front end" says how to rebuild it).  Usage: python -m stages.pretrain"""
from pathlib import Path

import pandas as pd

from hp.params import load_params, typed
from hp.pretrain import PretrainConfig, pretrain
from hp.utils.files import atomic_path, write_json

cfg = typed(PretrainConfig, load_params()["pretrain"], "pretrain")
record = pretrain(cfg, Path("models") / "pretrained" / cfg.shape)
history = pd.DataFrame(record.pop("history"))
Path("plots/pretrain").mkdir(parents=True, exist_ok=True)
with atomic_path(Path("plots/pretrain/loss.csv")) as tmp:
    history.to_csv(tmp, index=False)
write_json(Path("metrics") / "pretrain.json", record)
print(record)
