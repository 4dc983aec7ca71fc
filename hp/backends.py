"""Back-ends: pooling WavLM's hidden states (all layers) into one utterance embedding (brief §2)."""
from __future__ import annotations

import torch
from torch import nn


class GradMultiply(torch.autograd.Function):
    """Identity forward; scales the gradient flowing back (e.g. 0.1 into WavLM for SV)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def weighted_sum(states: tuple[torch.Tensor, ...], logits: torch.Tensor) -> torch.Tensor:
    """Softmax(logits)-weighted sum of the hidden states, without stacking them (L+1 copies)."""
    weights = torch.softmax(logits, 0)
    return sum(w * h for w, h in zip(weights, states))


class MHFA(nn.Module):
    """Multi-head factorised attentive pooling (Peng et al., 2022).

    Keys and values are two softmax-weighted sums over all hidden states, each compressed D -> `compression`;
    `heads` attention heads score frames from the keys and pool the values; the concatenated head outputs
    are mapped to the embedding.
    """

    def __init__(self, num_states: int, dim: int, heads: int = 32, compression: int = 128, embedding: int = 256):
        super().__init__()
        self.key_weights = nn.Parameter(torch.zeros(num_states))
        self.value_weights = nn.Parameter(torch.zeros(num_states))
        self.key_proj = nn.Linear(dim, compression)
        self.value_proj = nn.Linear(dim, compression)
        self.attention = nn.Linear(compression, heads)
        self.out = nn.Linear(heads * compression, embedding)

    def forward(self, states: tuple[torch.Tensor, ...], frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """states: L+1 tensors [B, T, D]; frame_mask: [B, T] True on real frames. Returns [B, embedding]."""
        keys = self.key_proj(weighted_sum(states, self.key_weights))
        values = self.value_proj(weighted_sum(states, self.value_weights))  # [B, T, C]
        scores = self.attention(keys)  # [B, T, heads]
        if frame_mask is not None:
            scores = scores.masked_fill(~frame_mask[..., None], float("-inf"))
        weights = torch.softmax(scores, dim=1)
        pooled = torch.einsum("bth,btc->bhc", weights, values)
        return self.out(pooled.flatten(1))
