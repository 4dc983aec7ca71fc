"""Training checkpoints: everything a killed run needs to continue exactly where it stopped.

A checkpoint holds the model, both optimisers (the model's and the gates' + lambdas'), the sparsity
controller (lambdas), the lr schedule, the position in the epoch, the gate-freeze step, the running parameter
average, and every rank's random number generator states: hp.training.state.TrainState.state_dict(), which
TrainState.load_state_dict() resumes from. It is written atomically (temp file, then rename),
so a kill mid-write leaves the previous one. A fingerprint of the run's settings, data, starting weights and code guards
resumption: a checkpoint of another run is ignored, not silently continued.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hp.errors import CheckpointError
from hp.utils.files import atomic_path
from hp.version import source_digest

FILE = "last.pt"
# TrainConfig fields that do not change what a run computes: they may differ between a run and its resumption
NOT_FINGERPRINTED = ("runtime", "resume")


def fingerprint(cfg, table: pd.DataFrame, model: torch.nn.Module) -> str:
    """What makes a run the same run: its settings, training utterances, starting weights and hp's code (a
    fixed bug must not be continued from a state it produced)."""
    h = hashlib.sha256(source_digest().encode())
    h.update(json.dumps({k: v for k, v in asdict(cfg).items() if k not in NOT_FINGERPRINTED}, sort_keys=True,
                        default=str).encode())
    h.update("\n".join(table["utt"]).encode())
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def rng_state(device: torch.device) -> dict:
    """This process's global generator states (on CUDA: of its own GPU), in types that
    torch.load(weights_only=True) reads back."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class Checkpoints:
    """The last checkpoint of one training run in `directory`, written every `every_steps` optimiser steps
    (None: only at epoch ends) and at each epoch's end."""

    def __init__(self, directory: str | Path, run: str, every_steps: int | None = None, resume: bool = True):
        if every_steps is not None and every_steps < 1:
            raise ValueError(f"checkpoint_every must be a positive integer or null, got {every_steps}")
        self.path, self.run, self.every_steps, self.resume = Path(directory) / FILE, run, every_steps, resume
        self._loaded = False
        self._state: dict | None = None

    def due(self, step: int) -> bool:
        return self.every_steps is not None and step % self.every_steps == 0

    def latest(self) -> dict | None:
        """The saved state to continue from: None without one, with resume off, or if it is another run's.
        Read once (at the start of the run)."""
        if not self._loaded:
            self._state, self._loaded = self._read(), True
        return self._state

    def _read(self) -> dict | None:
        if not self.resume or not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # a file we did not write whole is not one of ours (ours are renamed into place)
            raise CheckpointError(f"{self.path}: unreadable checkpoint ({type(e).__name__}: {e}); delete it to "
                                  "start over") from None
        if state.get("run") != self.run:
            print(f"{self.path}: a checkpoint of other settings or data; starting afresh", flush=True)
            return None
        return state

    def save(self, state: dict) -> None:
        with atomic_path(self.path, durable=True) as tmp:
            torch.save({**state, "run": self.run}, tmp)

    def clear(self) -> None:
        """After a finished run: its outputs are written, nothing is left to resume."""
        self.path.unlink(missing_ok=True)
