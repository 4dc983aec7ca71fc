"""pretrain: self-supervised pretraining of the mini pipeline's front end (frozen in dvc.yaml; README "The mini
front end" says how to rebuild it).  Usage: python -m stages.pretrain"""
from pathlib import Path

from hp.params import load_params
from hp.stages.pretrain import pretrain

print(pretrain(load_params(), Path("models") / "pretrained", Path("plots/pretrain/loss.csv"),
               Path("metrics") / "pretrain.json"))
