"""One training loop for both tasks: joint fine-tuning and pruning with the sparsity Lagrangian. The step and the run
(train()) only: their config, data feeding, state and logger are the modules beside this one."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from hp.data.augment import Augmenter
from hp.training.checkpoint import Checkpoints
from hp.training.config import TrainConfig
from hp.training.feeding import GlobalBatches
from hp.training.state import TrainState, seed_everything
from hp.utils import distributed
from hp.utils.progress import Progress, stage_name

if TYPE_CHECKING:  # a type only: training runs any model of TaskModel's interface (tasks sit above training)
    from hp.tasks.task_model import TaskModel


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
    progress = Progress(stage_name(f"train {model.task}"), state.total, initial=state.step,
                        items_per_unit=cfg.batch_size)
    with progress:
        for batches in feed.from_step(state.step):
            log_step = state.step % cfg.runtime.log_every == 0 or state.step == state.total - 1  # alike on all ranks
            logging = logger is not None and log_step
            task_loss, values = step(state, batches, autocast, logging)
            if log_step:  # the loss of the whole global batch, not of rank 0's share
                last_loss = distributed.mean(task_loss.item())
                progress.set(loss=f"{last_loss:.3f}")
            if logging:
                logger.log(state.step, {"task_loss": last_loss, **values})
                if "expected_sparsity" in values:
                    progress.set(sparsity=f"{values['expected_sparsity']:.3f} -> {values['target_sparsity']:.3f}")
            state.end_step()
            progress.update()
            if checkpoints is not None and state.checkpoint_due(checkpoints):
                state.save(checkpoints)
    state.finish()
    # the last step's loss, beside what a model that learned nothing scores (at the full margin)
    return {"steps": state.step, "peak_lr": state.lr.peak, "gates_frozen_at_step": state.freeze.frozen_at,
            "compacted_at_step": state.compacted_at,
            "resumed_at_step": resumed, "final_task_loss": last_loss, "chance_task_loss": model.loss.chance_loss()}
