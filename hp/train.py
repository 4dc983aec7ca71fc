"""One training loop for both tasks: joint fine-tuning and pruning with the sparsity Lagrangian."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from hp.data.audio import SAMPLE_RATE, random_crop
from hp.data.augment import Augmenter
from hp.model.gates import HardConcrete
from hp.sparsity import CONSTRAINED, SparsityController, param_groups
from hp.tasks import TaskModel


OPTIMIZERS = ("adamw", "sgd")


@dataclass(frozen=True)
class TrainConfig:
    target_sparsity: float = 0.0
    epochs: int = 10
    batch_size: int = 32
    crop_seconds: float = 3.0
    aug_prob: float = 0.6  # MUSAN / RIR augmentation of each crop, when the manifests list them
    optimizer: str = "adamw"  # or "sgd" (Nesterov momentum; the authors' frozen-front-end phase)
    momentum: float = 0.9  # sgd only
    lr: float = 1e-4  # peak learning rate of the model (front end and back-end)
    final_lr: float = 1e-6  # reached by exponential decay at the last step
    lr_reference_batch: int | None = None  # set: lr and final_lr scale by global batch / this (authors: 64)
    warmup_epochs: float = 1.0  # linear lr warm-up
    weight_decay: float = 1e-7
    margin_start_epoch: float = 0.0  # AAM margin 0 until here, then linear up to the head's margin at ...
    margin_full_epoch: float = 0.0  # ... this epoch (equal: the full margin from the start)
    average_last: int = 1  # the result is the parameter average of the last N epochs' ends (gates: the last)
    reg_lr: float = 0.05  # log_alpha (+) and, unless lambda_lr is set, the lambdas (-)
    lambda_lr: float | None = None
    sparsity_warmup_epochs: float = 5.0  # target grows from 0 to target_sparsity over these epochs
    sparsity_schedule: str = "linear"
    clamp_lambda1: bool = False
    lambda2_init: float = 0.0  # > 0: a quadratic penalty from the start (see SparsityController)
    constrain: str = "expected"  # "deterministic": hold the sparsity compaction will realise to the target
    # after the target warm-up, freeze the gates at the first step whose deterministic sparsity is this close
    # to the target; the rest of the run fine-tunes that fixed structure (None: the gates learn to the end)
    freeze_tolerance: float | None = None
    grad_clip: float = 3.0
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    log_every: int = 10

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        if not 0 <= self.aug_prob <= 1:
            raise ValueError(f"aug_prob must be in [0, 1], got {self.aug_prob}")
        if self.average_last < 1 or self.average_last > max(1, self.epochs):
            raise ValueError(f"average_last must be in 1..epochs ({self.epochs}), got {self.average_last}")
        if self.margin_full_epoch < self.margin_start_epoch:
            raise ValueError("margin_full_epoch must not be before margin_start_epoch")
        if self.lr_reference_batch is not None and self.lr_reference_batch < 1:
            raise ValueError(f"lr_reference_batch must be a positive integer or null, got {self.lr_reference_batch}")
        if self.constrain not in CONSTRAINED:
            raise ValueError(f"constrain must be one of {list(CONSTRAINED)}, got {self.constrain!r}")
        if self.freeze_tolerance is not None and self.freeze_tolerance < 0:
            raise ValueError(f"freeze_tolerance must be >= 0 or null, got {self.freeze_tolerance}")

    @property
    def lr_scale(self) -> float:
        """Global batch / reference batch (1 without a reference): the authors' linear lr scaling."""
        return 1.0 if self.lr_reference_batch is None else self.batch_size / self.lr_reference_batch


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class CropDataset(Dataset):
    """Random fixed-length crops of the manifest's utterances (augmented, if given), with integer class labels."""

    def __init__(self, table: pd.DataFrame, labels: list[str], seconds: float, seed: int,
                 augment: Augmenter | None = None):
        index = {label: i for i, label in enumerate(labels)}
        self.paths = table["path"].tolist()
        self.frames = (table["duration_s"] * SAMPLE_RATE).round().astype(int).tolist()
        self.targets = [index[label] for label in table["label"]]
        self.samples, self.seed, self.epoch, self.augment = int(seconds * SAMPLE_RATE), seed, 0, augment

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        # one generator per (seed, epoch, item): crops do not depend on worker count or order
        rng = np.random.default_rng((self.seed, self.epoch, i))
        wave = torch.from_numpy(random_crop(self.paths[i], self.frames[i], self.samples, rng))
        if self.augment is not None:
            wave = self.augment(wave, rng)
        return wave, self.targets[i]


