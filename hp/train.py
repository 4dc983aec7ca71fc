"""One training loop for both tasks: joint fine-tuning and pruning with the sparsity Lagrangian."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from hp.data.audio import SAMPLE_RATE, random_crop
from hp.sparsity import CONSTRAINED, SparsityController, param_groups
from hp.tasks import TaskModel


@dataclass(frozen=True)
class TrainConfig:
    target_sparsity: float
    epochs: int = 10
    batch_size: int = 32
    crop_seconds: float = 3.0
    lr: float = 1e-4  # peak learning rate of the model (front end and back-end)
    final_lr: float = 1e-6  # reached by exponential decay at the last step
    warmup_epochs: float = 1.0  # linear lr warm-up
    weight_decay: float = 1e-7
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
        if self.constrain not in CONSTRAINED:
            raise ValueError(f"constrain must be one of {list(CONSTRAINED)}, got {self.constrain!r}")
        if self.freeze_tolerance is not None and self.freeze_tolerance < 0:
            raise ValueError(f"freeze_tolerance must be >= 0 or null, got {self.freeze_tolerance}")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class CropDataset(Dataset):
    """Random fixed-length crops of the manifest's utterances, with integer class labels."""

    def __init__(self, table: pd.DataFrame, labels: list[str], seconds: float, seed: int):
        index = {label: i for i, label in enumerate(labels)}
        self.paths = table["path"].tolist()
        self.frames = (table["duration_s"] * SAMPLE_RATE).round().astype(int).tolist()
        self.targets = [index[label] for label in table["label"]]
        self.samples, self.seed, self.epoch = int(seconds * SAMPLE_RATE), seed, 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        # one generator per (seed, epoch, item): crops do not depend on worker count or order
        rng = np.random.default_rng((self.seed, self.epoch, i))
        wave = random_crop(self.paths[i], self.frames[i], self.samples, rng)
        return torch.from_numpy(wave), self.targets[i]


def lr_factor(step: int, warmup: int, total: int, final_ratio: float) -> float:
    """Linear warm-up to 1, then exponential decay to `final_ratio` at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return math.exp(math.log(final_ratio) * progress)


def train(model: TaskModel, table: pd.DataFrame, cfg: TrainConfig, logger=None) -> dict:
    """Fine-tune `model` (in place) on the manifest `table` while its gates learn the structure.

    Returns what the run did: steps, and the step at which the gates were frozen (None if they were not).
    """
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    model.to(device).train()
    data = CropDataset(table, model.labels, cfg.crop_seconds, cfg.seed)
    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True, drop_last=True, num_workers=cfg.num_workers,
                        generator=torch.Generator().manual_seed(cfg.seed))
    if len(loader) == 0:
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the {len(data)} training utterances")
    steps_per_epoch = len(loader)
    total = cfg.epochs * steps_per_epoch
    controller = SparsityController(cfg.target_sparsity, round(cfg.sparsity_warmup_epochs * steps_per_epoch),
                                    cfg.sparsity_schedule, cfg.clamp_lambda1, cfg.lambda2_init,
                                    cfg.constrain).to(device)
    main_groups, reg_groups = param_groups(model, controller, cfg.lr, cfg.reg_lr, cfg.weight_decay, cfg.lambda_lr)
    optimizer = torch.optim.AdamW(main_groups)
    reg_optimizer = torch.optim.AdamW(reg_groups)
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup, total, cfg.final_lr / cfg.lr))
    main_params = [p for g in main_groups for p in g["params"]]

    frontend = model.frontend
    step, frozen_at = 0, None
    progress = tqdm(total=total, desc=f"finetune {model.task}", unit="step", mininterval=5, disable=None)
    for epoch in range(cfg.epochs):
        data.epoch = epoch
        for wave, labels in loader:
            wave, labels = wave.to(device), labels.to(device)
            target = controller.target_at(step)
            logging = logger is not None and (step % cfg.log_every == 0 or step == total - 1)
            may_freeze = frozen_at is None and cfg.freeze_tolerance is not None and step >= controller.warmup_steps
            # the deterministic count syncs with the device (per-group rounding): only when it is used
            achieved = (frontend.deterministic_sparsity()
                        if cfg.constrain == "deterministic" or logging or may_freeze else None)
            if may_freeze and abs(achieved - target) <= cfg.freeze_tolerance:
                frontend.freeze_gates()
                frozen_at = step
            task_loss = model(wave, labels)
            expected_sparsity = frontend.expected_sparsity().to(device)
            optimizer.zero_grad(set_to_none=True)
            reg_optimizer.zero_grad(set_to_none=True)
            if frozen_at is None:
                reg_loss, _ = controller(expected_sparsity, step, achieved)
                (task_loss + reg_loss).backward()
            else:  # the structure is fixed: no constraint left to hold
                task_loss.backward()
            torch.nn.utils.clip_grad_norm_(main_params, cfg.grad_clip)
            optimizer.step()
            if frozen_at is None:
                reg_optimizer.step()
                controller.clamp_()
            scheduler.step()
            if logging:
                logger.log(step, {
                    "task_loss": task_loss.item(), "expected_sparsity": expected_sparsity.item(),
                    "deterministic_sparsity": achieved,
                    "target_sparsity": target, "lambda1": controller.lambda1.item(),
                    "lambda2": controller.lambda2.item(), "lr": optimizer.param_groups[0]["lr"]})
            step += 1
            progress.update()
            progress.set_postfix(loss=f"{task_loss.item():.3f}", sparsity=f"{expected_sparsity.item():.3f}",
                                 refresh=False)
    progress.close()
    model.eval()
    return {"steps": step, "gates_frozen_at_step": frozen_at}


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
