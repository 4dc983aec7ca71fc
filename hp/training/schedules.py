"""Schedules of one training run as small objects: the learning rate, the AAM margin and the sparsity target at
each step, and the step at which the gates freeze.

The first two follow the authors' WeSpeaker schedulers (recipes/AUTHORS.md names the files): the learning rate
is `ExponentialDecrease`, the margin `MarginScheduler`. The target's warm-up is CoFi/DPHuBERT's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

MARGIN_SHAPES = ("linear", "exp")
# Fraction of the final sparsity target reached at progress p in [0, 1] of its warm-up.
TARGET_SHAPES = {
    "linear": lambda p: p,
    "cosine": lambda p: 0.5 * (1.0 - math.cos(math.pi * p)),
}


@dataclass(frozen=True)
class LRSchedule:
    """lr(i) = c(i) * lr0 * (lrT / lr0) ** (i / T) for steps i = 0 .. T - 1 (WeSpeaker's ExponentialDecrease).

    The decay runs over the whole run from step 0; the warm-up multiplies it, it does not precede it. `scale`
    is the global batch over the reference batch (the authors: processes x per-GPU batch / 64); after the
    `warmup` steps c = scale. During them c(i) = scale * i / warmup from zero (step 0 trains at lr 0), or,
    not from zero, ramps 1 -> scale when scale > 1 (and stays at scale when scale <= 1, as theirs does).
    """

    initial: float  # lr0, before scaling
    final: float  # lrT, before scaling: (lrT / lr0) sets the decay only
    total: int  # T, optimiser steps in the run
    warmup: int = 0  # W, steps
    from_zero: bool = True
    scale: float = 1.0

    def __post_init__(self):
        if not (self.initial > 0 and self.final > 0):
            raise ValueError(f"lr and final_lr must be positive, got {self.initial} and {self.final}")
        if self.total < 1 or self.warmup < 0:
            raise ValueError(f"need total >= 1 and warmup >= 0 steps, got {self.total} and {self.warmup}")

    def coefficient(self, step: int) -> float:
        if step >= self.warmup:
            return self.scale
        if self.from_zero:
            return self.scale * step / self.warmup
        return (self.scale - 1) * step / self.warmup + 1.0 if self.scale > 1 else self.scale

    def __call__(self, step: int) -> float:
        return self.coefficient(step) * self.initial * math.exp(step / self.total * math.log(self.final / self.initial))

    @property
    def peak(self) -> float:
        """The highest rate of the run: within or at the end of the warm-up, as the decay falls from step 0."""
        return max(self(i) for i in range(min(self.warmup, self.total - 1) + 1))


@dataclass(frozen=True)
class MarginSchedule:
    """Share of the full AAM margin at (fractional) epoch e (WeSpeaker's MarginScheduler, epochs from 0):
    0 before `start`, 1 from `full` on, and in between linear or, `exp`, 1 - 0.001 ** progress (it rises
    fast, then levels off just under 1). Starting margin-free lets the classes spread before the angular
    margin makes the loss hard. start == full: a step to the full margin there (0, 0: full throughout)."""

    start: float = 0.0
    full: float = 0.0
    shape: str = "linear"

    def __post_init__(self):
        if self.full < self.start:
            raise ValueError("margin_full_epoch must not be before margin_start_epoch")
        if self.shape not in MARGIN_SHAPES:
            raise ValueError(f"margin_schedule must be one of {list(MARGIN_SHAPES)}, got {self.shape!r}")

    def __call__(self, epoch: float) -> float:
        if epoch >= self.full:
            return 1.0
        if epoch < self.start:
            return 0.0
        progress = (epoch - self.start) / (self.full - self.start)
        if self.shape == "linear":
            return progress
        return 1.0 - math.exp(progress * math.log(1e-3 / (1.0 + 1e-6)))  # their constants, final_val / initial_val


@dataclass(frozen=True)
class TargetSchedule:
    """The sparsity target at step i: `target` * shape(i / warmup), growing from 0 over the first `warmup` steps
    (linear, or cosine: slow start and slow finish), then `target` (warmup 0: `target` from the start)."""

    target: float
    warmup: int  # steps
    shape: str = "linear"

    def __post_init__(self):
        if not 0.0 <= self.target < 1.0:
            raise ValueError(f"target_sparsity must be in [0, 1), got {self.target}")
        if self.shape not in TARGET_SHAPES:
            raise ValueError(f"unknown sparsity schedule {self.shape!r}; choose from {sorted(TARGET_SHAPES)}")
        if self.warmup < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup}")

    def __call__(self, step: int) -> float:
        progress = 1.0 if self.warmup == 0 else min(step / self.warmup, 1.0)
        return self.target * TARGET_SHAPES[self.shape](progress)


@dataclass
class GateFreeze:
    """When the gates stop learning: at the first step from `start` on (the end of the target's warm-up) whose
    deterministic sparsity is within `tolerance` of the target; never with tolerance None. The rest of the run
    fine-tunes that fixed structure. `frozen_at`, the step it happened (None: not yet), is part of a run's
    resumable state."""

    tolerance: float | None
    start: int = 0  # steps
    frozen_at: int | None = None

    def __post_init__(self):
        if self.tolerance is not None and self.tolerance < 0:
            raise ValueError(f"freeze_tolerance must be >= 0 or null, got {self.tolerance}")

    @property
    def frozen(self) -> bool:
        return self.frozen_at is not None

    def watching(self, step: int) -> bool:
        """Whether the gates may freeze at this step (only then does the decision need the sparsity)."""
        return self.tolerance is not None and self.frozen_at is None and step >= self.start

    def update(self, step: int, sparsity: float | None, target: float) -> bool:
        """True when the gates freeze at this step, at deterministic `sparsity` (recorded as `frozen_at`)."""
        if self.watching(step) and abs(sparsity - target) <= self.tolerance:
            self.frozen_at = step
            return True
        return False
