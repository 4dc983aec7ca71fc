"""Layer norm over a subset of channels: what a norm becomes once some of its channels are pruned."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
               alive: torch.Tensor | None = None) -> torch.Tensor:
    """LayerNorm over the last dim; with `alive` (bool [C]) the statistics use the alive channels only.

    A gated channel whose gate is exactly 0 must not move the statistics of the others, otherwise the
    gated model and its compaction (where the channel no longer exists) would differ.
    """
    if alive is None:
        return F.layer_norm(x, weight.shape, weight, bias, eps)  # a static shape: traces for ONNX export
    # statistics in float32 (as F.layer_norm keeps them under autocast); a sampled training mask can be
    # all zero, hence the clamp: the output is then multiplied by that zero mask anyway
    xf, a = x.float(), alive.float()
    n = a.sum().clamp_min(1.0)
    mean = (xf * a).sum(-1, keepdim=True) / n
    var = ((xf - mean).square() * a).sum(-1, keepdim=True) / n
    return ((xf - mean) * torch.rsqrt(var + eps) * weight.float() + bias.float()).to(x.dtype)
