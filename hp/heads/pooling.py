"""Back-ends: pooling the front end's hidden states (all layers) into one utterance embedding (docs/references.md
§2)."""
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


# --- ECAPA-TDNN over a weighted sum of all hidden states (the ESPnet-SPK / WeSpeaker SSL + ECAPA back-end) ---
#
# Exact masking: a padded utterance must give the same embedding as the same utterance alone. Every conv
# zero-pads its input at the utterance's ends, so the padded frames inside a batch must hold exactly those zeros
# whenever a conv with kernel > 1 reads them. The input is zeroed on padded frames, and every layer whose output
# is non-zero there (conv bias, ReLU of it, BatchNorm shift) is followed by re-zeroing; time means, std's and
# the attention softmax only count real frames.


def zero_padding(x: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
    """x [B, C, T] with its padded frames (frame_mask False) set to zero."""
    return x if frame_mask is None else x * frame_mask[:, None, :]


def frame_weights(x: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
    """[B, 1, T] weights that average over each utterance's real frames (1/T each when unpadded)."""
    if frame_mask is None:
        return x.new_full((x.shape[0], 1, x.shape[2]), 1 / x.shape[2])
    mask = frame_mask[:, None, :].to(x.dtype)
    return mask / mask.sum(-1, keepdim=True)


def weighted_mean(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """x [B, C, T], weights [B, 1 or C, T] summing to 1 over T -> [B, C, 1]."""
    return (x * weights).sum(-1, keepdim=True)


def weighted_mean_std(x: torch.Tensor, weights: torch.Tensor, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and std over time, [B, C, 1] each; the variance is clamped to >= eps (sqrt's gradient)."""
    mean = weighted_mean(x, weights)
    var = weighted_mean((x - mean) ** 2, weights)
    return mean, var.clamp(min=eps).sqrt()


def subtract_mean(h: torch.Tensor, over: str, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
    """A hidden state h [B, T, D] minus its mean over the real frames of each channel (`frames`; padded frames,
    which the back-ends ignore, come out shifted too) or over the channels of each frame (`channels`)."""
    if over == "channels":
        return h - h.mean(-1, keepdim=True)
    x = h.transpose(1, 2)  # [B, D, T], the layout of the frame statistics above
    return (x - weighted_mean(x, frame_weights(x, frame_mask))).transpose(1, 2)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over [B, C, T] that normalises the real frames only: padded frames neither enter the
    training statistics (they would bias them towards zero) nor come out non-zero (the shift)."""

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        if frame_mask is None:
            return super().forward(x)
        if not self.training and self.track_running_stats:
            # running statistics make it a per-channel affine map: the same values without gathering the real
            # frames, whose data-dependent count torch.export (ONNX) cannot trace
            return super().forward(x) * frame_mask[:, None].to(x.dtype)
        real = super().forward(x.transpose(1, 2)[frame_mask])  # [N real frames, C]
        out = real.new_zeros(*frame_mask.shape, real.shape[-1])
        out[frame_mask] = real
        return out.transpose(1, 2)


class TDNNLayer(nn.Module):
    """Conv1d -> ReLU -> BatchNorm (the paper's order), zero on padded frames."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation,
                              padding=dilation * (kernel_size - 1) // 2)
        self.norm = MaskedBatchNorm1d(out_channels)

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.norm(torch.relu(self.conv(x)), frame_mask)


class Res2Conv(nn.Module):
    """Res2Net dilated conv: channels split into `scale` groups; group i > 0 goes through its own TDNN layer
    after adding the previous group's output; group 0 passes through."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, scale: int):
        super().__init__()
        if channels % scale:
            raise ValueError(f"channels {channels} not divisible by Res2Net scale {scale}")
        self.scale = scale
        width = channels // scale
        self.layers = nn.ModuleList(TDNNLayer(width, width, kernel_size, dilation) for _ in range(scale - 1))

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        groups = x.chunk(self.scale, dim=1)
        outs = [groups[0]]
        for i, layer in enumerate(self.layers, start=1):
            outs.append(layer(groups[i] if i == 1 else groups[i] + outs[-1], frame_mask))
        return torch.cat(outs, dim=1)


class SqueezeExcitation(nn.Module):
    """Channel gates from the utterance's mean over real frames: C -> `bottleneck` -> C, sigmoid."""

    def __init__(self, channels: int, bottleneck: int):
        super().__init__()
        self.down = nn.Conv1d(channels, bottleneck, 1)
        self.up = nn.Conv1d(bottleneck, channels, 1)

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        mean = weighted_mean(x, frame_weights(x, frame_mask))
        return x * torch.sigmoid(self.up(torch.relu(self.down(mean))))


class SERes2Block(nn.Module):
    """SE-Res2Block: 1x1 TDNN -> dilated Res2Net conv -> 1x1 TDNN -> squeeze-excitation, plus the input."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, scale: int, se_channels: int):
        super().__init__()
        self.pre = TDNNLayer(channels, channels)
        self.res2 = Res2Conv(channels, kernel_size, dilation, scale)
        self.post = TDNNLayer(channels, channels)
        self.se = SqueezeExcitation(channels, se_channels)

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.post(self.res2(self.pre(x, frame_mask), frame_mask), frame_mask)
        return x + self.se(h, frame_mask)


class AttentiveStatsPool(nn.Module):
    """Channel-dependent attentive statistics pooling with global context: each frame's features together
    with the utterance's mean and std score the frames (Conv1d -> tanh -> Conv1d), a softmax over real frames
    per channel weights them, and the weighted mean and std are concatenated: [B, C, T] -> [B, 2C]."""

    def __init__(self, channels: int, attention_channels: int = 128):
        super().__init__()
        self.hidden = nn.Conv1d(3 * channels, attention_channels, 1)
        self.score = nn.Conv1d(attention_channels, channels, 1)

    def attention(self, x: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[B, C, T] weights, each channel's summing to 1 over the real frames and zero on padded ones."""
        mean, std = weighted_mean_std(x, frame_weights(x, frame_mask))
        context = torch.cat([x, mean.expand_as(x), std.expand_as(x)], dim=1)
        scores = self.score(torch.tanh(self.hidden(context)))
        if frame_mask is not None:
            scores = scores.masked_fill(~frame_mask[:, None, :], float("-inf"))
        return torch.softmax(scores, dim=-1)

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        mean, std = weighted_mean_std(x, self.attention(x, frame_mask))
        return torch.cat([mean, std], dim=1).squeeze(-1)


class ECAPATDNN(nn.Module):
    """ECAPA-TDNN (Desplanques et al., 2020) over a softmax-weighted sum of all hidden states.

    weighted sum [B, T, D] -> TDNN layer (kernel 5) to `channels` C -> three SE-Res2Blocks (kernel 3,
    dilations 2, 3, 4) -> multi-layer feature aggregation (the three block outputs concatenated, 1x1 conv to
    `mfa_channels` M, ReLU; None: 3C) -> attentive statistics pooling (2M) -> BatchNorm -> Linear -> BatchNorm
    to `embedding`. The paper, WeSpeaker and ESPnet-SPK keep M = 1536 for C = 512 and C = 1024 alike.
    Padded frames are kept at zero throughout (see the note above `zero_padding`).
    """

    def __init__(self, num_states: int, dim: int, channels: int = 512, embedding: int = 192,
                 attention_channels: int = 128, se_channels: int = 128, scale: int = 8,
                 mfa_channels: int | None = None):
        super().__init__()
        mfa = 3 * channels if mfa_channels is None else mfa_channels
        self.layer_weights = nn.Parameter(torch.zeros(num_states))
        self.stem = TDNNLayer(dim, channels, kernel_size=5)
        self.blocks = nn.ModuleList(SERes2Block(channels, 3, dilation, scale, se_channels) for dilation in (2, 3, 4))
        self.aggregate = nn.Conv1d(3 * channels, mfa, 1)
        self.pool = AttentiveStatsPool(mfa, attention_channels)
        self.pool_norm = nn.BatchNorm1d(2 * mfa)
        self.out = nn.Linear(2 * mfa, embedding)
        self.out_norm = nn.BatchNorm1d(embedding)

    def forward(self, states: tuple[torch.Tensor, ...], frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """states: L+1 tensors [B, T, D]; frame_mask: [B, T] True on real frames. Returns [B, embedding]."""
        x = zero_padding(weighted_sum(states, self.layer_weights).transpose(1, 2), frame_mask)  # [B, D, T]
        x = self.stem(x, frame_mask)
        outs = []
        for block in self.blocks:
            x = block(x, frame_mask)
            outs.append(x)
        x = zero_padding(torch.relu(self.aggregate(torch.cat(outs, dim=1))), frame_mask)
        return self.out_norm(self.out(self.pool_norm(self.pool(x, frame_mask))))
