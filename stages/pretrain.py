"""pretrain: self-supervised pretraining of the mini pipeline's front end (frozen in dvc.yaml; README "The mini
front end" says how to rebuild it).  Usage: python -m stages.pretrain"""
from pathlib import Path

from hp.params import load_params
from hp.stages import summary
from hp.stages.pretrain import pretrain

record = pretrain(load_params(), Path("models") / "pretrained", Path("plots/pretrain/loss.csv"),
                  Path("metrics") / "pretrain.json")
held_out = record["held_out"]
summary({"corpus": f"{record['utterances']:,} utterances, {record['hours']} h",
         "training": f"{record['train_seconds']:,} s; loss {record['first']['loss']} -> {record['last']['loss']}",
         "held out": f"masked accuracy {held_out['masked_accuracy']} (always the most frequent cluster: "
                     f"{held_out['majority_accuracy']}), loss {held_out['masked_loss']} (chance "
                     f"{held_out['chance_loss']})"})
