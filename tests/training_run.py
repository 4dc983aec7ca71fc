"""A short training run on the mini CM corpus for the resume and DDP tests (not a test module itself):

    python tests/training_run.py <train.parquet> <out dir> [key=value ...]      (TrainConfig overrides)
    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/training_run.py ...

A tiny WavLM without dropout or LayerDrop, so that the only randomness is the seeded crops and gate samples.
Writes <out>/final.safetensors and <out>/run.json from rank 0; checkpoints go to <out>/checkpoints.
`die_at_step=N` ends the process abruptly (os._exit, no clean-up) when step N begins: a killed run.
`task="sv"` trains the SV head (AAM over the two labels) instead of the CM one, whose batch norm normalises
each micro-batch and so differs between process counts by design.
"""
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import save_file

from hp.model import SHAPES, Frontend
from hp.tasks import CM_LABELS, TaskModel
from hp.training.checkpoint import Checkpoints, fingerprint
from hp.training.loop import train
from hp.utils import distributed
from configs import head_config, train_config

SETTINGS = dict(target_sparsity=0.5, epochs=3, batch_size=8, crop_seconds=0.5, lr=2e-3, final_lr=1e-4,
                warmup_epochs=1, sparsity_warmup_epochs=2, lambda2_init=10.0, reg_lr=0.2, lambda_lr=0.02,
                average_last=2, log_every=1, device="cpu")


class DieAt:
    """A logger that kills the process when step `n` is logged (before that step's checkpoint); n None: never.
    Every run logs through it, so that killed and uninterrupted runs compute exactly the same things."""

    def __init__(self, n: int | None):
        self.n = n

    def log(self, step: int, values: dict) -> None:
        if step == self.n:
            os._exit(137)


def main(manifest: str, out: str, *overrides: str) -> None:
    torch.set_num_threads(1)
    changes = {k: json.loads(v) for k, v in (o.split("=", 1) for o in overrides)}
    die_at = changes.pop("die_at_step", None)
    task = changes.pop("task", "cm")
    config = replace(SHAPES["tiny"], hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                     layerdrop=0.0)
    torch.manual_seed(0)
    model = TaskModel(task, Frontend(config), list(CM_LABELS), head_config(heads=2, compression=16, embedding=16))
    table = pd.read_parquet(manifest)
    cfg = train_config(**{**SETTINGS, **changes})
    out = Path(out)
    checkpoints = Checkpoints(out / "checkpoints", fingerprint(cfg, table, model), cfg.runtime.checkpoint_every)
    run = train(model, table, cfg, DieAt(die_at), None, checkpoints)
    if distributed.is_main():
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "final.safetensors"))
        (out / "run.json").write_text(json.dumps(run))
    distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
