"""Task losses over utterance embeddings: AAM-softmax (SV) and a softmax classifier (CM)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


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

    def chance_loss(self) -> float:
        """The loss of an embedding orthogonal to every class (all cosines 0), at the full margin: what a model
        that learned nothing scores. The target's logit is s cos(pi/2 + m) = -s sin m, the k penalised
        impostors' s cos(pi/2 - m') = s sin m', the others' 0."""
        classes = self.weight.shape[0] // self.subcenters
        target = -self.scale * math.sin(self.margin)
        others = (classes - 1 - self.topk) + self.topk * math.exp(self.scale * math.sin(self.topk_penalty))
        return math.log(math.exp(target) + others) - target

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = self.cosine(embeddings).clamp(-1 + 1e-7, 1 - 1e-7)
        theta = torch.acos(cosine)
        # past theta = pi - m the margin would make the logit grow again: there, as WeSpeaker's ArcMarginProduct,
        # cos(theta) - (1 - cos m), which meets cos(theta + m) = -1 at the boundary and keeps falling
        target = torch.where(theta + self.margin < math.pi, torch.cos(theta + self.margin),
                             cosine - (1.0 - math.cos(self.margin)))
        onehot = F.one_hot(labels, cosine.shape[1]).bool()
        logits = torch.where(onehot, target, cosine)
        if self.topk:
            hardest = torch.topk(cosine.masked_fill(onehot, -2.0), self.topk, dim=1).indices
            penalised = torch.zeros_like(onehot).scatter_(1, hardest, True)
            logits = torch.where(penalised, torch.cos(theta - self.topk_penalty), logits)
        return F.cross_entropy(self.scale * logits, labels)


class SoftmaxClassifier(nn.Module):
    """Cross-entropy over the logits of BatchNorm1d -> ReLU -> Linear applied to the embedding: the authors' CM
    "softmax" projection (wedefense's models/projections.py). Its logits are the CM scores.

    The batch norm normalises each training micro-batch by its own statistics (per process under DDP, as the
    authors' plain DDP does) and applies its running statistics in eval mode, where it is an affine map: an
    utterance's score then depends on that utterance alone.
    `weights` (one per class) weight each utterance's loss by its class, e.g. against ASVspoof's ~1:9 bona fide
    to spoof imbalance; the batch loss is then the weighted mean, as in torch's cross_entropy.
    """

    def __init__(self, embedding: int, classes: int, weights: list[float] | None = None):
        super().__init__()
        self.norm = nn.BatchNorm1d(embedding)
        self.linear = nn.Linear(embedding, classes)
        if weights is not None and len(weights) != classes:
            raise ValueError(f"{len(weights)} class weights for {classes} classes")
        # not persistent: the weights come from the head config, and checkpoints keep one layout either way
        self.register_buffer("weights", None if weights is None else torch.tensor(weights, dtype=torch.float32),
                             persistent=False)

    def chance_loss(self) -> float:
        """The loss of equal logits for every class (log of the class count, whatever the class weights)."""
        return math.log(self.linear.out_features)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.relu(self.norm(embeddings)))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings), labels, weight=self.weights)
