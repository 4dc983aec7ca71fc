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
(float32: ~1e-6 relative). Eval mode, frozen gates and compacted models never take this path.
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
    """Within this context, count for each learning gate (training, not frozen) how many of its units the forwards
    computed: {gate: [computed, of n]}, summed over forwards; a block's gate counts 1 for a block that ran."""
    counts: dict[HardConcrete, list[int]] = defaultdict(lambda: [0, 0])
    _counters.append(counts)
    try:
        yield counts
    finally:
        _counters.remove(counts)


def _count(gate: HardConcrete | None, computed: int) -> None:
    if gate is not None and gate.training and not gate.frozen:
        for counts in _counters:
            counts[gate][0] += computed
            counts[gate][1] += gate.n


def executes_sample(gate: HardConcrete | None) -> bool:
    """Whether `gate`'s mask in this forward is a sample whose zero units may be skipped."""
    return gate is not None and gate.sampled_execution and gate.training and not gate.frozen


def kept_units(gate: HardConcrete | None, mask: torch.Tensor | None) -> torch.Tensor | None:
    """The indices of the units `mask` (the gate's sample) keeps, or None where every unit is to be computed (no
    gate, a deterministic mask, sampled execution off, or a sample that keeps them all)."""
    if not executes_sample(gate):
        return None
    keep = mask.nonzero().squeeze(1)  # one host sync per gate group on CUDA
    return None if len(keep) == gate.n else keep


class BlockSample(NamedTuple):
    """What a transformer block computes in this forward: nothing (`off`), or the units `keep` (None: all)."""

    off: bool
    keep: torch.Tensor | None


def block_sample(unit_gate: HardConcrete | None, unit_mask: torch.Tensor | None, block_gate: HardConcrete | None,
                 block_mask: torch.Tensor | None) -> BlockSample:
    """A block is off when its sampled block gate is 0 or its sample keeps none of its units: the masked computation
    then multiplies its whole output by 0 (transformer.block_scale)."""
    if executes_sample(block_gate) and block_mask.item() == 0:
        keep, off = None, True
    else:
        keep = kept_units(unit_gate, unit_mask)
        off = keep is not None and len(keep) == 0
    _count(block_gate, 0 if off else 1)
    if unit_gate is not None:
        _count(unit_gate, 0 if off else unit_gate.n if keep is None else len(keep))
    return BlockSample(off, keep)


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
