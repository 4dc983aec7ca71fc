"""The network both tasks train: front end + back-end (MHFA or ECAPA-TDNN) + the task's loss head.

Training, compaction and saving are shared; the loss head comes from the task (hp.tasks.get_task).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hp.errors import CheckpointError
from hp.heads.pooling import ECAPATDNN, MHFA, GradMultiply, subtract_mean
from hp.model.config import FrontendConfig
from hp.model.frontend import Frontend, compact
from hp.model.structure import WavLMStructure
from hp.tasks import get_task
from hp.utils.files import atomic_dir, read_json, write_json



BACKENDS = ("mhfa", "ecapa")
# Means subtracted from every hidden state before the back-end (HeadConfig.mean_norm): "frames", each channel's
# mean over the utterance's real frames (the mean part of cmvn); "channels", each frame's mean over its channels,
# which is what the authors' apply_cmvn(dim=1) computes on their [batch, channels, frames, layers] features.
MEAN_NORMS = ("frames", "channels")


@dataclass(frozen=True)
class HeadConfig:
    """The back-end and loss (params.yaml's finetune.<task>.head). The fields with a default are read only by one
    task or back-end, which requires their keys (keys_read); the default is a value no other path reads."""

    backend: str  # "mhfa" (the authors') or "ecapa" (ECAPA-TDNN over a weighted layer sum)
    heads: int  # MHFA
    compression: int  # MHFA
    embedding: int
    grad_multiplier: float  # on the gradient flowing into the front end
    mean_norm: str | None  # one of MEAN_NORMS, or None: the hidden states as the front end gives them
    # the ECAPA-TDNN back-end only
    ecapa_channels: int = 0  # C (512; 1024 in its large variant) ...
    ecapa_mfa_channels: int = 0  # ... and its aggregation width (1536 for both, as in the paper)
    # SV's AAM-softmax only
    margin: float = 0.0
    scale: float = 1.0
    subcenters: int = 1  # AAM sub-centres per speaker
    topk: int = 0  # inter-top-k: hardest non-target speakers given an angular penalty
    topk_penalty: float = 0.0
    # CM only
    class_weights: dict[str, float] | None = None  # cross-entropy weight per label, {bonafide: .9, spoof: .1}

    ECAPA = ("ecapa_channels", "ecapa_mfa_channels")

    @classmethod
    def keys_read(cls, group: dict, loss_keys: tuple[str, ...]) -> tuple[str, ...]:
        """The defaulted fields a head of the settings `group` reads, given its task's loss keys
        (Task.head_loss_keys): params.yaml must hold them."""
        return loss_keys + (cls.ECAPA if group.get("backend") == "ecapa" else ())

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {list(BACKENDS)}, got {self.backend!r}")
        if self.mean_norm is not None and self.mean_norm not in MEAN_NORMS:
            raise ValueError(f"mean_norm must be null or one of {list(MEAN_NORMS)}, got {self.mean_norm!r}")
        weights = self.class_weights
        if weights is not None and not (isinstance(weights, dict) and all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in weights.values())):
            raise ValueError(f"class_weights must be null or a mapping of label to a positive number, got {weights!r}")


class TaskModel(nn.Module):
    def __init__(self, task: str, frontend: Frontend, labels: list[str], head: HeadConfig):
        super().__init__()
        spec = get_task(task)  # a ValueError for an unknown task
        self.task, self.labels, self.head_config = task, list(labels), head
        self.frontend = frontend
        self.frontend_frozen = False
        c, states = frontend.config, frontend.config.num_hidden_layers + 1
        self.backend = (MHFA(states, c.hidden_size, head.heads, head.compression, head.embedding)
                        if head.backend == "mhfa" else
                        ECAPATDNN(states, c.hidden_size, head.ecapa_channels, head.embedding,
                                  mfa_channels=head.ecapa_mfa_channels))
        self.loss = spec.loss(head, self.labels)

    def freeze_frontend(self) -> TaskModel:
        """Train only the back-end and loss: WavLM runs in eval mode without gradients (the authors' phase 1)."""
        self.frontend.requires_grad_(False)
        self.frontend_frozen = True
        return self.train(self.training)

    def train(self, mode: bool = True) -> TaskModel:
        super().train(mode)
        if self.frontend_frozen:
            self.frontend.eval()  # no dropout in a front end that does not learn
        return self

    def embed(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frontend_frozen):
            states = self.frontend(wave, lengths)
        if self.training and self.head_config.grad_multiplier != 1.0:
            states = tuple(GradMultiply.apply(h, self.head_config.grad_multiplier) for h in states)
        frame_mask = None if lengths is None else self.frontend.frame_mask(lengths, states[0].shape[1])
        if self.head_config.mean_norm is not None:
            states = tuple(subtract_mean(h, self.head_config.mean_norm, frame_mask) for h in states)
        return self.backend(states, frame_mask)

    def forward(self, wave: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(self.embed(wave), labels)

    def cm_scores(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Bona fide minus spoof logit: a log-likelihood-ratio-like score (uncalibrated), on the model's device."""
        logits = self.loss.logits(embeddings.to(next(self.parameters()).device))
        return logits[:, 1] - logits[:, 0]

    def compacted(self) -> TaskModel:
        out = TaskModel(self.task, compact(self.frontend), self.labels, self.head_config)
        out.backend.load_state_dict(self.backend.state_dict())
        out.loss.load_state_dict(self.loss.state_dict())
        return out.eval()

    # ---- persistence: one safetensors file for all weights (gates included) + a JSON description ---------
    def head_state(self) -> dict[str, torch.Tensor]:
        """Back-end and loss weights: what the frozen-front-end phase trains."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("frontend.")}

    def _description(self) -> dict:
        """What saved weights must match to load into this model: task, labels, head config."""
        return {"task": self.task, "labels": self.labels, "head": asdict(self.head_config)}

    def _load_weights(self, path: Path, against: str, skip: str | None = None) -> None:
        """Load a safetensors file strictly (but for missing keys under `skip`); errors name the file."""
        if not path.is_file():
            raise CheckpointError(f"{path}: file not found")
        missing, unexpected = self.load_state_dict(load_file(path), strict=False)
        missing = [k for k in missing if skip is None or not k.startswith(skip)]
        if missing or unexpected:
            raise CheckpointError(f"{path}: does not match {against} (missing {missing[:3]}, "
                                  f"unexpected {unexpected[:3]})")

    def save_head(self, directory: str | Path, info: dict) -> None:
        """head.safetensors (back-end + loss) and head.json (task, labels, head config, `info`)."""
        with atomic_dir(directory) as tmp:
            _save_weights(self.head_state(), tmp / "head.safetensors")
            write_json(tmp / "head.json", {**self._description(), **info})

    def load_head(self, directory: str | Path) -> None:
        """Back-end and loss weights saved by `save_head`, for the same task, labels and head config."""
        directory = Path(directory)
        meta = read_json(directory / "head.json", CheckpointError)
        for key, value in self._description().items():
            if meta.get(key) != value:
                raise CheckpointError(f"{directory / 'head.json'}: {key} differs from this model's; "
                                      "rerun the warm-up with the same data and head params")
        self._load_weights(directory / "head.safetensors", "head.json", skip="frontend.")

    def save(self, directory: str | Path) -> None:
        """model.safetensors + task.json; the directory appears complete or not at all."""
        with atomic_dir(directory) as tmp:
            _save_weights(self.state_dict(), tmp / "model.safetensors")
            write_json(tmp / "task.json", {
                **self._description(), "frontend": self.frontend.config.to_dict(),
                "structure": self.frontend.structure.to_dict(), "prune_units": sorted(self.frontend.prune_units),
            })

    @classmethod
    def load(cls, directory: str | Path) -> TaskModel:
        directory = Path(directory)
        meta = read_json(directory / "task.json", CheckpointError)
        try:
            config = FrontendConfig.from_dict(meta["frontend"], str(directory / "task.json"))
            structure = WavLMStructure.from_dict(meta["structure"], str(directory / "task.json"))
            frontend = Frontend(config, structure, prune_units=meta["prune_units"])
            model = cls(meta["task"], frontend, meta["labels"], HeadConfig(**meta["head"]))
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"{directory / 'task.json'}: malformed ({type(e).__name__}: {e})") from None
        model._load_weights(directory / "model.safetensors", "task.json")
        return model


def _save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path))

