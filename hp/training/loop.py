"""One training loop for both tasks: joint fine-tuning and pruning with the sparsity Lagrangian."""
from __future__ import annotations

import contextlib
import itertools
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from hp.utils import distributed
from hp.training.checkpoint import Checkpoints, rng_state, set_rng_state
from hp.data.audio import SAMPLE_RATE, random_crop
from hp.data.augment import Augmenter
from hp.measure import PARAMS, Measure
from hp.params import Runtime
from hp.utils.files import atomic_path, replace_dir
from hp.model.gates import HardConcrete
from hp.model.structure import WavLMStructure
from hp.model.wavlm import Frontend, pruned_like
from hp.training.schedules import GateFreeze, LRSchedule, MarginSchedule
from hp.training.sparsity import CONSTRAINED, SparsityController, param_groups
from hp.tasks.task_model import TaskModel


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
                + (cls.PRUNING if target_sparsity > 0 else ()))

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
        if self.compact_on_freeze and self.freeze_tolerance is None and self.target_sparsity > 0:
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


class ParameterAverage:
    """The mean of the model's floating-point state at the ends of the last `n` epochs.

    The gates are not averaged: the model keeps their final values, so the structure (and its sparsity) is
    the one the Lagrangian reached, not a blend of two that may round differently.
    """

    def __init__(self, n: int):
        self.n, self.count, self.sums = n, 0, None

    def add(self, model: nn.Module) -> None:
        if self.n == 1:
            return
        gates = {name for name, m in model.named_modules() if isinstance(m, HardConcrete)}
        # copy=True: on CPU in float32, .float().cpu() would alias the live weights
        state = {k: v.detach().to("cpu", torch.float32, copy=True) for k, v in model.state_dict().items()
                 if v.is_floating_point() and k.rpartition(".")[0] not in gates}
        self.sums = state if self.sums is None else {k: self.sums[k] + v for k, v in state.items()}
        self.count += 1

    def state_dict(self) -> dict:
        return {"count": self.count, "sums": self.sums}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.sums = state["count"], state["sums"]

    def prune(self, frontend: nn.Module, prefix: str = "frontend.") -> None:
        """The sums of the front end's entries sliced as its train-time compaction slices the weights."""
        if self.sums is not None:
            own = {k[len(prefix):]: v for k, v in self.sums.items() if k.startswith(prefix)}
            pruned = pruned_like(frontend, own)
            self.sums = {k: v for k, v in self.sums.items() if not k.startswith(prefix)}
            self.sums.update({prefix + k: v for k, v in pruned.items()})

    def apply(self, model: nn.Module) -> None:
        if self.count > 1:
            current = model.state_dict()
            model.load_state_dict({k: (v / self.count).to(current[k]) for k, v in self.sums.items()}, strict=False)


def make_optimizer(cfg: TrainConfig, groups: list[dict]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups)


