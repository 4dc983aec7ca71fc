"""A training run's typed config (TrainConfig): the recipe of params.yaml's warmup.<task> or finetune.<task> group
and how it runs, checked as it is built, with the batch split, precision and schedules it implies."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from hp.measure import PARAMS, Measure, prunes
from hp.params import Runtime
from hp.training.schedules import LRSchedule, MarginSchedule
from hp.training.sparsity import CONSTRAINED


OPTIMIZERS = ("adamw", "sgd")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class TrainConfig:
    """A training run's recipe (params.yaml's warmup.<task> or finetune.<task> group, every key required) and how
    it runs (the runtime group). The fields with a default are read only by some runs, which require their keys
    (TrainConfig.read_only_by): the default is what the other runs' code paths never look at."""

    target_sparsity: float  # 0: no gates, plain fine-tuning (and the warm-up's frozen front end)
    epochs: int
    batch_size: int  # global: utterances per optimiser step, over all processes and accumulation
    crop_seconds: float
    aug_prob: float  # MUSAN / RIR augmentation of each crop, when the manifests list them
    optimizer: str  # "adamw" or "sgd" (Nesterov momentum; the authors' frozen-front-end phase)
    lr: float  # lr0 of the model (front end and back-end): the exponential decay starts from it ...
    final_lr: float  # ... at step 0 and reaches this at the end of the run (hp.training.schedules.LRSchedule)
    lr_reference_batch: int | None  # set: lr and final_lr scale by batch_size / this (authors: 64)
    warmup_epochs: float  # the linear warm-up multiplying the decay over these first epochs ...
    warmup_from_zero: bool  # ... from 0 (else from 1 to the batch scale, as WeSpeaker's warm_from_zero)
    weight_decay: float  # on weights of 2 or more dimensions (biases and norms: none)
    average_last: int  # the result is the parameter average of the last N epochs' ends (gates: the last)
    grad_clip: float | None  # max gradient norm over all model parameters, gates included; None: no clipping
    seed: int
    grad_accumulation: int  # micro-batches per optimiser step (each of batch_size / (processes * this))
    precision: str  # "auto": bf16 autocast on CUDA, float32 on CPU; "bf16" or "fp32" to force either
    resume: str  # "auto": continue from this run's last checkpoint if there is one; "never"
    runtime: Runtime  # device, data workers, logging, checkpointing, processes: nothing a result depends on
    # what target_sparsity is a fraction of (top-level target_measure, macs_reference_seconds)
    measure: Measure = PARAMS
    # sgd only
    momentum: float = 0.0
    # a margin loss only (SV's AAM): the margin is 0 until margin_start_epoch, then rises to the head's margin
    margin_start_epoch: float = 0.0  # at margin_full_epoch (both 0: the full margin from the start)
    margin_full_epoch: float = 0.0
    margin_schedule: str = "linear"  # or "exp": WeSpeaker's exponential rise (hp.training.schedules.MarginSchedule)
    # pruning runs only (target_sparsity > 0)
    reg_lr: float = 0.0  # log_alpha (+) and, unless lambda_lr is set, the lambdas (-)
    lambda_lr: float | None = None
    sparsity_warmup_epochs: float = 0.0  # target grows from 0 to target_sparsity over these epochs
    sparsity_schedule: str = "linear"
    clamp_lambda1: bool = False
    lambda2_init: float = 0.0  # > 0: a quadratic penalty from the start (see SparsityController)
    constrain: str = "expected"  # "deterministic": hold the sparsity compaction will realise to the target
    # after the target warm-up, freeze the gates at the first step whose deterministic sparsity is this close
    # to the target; the rest of the run fine-tunes that fixed structure (None: the gates learn to the end)
    freeze_tolerance: float | None = None
    # once the gates freeze, compact the training model in place (TrainState.compact): the rest of the run trains
    # and pays for the kept units only, and ends with the model it would have ended with otherwise
    compact_on_freeze: bool = False
    # while the gates learn, a step computes only the units its gate sample keeps (hp.model.sampled): the same loss,
    # gradients and updates as computing every unit times its mask, at the sampled structure's cost; false: the latter
    sampled_execution: bool = True

    SGD = ("momentum",)
    MARGIN = ("margin_start_epoch", "margin_full_epoch", "margin_schedule")
    PRUNING = ("reg_lr", "lambda_lr", "sparsity_warmup_epochs", "sparsity_schedule", "clamp_lambda1", "lambda2_init",
               "constrain", "freeze_tolerance", "compact_on_freeze", "sampled_execution")

    @classmethod
    def read_only_by(cls, values: dict, target_sparsity: float, margin: bool) -> tuple[str, ...]:
        """The defaulted fields a run with these settings reads, whose keys its group must therefore hold."""
        return ((cls.SGD if values.get("optimizer") == "sgd" else ()) + (cls.MARGIN if margin else ())
                + (cls.PRUNING if prunes(target_sparsity) else ()))

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        if not 0 <= self.aug_prob <= 1:
            raise ValueError(f"aug_prob must be in [0, 1], got {self.aug_prob}")
        if self.average_last < 1 or self.average_last > max(1, self.epochs):
            raise ValueError(f"average_last must be in 1..epochs ({self.epochs}), got {self.average_last}")
        self.margin_ramp()  # checks the margin settings
        clip = self.grad_clip
        if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0):
            raise ValueError(f"grad_clip must be a positive number or null, got {clip!r}")
        if self.lr_reference_batch is not None and self.lr_reference_batch < 1:
            raise ValueError(f"lr_reference_batch must be a positive integer or null, got {self.lr_reference_batch}")
        if self.constrain not in CONSTRAINED:
            raise ValueError(f"constrain must be one of {list(CONSTRAINED)}, got {self.constrain!r}")
        if self.freeze_tolerance is not None and self.freeze_tolerance < 0:
            raise ValueError(f"freeze_tolerance must be >= 0 or null, got {self.freeze_tolerance}")
        if self.compact_on_freeze and self.freeze_tolerance is None and prunes(self.target_sparsity):
            raise ValueError("compact_on_freeze needs freeze_tolerance: gates that never freeze never fix the "
                             "structure")
        if self.grad_accumulation < 1:
            raise ValueError("grad_accumulation must be a positive integer")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.resume not in ("auto", "never"):
            raise ValueError(f"resume must be 'auto' or 'never', got {self.resume!r}")

    def micro_batch(self, world: int) -> int:
        """Utterances per forward on each process: the global batch shared by processes and accumulation."""
        parts = world * self.grad_accumulation
        if self.batch_size % parts:
            raise ValueError(f"batch_size {self.batch_size} must divide evenly into {world} process(es) x "
                             f"grad_accumulation {self.grad_accumulation}")
        return self.batch_size // parts

    def use_bf16(self, device: torch.device) -> bool:
        if self.precision == "bf16" and device.type != "cuda":
            raise ValueError("precision bf16 needs a CUDA device (CPU training runs in float32)")
        return self.precision == "bf16" or (self.precision == "auto" and device.type == "cuda")

    @property
    def lr_scale(self) -> float:
        """Global batch / reference batch (1 without a reference): the authors' linear lr scaling."""
        return 1.0 if self.lr_reference_batch is None else self.batch_size / self.lr_reference_batch

    def lr_schedule(self, steps_per_epoch: int) -> LRSchedule:
        return LRSchedule(self.lr, self.final_lr, self.epochs * steps_per_epoch,
                          round(self.warmup_epochs * steps_per_epoch), self.warmup_from_zero, self.lr_scale)

    def margin_ramp(self) -> MarginSchedule:
        return MarginSchedule(self.margin_start_epoch, self.margin_full_epoch, self.margin_schedule)