def lr_factor(step: int, warmup: int, total: int, final_ratio: float) -> float:
    """Linear warm-up to 1, then exponential decay to `final_ratio` at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return math.exp(math.log(final_ratio) * progress)


def margin_factor(epoch: float, start: float, full: float) -> float:
    """Share of the AAM margin at (fractional) `epoch`: 0 before `start`, linear up to 1 at `full`.

    Starting margin-free lets the classes spread before the angular margin makes the loss hard (WeSpeaker)."""
    if full <= start:
        return 1.0
    return min(1.0, max(0.0, (epoch - start) / (full - start)))


class ParameterAverage:
    """The mean of the model's floating-point state at the ends of the last `n` epochs.

    The gates are not averaged: the model keeps their final values, so the structure (and its sparsity) is
    the one the Lagrangian reached, not a blend of two that may round differently.
    """

    def __init__(self, model: nn.Module, n: int):
        self.n, self.count, self.sums = n, 0, None
        self.skip = {f"{name}.{p}" for name, m in model.named_modules() if isinstance(m, HardConcrete)
                     for p, _ in m.named_parameters(recurse=False)}

    def add(self, model: nn.Module) -> None:
        if self.n == 1:
            return
        # copy=True: on CPU in float32, .float().cpu() would alias the live weights
        state = {k: v.detach().to("cpu", torch.float32, copy=True) for k, v in model.state_dict().items()
                 if v.is_floating_point() and k not in self.skip}
        self.sums = state if self.sums is None else {k: self.sums[k] + v for k, v in state.items()}
        self.count += 1

    def apply(self, model: nn.Module) -> None:
        if self.count > 1:
            current = model.state_dict()
            model.load_state_dict({k: (v / self.count).to(current[k]) for k, v in self.sums.items()}, strict=False)


def make_optimizer(cfg: TrainConfig, groups: list[dict]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups)


def train(model: TaskModel, table: pd.DataFrame, cfg: TrainConfig, logger=None,
          augment: Augmenter | None = None) -> dict:
    """Fine-tune `model` (in place) on the manifest `table` while its gates learn the structure.

    With the front end frozen (TaskModel.freeze_frontend) only the back-end and loss learn and nothing is
    pruned: the authors' first phase. Returns what the run did: steps, the effective peak lr, and the step at
    which the gates were frozen (None if they were not).
    """
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    model.to(device).train()
    data = CropDataset(table, model.labels, cfg.crop_seconds, cfg.seed, augment)
    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True, drop_last=True, num_workers=cfg.num_workers,
                        generator=torch.Generator().manual_seed(cfg.seed))
    if len(loader) == 0:
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the {len(data)} training utterances")
    steps_per_epoch = len(loader)
    total = cfg.epochs * steps_per_epoch
    pruning = not model.frontend_frozen
    controller = SparsityController(cfg.target_sparsity, round(cfg.sparsity_warmup_epochs * steps_per_epoch),
                                    cfg.sparsity_schedule, cfg.clamp_lambda1, cfg.lambda2_init,
                                    cfg.constrain).to(device)
    lr, reg_lr = cfg.lr * cfg.lr_scale, cfg.reg_lr
    main_groups, reg_groups = param_groups(model, controller, lr, reg_lr, cfg.weight_decay, cfg.lambda_lr)
    optimizer = make_optimizer(cfg, main_groups)
    reg_optimizer = torch.optim.AdamW(reg_groups) if pruning else None
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup, total, cfg.final_lr / cfg.lr))
    main_params = [p for g in main_groups for p in g["params"]]
    full_margin = getattr(model.loss, "margin", None)  # AAM-softmax (SV) only
    full_penalty = getattr(model.loss, "topk_penalty", None)
    average = ParameterAverage(model, cfg.average_last)

    frontend = model.frontend
    step, frozen_at = 0, None
    progress = tqdm(total=total, desc=f"finetune {model.task}", unit="step", mininterval=5, disable=None)
    for epoch in range(cfg.epochs):
        data.epoch = epoch
        for wave, labels in loader:
            wave, labels = wave.to(device), labels.to(device)
            if full_margin is not None:  # the inter-top-k penalty follows the margin's ramp (as in WeSpeaker)
                ramp = margin_factor(step / steps_per_epoch, cfg.margin_start_epoch, cfg.margin_full_epoch)
                model.loss.margin, model.loss.topk_penalty = full_margin * ramp, full_penalty * ramp
            target = controller.target_at(step) if pruning else 0.0
            logging = logger is not None and (step % cfg.log_every == 0 or step == total - 1)
            may_freeze = (pruning and frozen_at is None and cfg.freeze_tolerance is not None
                          and step >= controller.warmup_steps)
            # the deterministic count syncs with the device (per-group rounding): only when it is used
            achieved = (frontend.deterministic_sparsity()
                        if pruning and (cfg.constrain == "deterministic" or logging or may_freeze) else None)
            if may_freeze and abs(achieved - target) <= cfg.freeze_tolerance:
                frontend.freeze_gates()
                frozen_at = step
            task_loss = model(wave, labels)
            expected_sparsity = frontend.expected_sparsity().to(device) if pruning else None
            optimizer.zero_grad(set_to_none=True)
            if pruning and frozen_at is None:
                reg_optimizer.zero_grad(set_to_none=True)
                reg_loss, _ = controller(expected_sparsity, step, achieved)
                (task_loss + reg_loss).backward()
            else:  # nothing to prune, or the structure is fixed: no constraint left to hold
                task_loss.backward()
            torch.nn.utils.clip_grad_norm_(main_params, cfg.grad_clip)
            optimizer.step()
            if pruning and frozen_at is None:
                reg_optimizer.step()
                controller.clamp_()
            scheduler.step()
            if logging:
                values = {"task_loss": task_loss.item(), "lr": optimizer.param_groups[0]["lr"]}
                if full_margin is not None:
                    values["margin"] = model.loss.margin
                if pruning:
                    values.update({"expected_sparsity": expected_sparsity.item(),
                                   "deterministic_sparsity": achieved, "target_sparsity": target,
                                   "lambda1": controller.lambda1.item(), "lambda2": controller.lambda2.item()})
                logger.log(step, values)
            step += 1
            progress.update()
            progress.set_postfix(loss=f"{task_loss.item():.3f}", refresh=False)
        if epoch >= cfg.epochs - cfg.average_last:
            average.add(model)
    progress.close()
    if full_margin is not None:
        model.loss.margin, model.loss.topk_penalty = full_margin, full_penalty
    average.apply(model)
    model.eval()
    return {"steps": step, "lr": lr, "gates_frozen_at_step": frozen_at}


class LiveLogger:
    """Training curves through DVCLive; metrics and plots are declared by hand in dvc.yaml."""

    def __init__(self, directory: str):
        from dvclive import Live

        self.live = Live(directory, dvcyaml=False, save_dvc_exp=False, report=None)

    def log(self, step: int, values: dict[str, float]) -> None:
        self.live.step = step
        for name, value in values.items():
            self.live.log_metric(name, value)
        self.live.next_step()

    def close(self) -> None:
        self.live.end()
