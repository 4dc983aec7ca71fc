"""Sampled-structure execution: a training step computes only the units its gate sample keeps.

In training a gate group draws one hard-concrete mask per forward, shared by the whole batch (hp.model.gates). A
unit whose sample is exactly 0 contributes nothing forward, and every gradient it would send is multiplied by
that 0: its weights get exactly zero, and so does its log_alpha (the clamp that made the sample 0 has derivative
0; the Lagrangian reads log_alpha directly, not the sample). Skipping the unit is therefore exact. A block gathers
the kept units' slices of its weights with `index_select`, whose backward scatters into a full-size zero gradient,
so every parameter gets the gradient the masked computation gives it (zeros where skipped) and the optimiser,
clipping, averaging, DDP's all-reduce and checkpoints see what they saw before. A block the sample switches off
(block gate 0, or every unit 0) is not run at all: `skip` gives its parameters their zero gradients instead.

What is not the same: dropout draws its masks for the computed units only, so with dropout on a run takes other
(equally distributed) random masks than the masked computation would; sums over fewer terms round differently
(float32: ~1e-6 relative).

A frozen gate's fixed mask (hp.training.schedules.GateFreeze, without train-time compaction) is skipped the same way in
training: its zeros are constants, so the argument holds unchanged. Eval mode, the switch off and compacted models
(which hold no zero unit) compute every unit as before.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import NamedTuple

import torch
from torch import nn

from hp.model.gates import HardConcrete

_counters: list[dict[HardConcrete, list[int]]] = []  # see computed_units


@contextlib.contextmanager
def computed_units():
    """Within this context, count for each gate of a training forward (learning or frozen) how many of its units the
    forwards computed: {gate: [computed, of n]}, summed over forwards; a block's gate counts 1 for a block that ran."""
    counts: dict[HardConcrete, list[int]] = defaultdict(lambda: [0, 0])
    _counters.append(counts)
    try:
        yield counts
    finally:
        _counters.remove(counts)


def _count(gate: HardConcrete | None, computed: int) -> None:
    if gate is not None and gate.training:
        for counts in _counters:
            counts[gate][0] += computed
            counts[gate][1] += gate.n


def skips_zeros(gate: HardConcrete | None) -> bool:
    """Whether this forward computes only the units `gate`'s mask keeps: a training forward with sampled execution
    on, the mask a sample (learning gate) or the fixed mask of a frozen one."""
    return gate is not None and gate.sampled_execution and gate.training


def kept_units(gate: HardConcrete | None, mask: torch.Tensor | None) -> torch.Tensor | None:
    """The indices of the units `mask` (the gate's sample or frozen mask) keeps, or None where every unit is to be
    computed (no gate, eval mode, sampled execution off, or a mask that keeps them all)."""
    if not skips_zeros(gate):
        return None
    # a sample: one host sync per gate group on CUDA; a frozen mask: its indices found once
    keep = gate.frozen_keep() if gate.frozen else mask.nonzero().squeeze(1)
    return None if len(keep) == gate.n else keep


class BlockSample(NamedTuple):
    """One forward's masks of a transformer block (None: that gate group is absent) and what the block computes:
    nothing (`off`), or the units `keep` (None: all of them)."""

    unit_mask: torch.Tensor | None
    block_mask: torch.Tensor | None
    off: bool
    keep: torch.Tensor | None

    @property
    def gated(self) -> bool:
        return self.unit_mask is not None or self.block_mask is not None

    def scale(self, dtype: torch.dtype) -> torch.Tensor | float:
        """The factor on the block's output: its block gate's mask, times 0 once every unit mask is 0. A block whose
        units are all pruned is removed at compaction, output bias included; the gated model matches that (and the
        count's P(any unit alive) factor) by silencing the block too."""
        scale = self.block_mask.to(dtype) if self.block_mask is not None else 1.0
        if self.unit_mask is not None:
            scale = scale * (self.unit_mask != 0).any().to(dtype)
        return scale


def block_sample(unit_gate: HardConcrete | None, block_gate: HardConcrete | None) -> BlockSample:
    """Draw a block's masks. The block is off when its block gate's mask is 0 or its unit mask keeps none of its
    units: the masked computation then multiplies its whole output by 0 (BlockSample.scale)."""
    unit_mask = unit_gate() if unit_gate is not None else None
    block_mask = block_gate() if block_gate is not None else None
    if kept_units(block_gate, block_mask) is not None:  # the one unit of a block gate is not kept
        keep, off = None, True
    else:
        keep = kept_units(unit_gate, unit_mask)
        off = keep is not None and len(keep) == 0
    _count(block_gate, 0 if off else 1)
    if unit_gate is not None:
        _count(unit_gate, 0 if off else unit_gate.n if keep is None else len(keep))
    return BlockSample(unit_mask, block_mask, off, keep)


def channel_sample(gate: HardConcrete | None, mask: torch.Tensor | None) -> torch.Tensor | None:
    """The channels a CNN layer computes. A CNN layer has no residual path to fall back on, so a sample that keeps
    no channel computes channel 0, multiplied by its 0 as the masked computation multiplies all of them: the
    consumer's output is the same, and nothing upstream gets a gradient either way."""
    keep = kept_units(gate, mask)
    if keep is not None and len(keep) == 0:
        keep = torch.zeros(1, dtype=torch.long, device=mask.device)
    if gate is not None:
        _count(gate, gate.n if keep is None else len(keep))
    return keep


class _ZeroGradients(torch.autograd.Function):
    """Identity on `x` that gives each of `tensors` a zero gradient in backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, *tensors: torch.Tensor) -> torch.Tensor:
        ctx.like = [(t.shape, t.dtype, t.device) for t in tensors]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor, *unused):
        return (grad, *(torch.zeros(shape, dtype=dtype, device=device) for shape, dtype, device in ctx.like))


def skip(x: torch.Tensor, block: nn.Module, *inputs: torch.Tensor | None) -> torch.Tensor:
    """`x` unchanged, the residual path past `block`, with a zero gradient for each of the block's trainable
    parameters (gates included) and each of the `inputs` it would have read besides `x` (WavLM's shared position
    bias), as the masked computation gives them when it multiplies the block's output by 0. Without it they would get
    no gradient at all: AdamW would then skip their moments' decay and weight decay in this step, and DDP would wait
    for them."""
    tensors = [p for p in block.parameters() if p.requires_grad]
    tensors += [t for t in inputs if t is not None and t.requires_grad]
    return _ZeroGradients.apply(x, *tensors) if tensors and torch.is_grad_enabled() else x
