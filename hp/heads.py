"""Back-ends over WavLM's hidden states and the task losses (brief §2)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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


class AAMSoftmax(nn.Module):
    """Additive angular margin softmax (ArcFace): cos(theta + m) for the true class, scaled by s.

    Options from the authors' SV recipe (as in WeSpeaker): `subcenters` K > 1 gives each class K weight
    vectors and scores the class by the closest one (noisy utterances can sit at a minor sub-centre);
    `topk` > 0 adds an angular *penalty* `topk_penalty` to the k hardest non-target classes, cos(theta - m'),
    so that the closest impostor speakers are pushed away harder (inter-top-k).
    """

    def __init__(self, embedding: int, classes: int, margin: float = 0.2, scale: float = 32.0,
                 subcenters: int = 1, topk: int = 0, topk_penalty: float = 0.06):
        super().__init__()
        if subcenters < 1 or not 0 <= topk < classes:
            raise ValueError(f"need subcenters >= 1 and 0 <= topk < classes ({classes}), "
                             f"got subcenters={subcenters}, topk={topk}")
        self.weight = nn.Parameter(torch.empty(classes * subcenters, embedding))
        nn.init.xavier_uniform_(self.weight)
        self.margin, self.scale, self.subcenters = margin, scale, subcenters
        self.topk, self.topk_penalty = topk, topk_penalty

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """[B, classes] cosine to each class (its closest sub-centre)."""
        cosine = F.linear(F.normalize(embeddings), F.normalize(self.weight))
        return cosine.view(len(embeddings), -1, self.subcenters).amax(2)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = self.cosine(embeddings).clamp(-1 + 1e-7, 1 - 1e-7)
        theta = torch.acos(cosine)
        # past theta = pi - m the margin would make the logit grow again; keep it monotonic there
        target = torch.where(theta + self.margin < math.pi, torch.cos(theta + self.margin),
                             cosine - self.margin * math.sin(self.margin))
        onehot = F.one_hot(labels, cosine.shape[1]).bool()
        logits = torch.where(onehot, target, cosine)
        if self.topk:
            hardest = torch.topk(cosine.masked_fill(onehot, -2.0), self.topk, dim=1).indices
            penalised = torch.zeros_like(onehot).scatter_(1, hardest, True)
            logits = torch.where(penalised, torch.cos(theta - self.topk_penalty), logits)
        return F.cross_entropy(self.scale * logits, labels)


class LinearClassifier(nn.Module):
    """Cross-entropy over a linear map of the embedding; its logits are the CM scores."""

    def __init__(self, embedding: int, classes: int):
        super().__init__()
        self.linear = nn.Linear(embedding, classes)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.linear(embeddings)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings), labels)
