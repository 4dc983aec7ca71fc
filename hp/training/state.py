"""A training run's state between steps (TrainState): model, optimisers, schedules, gate freeze, parameter average,
random generators, with the optimiser surgery of train-time compaction and what a checkpoint holds and resumes."""
from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from hp.measure import Measure, prunes
from hp.model.frontend import Frontend, pruned_like
from hp.model.gates import HardConcrete
from hp.model.structure import WavLMStructure
from hp.training.checkpoint import Checkpoints, rng_state, set_rng_state
from hp.training.config import TrainConfig
from hp.training.schedules import GateFreeze, MarginSchedule
from hp.training.sparsity import SparsityController, param_groups
from hp.utils import distributed

if TYPE_CHECKING:  # a type only: training runs any model of TaskModel's interface (tasks sit above training)
    from hp.tasks.task_model import TaskModel


def seed_everything(seed: int) -> None:
    """This process's global generators (Python's, NumPy's, torch's) seeded."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
        if not model.frontend_frozen and not self.pruning and prunes(cfg.target_sparsity):
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
