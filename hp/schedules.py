"""Schedules of one training run as small objects: the learning rate and the AAM margin at each step.

Both follow the authors' WeSpeaker schedulers (recipes/AUTHORS.md names the files): the learning rate is
`ExponentialDecrease`, the margin `MarginScheduler`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

MARGIN_SHAPES = ("linear", "exp")


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