class ShardedSampler(Sampler[int]):
    """This process's share of each epoch: one seeded permutation of the utterances on every rank, dealt out
    round robin. The ranks' k-th micro-batches together are then the k-th contiguous slice of the permutation,
    whatever the number of processes, so a run's global batches do not depend on how it is spread. An epoch
    covers whole global steps only (the rest of the permutation waits for the next epoch's shuffle).
    `set_epoch(e, skip)` starts epoch e after this rank's first `skip` indices (a resumed run)."""

    def __init__(self, n: int, per_rank_step: int, rank: int, world: int, seed: int):
        self.n, self.rank, self.world, self.seed = n, rank, world, seed
        self.per_rank = (n // (world * per_rank_step)) * per_rank_step
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return self.per_rank - self.skip

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        return iter(order[: self.per_rank * self.world][self.rank::self.world][self.skip:].tolist())


class Objective(nn.Module):
    """What one step differentiates: the task loss and, while the gates learn, the expected sparsity the
    Lagrangian holds to the target. Both come out of one forward, which DDP wraps, so that DDP sees every gate
    take part (a sampled mask can leave a block's gate out of the task loss; the Lagrangian still reaches it)."""

    def __init__(self, model: TaskModel, measure: Measure):
        super().__init__()
        self.model, self.measure = model, measure

    def forward(self, wave: torch.Tensor, labels: torch.Tensor, sparsity: bool):
        loss = self.model(wave, labels)
        if not sparsity:
            return loss, None
        with torch.autocast(wave.device.type, enabled=False):  # the count's polynomial in float64/32
            return loss, self.model.frontend.expected_sparsity(self.measure)


class GlobalBatches:
    """This process's share of the run's data: each optimiser step's global batch as `grad_accumulation`
    micro-batches of random crops, epoch after epoch, from any step on (a resumed run continues mid-epoch)."""

    def __init__(self, table: pd.DataFrame, labels: list[str], cfg: TrainConfig, augment: Augmenter | None,
                 micro: int, rank: int, world: int):
        self.data = CropDataset(table, labels, cfg.crop_seconds, cfg.seed, augment)
        self.accumulation, self.epochs = cfg.grad_accumulation, cfg.epochs
        self.per_step = micro * self.accumulation  # this process's utterances per optimiser step
        self.sampler = ShardedSampler(len(self.data), self.per_step, rank, world, cfg.seed)
        # its own generator: creating an epoch's iterator must not draw from the global one (resumption)
        self.loader = DataLoader(self.data, batch_size=micro, sampler=self.sampler, num_workers=cfg.runtime.num_workers,
                                 generator=torch.Generator().manual_seed(cfg.seed))
        self.steps_per_epoch = self.sampler.per_rank // self.per_step
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch_size {cfg.batch_size} is larger than the {len(self.data)} training utterances")

    def from_step(self, step: int):
        """For each step from `step` to the end of the run: an iterator over its micro-batches (read lazily)."""
        first, skip = divmod(step, self.steps_per_epoch)
        for epoch in range(first, self.epochs):
            self.data.epoch = epoch
            self.sampler.set_epoch(epoch, skip * self.per_step if epoch == first else 0)
            batches = iter(self.loader)
            for _ in range(len(self.sampler) // self.per_step):
                yield itertools.islice(batches, self.accumulation)


class MarginRamp:
    """The head's AAM margin along its ramp (hp.training.schedules.MarginSchedule, by fractional epoch), the inter-top-k
    penalty following it (as in WeSpeaker); nothing for a head without a margin (CM's)."""

    def __init__(self, loss: nn.Module, schedule: MarginSchedule):
        self.loss, self.schedule = loss, schedule
        self.full = getattr(loss, "margin", None), getattr(loss, "topk_penalty", None)  # AAM-softmax (SV) only

    @property
    def applies(self) -> bool:
        return self.full[0] is not None

    def set(self, epoch: float) -> None:
        if self.applies:
            share = self.schedule(epoch)
            self.loss.margin, self.loss.topk_penalty = self.full[0] * share, self.full[1] * share

    def restore(self) -> None:
        """The full margin and penalty, as the trained model is used and scored."""
        if self.applies:
            self.loss.margin, self.loss.topk_penalty = self.full


class TrainState:
    """One run's state and what acts on it between steps: the model, its optimiser and the gates' + lambdas'
    (`reg_optimizer`, None when nothing is pruned), the sparsity controller (the lambdas), the schedules (lr,
    margin, sparsity target: functions of the step), the gate freeze, the running parameter average, the step
    (and so the epoch and the position in it) and the random generators (every process's global ones, the
    shared gate-sample and LayerDrop ones). `state_dict()` is what a checkpoint holds (hp.training.checkpoint);
    `load_state_dict()` continues from one."""

    def __init__(self, model: TaskModel, cfg: TrainConfig, steps_per_epoch: int, device: torch.device,
                 sampling: dict[str, torch.Generator]):
        self.model, self.cfg, self.device, self.sampling = model, cfg, device, sampling
        self.steps_per_epoch, self.total, self.step = steps_per_epoch, cfg.epochs * steps_per_epoch, 0
        # a front end without gates (prune_units empty: target 0, the dense model fine-tuned) trains plainly: no
        # Lagrangian, no reg optimiser, no structure to freeze, no sparsity curves
        self.pruning = not model.frontend_frozen and bool(model.frontend.gates())
        warmup = round(cfg.sparsity_warmup_epochs * steps_per_epoch)
        self.controller = SparsityController(cfg.target_sparsity, warmup, cfg.sparsity_schedule, cfg.clamp_lambda1,
                                             cfg.lambda2_init, cfg.constrain).to(device)
        if not model.frontend_frozen and not self.pruning and cfg.target_sparsity != 0:
            raise ValueError(f"target_sparsity {cfg.target_sparsity} needs gates, but the front end has none "
                             "(prune_units empty)")
        self.lr, self.targets = cfg.lr_schedule(steps_per_epoch), self.controller.targets
        self.margin = MarginRamp(model.loss, cfg.margin_ramp())
        self.freeze = GateFreeze(cfg.freeze_tolerance if self.pruning else None, self.targets.warmup)
        self.compacted_at: int | None = None  # the step of the train-time compaction (None: not compacted)
        self.objective, self._net = Objective(model, cfg.measure), None
        self._make_optimizers()
        self.average = ParameterAverage(cfg.average_last)

    def _make_optimizers(self) -> None:
        """The model's and the reg optimiser, over the parameters the model has now."""
        cfg = self.cfg
        # the reg optimiser's rates stay fixed (the authors schedule the model's only)
        main_groups, reg_groups = param_groups(self.model, self.controller, self.lr(self.step), cfg.reg_lr,
                                               cfg.weight_decay, cfg.lambda_lr)
        self.optimizer = make_optimizer(cfg, main_groups)
        # once compacted the gates are frozen for good: nothing left for the reg optimiser
        self.reg_optimizer = torch.optim.AdamW(reg_groups) if self.pruning and self.compacted_at is None else None
        # the authors clip one norm over the whole model, gates included (the lambdas are not the model's); a frozen
        # gate has no gradient (HardConcrete.freeze drops it)
        self.clipped = [p for p in self.model.parameters() if p.requires_grad]

    def network(self) -> nn.Module:
        """What a step runs: the objective, wrapped in DDP under torchrun (wrapped anew after a compaction)."""
        if self._net is None:
            # LayerDrop leaves a layer's parameters without gradient in some steps
            self._net = (DistributedDataParallel(self.objective, find_unused_parameters=True)
                         if distributed.world_size() > 1 else self.objective)
        return self._net

    @torch.no_grad()
    def compact(self) -> None:
        """Train-time compaction, the gates frozen: the front end loses its pruned units in place, its gates shrunk
        to the kept ones and still applied (Frontend.prune(fold=False)), so the model computes what it did. The
        optimiser's per-parameter state (AdamW moments, SGD momentum) and the running parameter average are sliced
        to the same units, the optimisers rebuilt over the new parameters and DDP wraps the smaller model."""
        frontend, prefix = self.model.frontend, "frontend."
        names = {p: n for n, p in self.model.named_parameters()}
        state = {names[p]: dict(s) for p, s in self.optimizer.state.items()}
        sliced = {key for s in state.values() for key, v in s.items() if torch.is_tensor(v) and v.dim() > 0}
        moments = {key: pruned_like(frontend, {n[len(prefix):]: s[key] for n, s in state.items()
                                               if n.startswith(prefix) and key in s}) for key in sliced}
        self.average.prune(frontend, prefix)
        frontend.prune(fold=False)
        self.compacted_at = self.step
        self._adopt(state, moments, prefix)

    def _adopt(self, state: dict[str, dict], moments: dict[str, dict], prefix: str) -> None:
        """New optimisers over the compacted model, given the old per-parameter `state` by name and its `moments`
        sliced (by key, then front-end name); a new DDP wrapper."""
        self._make_optimizers()
        for name, p in self.model.named_parameters():
            if name in state:
                own = name[len(prefix):] if name.startswith(prefix) else None
                self.optimizer.state[p] = {key: moments[key][own] if key in moments and own in moments[key] else v
                                           for key, v in state[name].items()}
        self._net = None

    def _rebuild(self, structure: WavLMStructure, compacted_at: int) -> None:
        """A resumed run that was compacted (at step `compacted_at`): the front end rebuilt at its compacted
        structure, gates frozen (the checkpoint's weights and masks then load into it), on the shared sample
        generators."""
        old = self.model.frontend
        new = Frontend(old.config, structure, old.prune_units).to(self.device).train(old.training)
        new.freeze_gates()
        for gate in new.gates().values():
            gate.generator = self.sampling.get("gates")
        new.encoder.layerdrop_generator = self.sampling.get("layerdrop")
        self.model.frontend = new
        self.compacted_at = compacted_at
        self._adopt({}, {}, "frontend.")

    @property
    def epoch(self) -> int:
        return self.step // self.steps_per_epoch

    @property
    def constraining(self) -> bool:
        """Whether the gates learn in this step, the Lagrangian holding their sparsity to the target."""
        return self.pruning and not self.freeze.frozen

    def state_dict(self) -> dict:
        """A checkpoint's content. Every process must call it: it gathers every rank's generator states, so that
        each resumes its own."""
        rng = distributed.all_gather(rng_state(self.device))
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "reg_optimizer": None if self.reg_optimizer is None else self.reg_optimizer.state_dict(),
                "controller": self.controller.state_dict(), "average": self.average.state_dict(),
                "step": self.step, "frozen_at": self.freeze.frozen_at, "compacted_at": self.compacted_at,
                "structure": None if self.compacted_at is None else self.model.frontend.structure.to_dict(), "rng": rng,
                "sampling": {name: g.get_state() for name, g in self.sampling.items()}}

    def load_state_dict(self, state: dict) -> None:
        if state["compacted_at"] is not None and self.compacted_at is None:
            self._rebuild(WavLMStructure.from_dict(state["structure"], "checkpoint"), state["compacted_at"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.reg_optimizer is not None:
            self.reg_optimizer.load_state_dict(state["reg_optimizer"])
        self.controller.load_state_dict(state["controller"])
        self.average.load_state_dict(state["average"])
        self.step, self.freeze.frozen_at, self.compacted_at = state["step"], state["frozen_at"], state["compacted_at"]
        if self.freeze.frozen:
            self.model.frontend.freeze_gates()
        for name, generator in self.sampling.items():
            generator.set_state(state["sampling"][name])
        # this rank's generators; a run resumed on more processes than it was saved from starts the new ranks
        # from rank 0's (then only the global batches, not the dropout masks, are those of the first run)
        rank = distributed.rank()
        set_rng_state(state["rng"][rank if rank < len(state["rng"]) else 0], self.device)

    def resume(self, checkpoints: Checkpoints | None) -> int | None:
        """Continue from the checkpoint of this run in `checkpoints`, if there is one: the step it resumes at."""
        state = None if checkpoints is None else checkpoints.latest()
        if state is None:
            return None
        self.load_state_dict(state)
        return self.step

    def checkpoint_due(self, checkpoints: Checkpoints) -> bool:
        """After every `checkpoint_every` steps and each epoch's end, but not at the end of the run."""
        return (checkpoints.due(self.step) or self.step % self.steps_per_epoch == 0) and self.step < self.total

    def save(self, checkpoints: Checkpoints) -> None:
        """Every process takes part (the generator states); rank 0 writes."""
        state = self.state_dict()
        if distributed.is_main():
            checkpoints.save(state)
        distributed.barrier()

    def begin_step(self, logging: bool) -> tuple[float, float, float | None]:
        """This step's margin and lr set, the gates frozen if it is time: (lr, target, deterministic sparsity, or
        None where neither the constraint nor the log nor the freeze needs it: counting syncs with the device)."""
        self.margin.set(self.step / self.steps_per_epoch)
        lr = self.lr(self.step)  # set before the step, as the authors' scheduler does: the rate this step uses
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        target = self.targets(self.step) if self.pruning else 0.0
        needed = self.cfg.constrain == "deterministic" or logging or self.freeze.watching(self.step)
        achieved = self.model.frontend.deterministic_sparsity(self.cfg.measure) if self.pruning and needed else None
        if self.freeze.update(self.step, achieved, target):
            self.model.frontend.freeze_gates()
            if self.cfg.compact_on_freeze:
                self.compact()
        return lr, target, achieved

    def end_step(self) -> None:
        """The step done; at the end of each of the last `average_last` epochs the weights join the average."""
        self.step += 1
        if self.step % self.steps_per_epoch == 0 and self.epoch > self.cfg.epochs - self.cfg.average_last:
            self.average.add(self.model)

    def finish(self) -> None:
        """The trained model as it is used: gate samples on the global generator, the full margin, the weights
        averaged, in eval mode."""
        self.model.frontend.share_sampling(None)
        self.margin.restore()
        self.average.apply(self.model)
        self.model.eval()


def step(state: TrainState, batches, autocast: torch.autocast, logging: bool) -> tuple[torch.Tensor, dict | None]:
    """One optimiser step at `state.step`: the schedules applied, then forward and backward over the
    micro-batches `batches` under one gate sample (gradients accumulated, all-reduced on the last), clipping
    and both optimisers' update. Returns this process's share of the global batch's task loss, a tensor (read
    back only when logged: no device sync per step), and, when `logging`, the step's other curves."""
    cfg, controller, frontend, device = state.cfg, state.controller, state.model.frontend, state.device
    lr, target, achieved = state.begin_step(logging)
    net, constraining = state.network(), state.constraining
    state.optimizer.zero_grad(set_to_none=True)
    if constraining:
        state.reg_optimizer.zero_grad(set_to_none=True)
    task_loss = torch.zeros((), device=device)
    with frontend.one_gate_sample():
        for k, batch in enumerate(batches):
            wave, labels = (t.to(device) for t in batch)
            # gradients are all-reduced once per step, on the last micro-batch
            sync = not isinstance(net, DistributedDataParallel) or k == cfg.grad_accumulation - 1
            with contextlib.nullcontext() if sync else net.no_sync():
                with autocast:
                    loss, expected_sparsity = net(wave, labels, constraining)
                loss = loss.float()
                task_loss += loss.detach() / cfg.grad_accumulation
                if constraining:  # the Lagrangian of the (rank-independent) gates
                    reg_loss, _ = controller(expected_sparsity.to(device), state.step, achieved)
                    loss = loss + reg_loss
                (loss / cfg.grad_accumulation).backward()
    if logging and state.pruning:  # before the gates' update: the sparsity this step was constrained at
        expected = frontend.expected_sparsity(cfg.measure).item()
    if cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(state.clipped, cfg.grad_clip)
    state.optimizer.step()
    if constraining:
        state.reg_optimizer.step()
        controller.clamp_()
    if not logging:
        return task_loss, None
    values = {"lr": lr}
    if state.margin.applies:
        values["margin"] = state.model.loss.margin
    if state.pruning:
        values.update({"expected_sparsity": expected, "deterministic_sparsity": achieved, "target_sparsity": target,
                       "lambda1": controller.lambda1.item(), "lambda2": controller.lambda2.item()})
    return task_loss, values


def train(model: TaskModel, table: pd.DataFrame, cfg: TrainConfig, logger=None,
          augment: Augmenter | None = None, checkpoints: Checkpoints | None = None) -> dict:
    """Fine-tune `model` (in place) on the manifest `table` while its gates learn the structure.

    With the front end frozen (TaskModel.freeze_frontend) only the back-end and loss learn and nothing is
    pruned: the authors' first phase; one without gates (target_sparsity 0) is fine-tuned plainly, no
    Lagrangian. Under torchrun the model is wrapped in DDP: every rank sees its share of
    each global batch (`cfg.batch_size` utterances per optimiser step, over all ranks and accumulation
    micro-batches), gradients are averaged, and the gates and lambdas, updated from the same averaged
    gradients and the same (rank-independent) sparsity terms, stay identical on all ranks. `checkpoints`
    saves the whole training state and, when it holds one of this run, resumes from it. Returns what the run
    did: steps, the effective peak lr, the step at which the gates were frozen (None if they were not), and
    the step it resumed from (None).
    """
    rank, world = distributed.rank(), distributed.world_size()
    device = distributed.device(cfg.runtime.device)
    distributed.init(device)
    micro = cfg.micro_batch(world)
    if micro < 2 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ValueError(f"each forward sees {micro} utterance (batch_size / (processes x grad_accumulation)), too "
                         "few for the batch norm of the back-end or CM head: it needs at least 2")
    seed_everything(cfg.seed + rank)  # dropout differs between ranks ...
    model.to(device).train()
    model.frontend.set_sampled_execution(cfg.sampled_execution)
    sampling = model.frontend.share_sampling(cfg.seed)  # ... gate samples and LayerDrop agree
    feed = GlobalBatches(table, model.labels, cfg, augment, micro, rank, world)
    state = TrainState(model, cfg, feed.steps_per_epoch, device, sampling)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.use_bf16(device))
    resumed, last_loss = state.resume(checkpoints), None
    progress = tqdm(total=state.total, initial=state.step, desc=f"train {model.task}", unit="step", mininterval=5,
                    disable=None if rank == 0 else True)
    for batches in feed.from_step(state.step):
        log_step = state.step % cfg.runtime.log_every == 0 or state.step == state.total - 1  # the same on every rank
        logging = logger is not None and log_step
        task_loss, values = step(state, batches, autocast, logging)
        if log_step:  # the loss of the whole global batch, not of rank 0's share
            last_loss = distributed.mean(task_loss.item())
            progress.set_postfix(loss=f"{last_loss:.3f}", refresh=False)
        if logging:
            logger.log(state.step, {"task_loss": last_loss, **values})
        state.end_step()
        progress.update()
        if checkpoints is not None and state.checkpoint_due(checkpoints):
            state.save(checkpoints)
    progress.close()
    state.finish()
    # the last step's loss, beside what a model that learned nothing scores (at the full margin)
    return {"steps": state.step, "peak_lr": state.lr.peak, "gates_frozen_at_step": state.freeze.frozen_at,
            "compacted_at_step": state.compacted_at,
            "resumed_at_step": resumed, "final_task_loss": last_loss, "chance_task_loss": model.loss.chance_loss()}


class LiveLogger:
    """Training curves through DVCLive; metrics and plots are declared by hand in dvc.yaml.

    The curves are written to `staging` while the run lasts and replace `directory` only at close(), once the run
    has finished: a run that fails, at its checks or hours in, leaves the previous run's curves as they were."""

    def __init__(self, directory: str | Path, staging: str | Path, resume_at: int | None = None):
        """`resume_at`: continue the staged curves of a run resumed at this step, dropping the rows it logged from
        this step on before it was stopped (they are logged again); None: start afresh."""
        from dvclive import Live

        self.directory, self.staging = Path(directory), Path(staging)
        if resume_at is None:
            shutil.rmtree(self.staging, ignore_errors=True)
        else:
            for tsv in (self.staging / "plots" / "metrics").glob("*.tsv"):
                rows = pd.read_csv(tsv, sep="\t")
                with atomic_path(tsv) as tmp:
                    rows[rows["step"] < resume_at].to_csv(tmp, sep="\t", index=False)
        self.live = Live(str(self.staging), dvcyaml=False, save_dvc_exp=False, report=None,
                         resume=resume_at is not None)

    def log(self, step: int, values: dict[str, float]) -> None:
        self.live.step = step
        for name, value in values.items():
            self.live.log_metric(name, value)
        self.live.next_step()

    def close(self) -> None:
        self.live.end()
        replace_dir(self.staging, self.directory)
