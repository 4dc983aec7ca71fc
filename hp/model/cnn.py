"""The convolutional feature extractor and feature projection (the same in every family), with prunable CNN
channels."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hp.model.config import FrontendConfig
from hp.model.gates import HardConcrete, eval_mask, unit_count
from hp.model.norms import layer_norm
from hp.model.sampled import channel_sample

CNN_NORM_EPS = 1e-5  # transformers' default GroupNorm/LayerNorm eps in the CNN, not config.layer_norm_eps


class ConvLayer(nn.Module):
    """conv -> norm -> GELU, with one gate per output channel.

    The gate belongs to this layer but is applied by the consumer of its output: the next conv layer
    multiplies its input by it (the same as masking after this GELU, and it folds into that layer's input
    weights), and the feature projection applies it after its norm (where it folds into the norm's affine).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, bias: bool,
                 norm: str | None, gated: bool):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, stride=stride, bias=bias)
        self.norm_type = norm
        if norm == "group":  # one group per channel: a per-channel norm over time, pruned with its channel
            self.norm = nn.GroupNorm(out_channels, out_channels, eps=CNN_NORM_EPS)
        elif norm == "layer":
            self.norm = nn.LayerNorm(out_channels, eps=CNN_NORM_EPS)
        else:
            self.norm = None
        # A CNN layer has no residual path: it keeps at least one channel.
        self.gate = HardConcrete(out_channels, init_prune_prob=0.01, min_keep=1) if gated else None

    def forward(self, x: torch.Tensor, in_mask: torch.Tensor | None, in_keep: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """-> (output, this layer's mask, the channels computed: None for all). `in_keep`: the input channels that `x`
        holds, when the previous layer computed only those (sampled execution, hp.model.sampled); `lengths`: the real
        (unpadded) frames of each output, the only ones the group norm's statistics use."""
        mask = self.gate() if self.gate is not None else None
        keep = channel_sample(self.gate, mask)
        if in_mask is not None:
            x = x * (in_mask if in_keep is None else in_mask.index_select(0, in_keep)).to(x.dtype)[:, None]
        conv, weight, bias = self.conv, self.conv.weight, self.conv.bias
        norm_weight, norm_bias = (self.norm.weight, self.norm.bias) if self.norm is not None else (None, None)
        if keep is not None:
            weight = weight.index_select(0, keep)
            bias = bias.index_select(0, keep) if bias is not None else None
            if self.norm is not None:
                norm_weight, norm_bias = norm_weight.index_select(0, keep), norm_bias.index_select(0, keep)
        if in_keep is not None:
            weight = weight.index_select(1, in_keep)
        x = F.conv1d(x, weight, bias, stride=conv.stride)
        if self.norm_type == "group":
            x = masked_group_norm(x, lengths, norm_weight, norm_bias, self.norm.eps)
        elif self.norm_type == "layer":
            # statistics over the channels alive: all of a sampled subset, the non-zero ones of a full-width mask
            alive = None if mask is None or keep is not None else mask != 0
            x = layer_norm(x.transpose(1, 2), norm_weight, norm_bias, self.norm.eps, alive).transpose(1, 2)
        return F.gelu(x), mask, keep

    @staticmethod
    def param_count(n_in, n_out, kernel: int, bias: bool, norm: str | None):
        return n_in * n_out * kernel + (n_out if bias else 0) + (2 * n_out if norm else 0)

    def count(self, n_in, mode: str):
        """(parameter count given `n_in` input channels, output channel count) under `mode`."""
        n_out, _ = unit_count(self.gate, self.conv.out_channels, mode)
        c = self.conv
        return self.param_count(n_in, n_out, c.kernel_size[0], c.bias is not None, self.norm_type), n_out

    def macs(self, n_in, frames: int, mode: str):
        """(multiply-accumulates of the convolution, `frames` output frames of one utterance, given `n_in` input
        channels; output channel count) under `mode`. The norm and GELU multiply no weights."""
        n_out, _ = unit_count(self.gate, self.conv.out_channels, mode)
        return frames * n_in * n_out * self.conv.kernel_size[0], n_out

    @torch.no_grad()
    def prune(self, in_keep: torch.Tensor, in_scale: torch.Tensor,
              fold: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Drop pruned input/output channels and fold the input mask into the weights (`fold`; else keep the gate,
        shrunk to the kept channels, and leave the masks applied in the forward); return own (keep, scale)."""
        c = self.conv
        mask = eval_mask(self.gate, c.out_channels, c.weight)
        out_keep = mask.nonzero().squeeze(1)
        out_scale = mask[out_keep]
        new = nn.Conv1d(len(in_keep), len(out_keep), c.kernel_size[0], stride=c.stride[0], bias=c.bias is not None,
                        device=c.weight.device, dtype=c.weight.dtype)
        new.weight.copy_(c.weight[out_keep][:, in_keep] * (in_scale[None, :, None] if fold else 1.0))
        if c.bias is not None:
            new.bias.copy_(c.bias[out_keep])
        self.conv = new
        if self.norm is not None:
            old = self.norm
            like = dict(device=old.weight.device, dtype=old.weight.dtype)
            self.norm = (nn.GroupNorm(len(out_keep), len(out_keep), eps=old.eps, **like) if self.norm_type == "group"
                         else nn.LayerNorm(len(out_keep), eps=old.eps, **like))
            self.norm.weight.copy_(old.weight[out_keep])
            self.norm.bias.copy_(old.bias[out_keep])
        if fold:
            self.gate = None
        elif self.gate is not None:
            self.gate.select(out_keep)
        return out_keep, out_scale


def masked_group_norm(x: torch.Tensor, lengths: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor,
                      eps: float) -> torch.Tensor:
    """A group norm with one group per channel (a per-channel norm over time) of affine `weight`, `bias`; with
    `lengths` each utterance's statistics are taken over its first `lengths` frames only, two-pass. Half-precision
    input is then normalised in float32 and stays float32, as F.group_norm does under autocast. Padded frames come
    out finite and no real frame downstream reads them."""
    if lengths is None:
        return F.group_norm(x, weight.shape[0], weight, bias, eps)
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    real = (torch.arange(x.shape[-1], device=x.device) < lengths.to(x.device)[:, None]).to(x.dtype)[:, None]
    n = real.sum(-1, keepdim=True).clamp_min(1.0)
    mean = (x * real).sum(-1, keepdim=True) / n
    var = ((x - mean).square() * real).sum(-1, keepdim=True) / n
    return (x - mean) * torch.rsqrt(var + eps) * weight.to(x.dtype)[:, None] + bias.to(x.dtype)[:, None]


class FeatureExtractor(nn.Module):
    """The CNN that turns a 16 kHz waveform into 50 Hz frames."""

    def __init__(self, config: FrontendConfig, channels: tuple[int, ...], gated: bool):
        super().__init__()
        layers, n_in = [], 1
        for i, (n_out, k, s) in enumerate(zip(channels, config.conv_kernel, config.conv_stride)):
            norm = "layer" if config.feat_extract_norm == "layer" else ("group" if i == 0 else None)
            layers.append(ConvLayer(n_in, n_out, k, s, config.conv_bias, norm, gated))
            n_in = n_out
        self.layers = nn.ModuleList(layers)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """[B, T] -> ([B, C, frames] before the last layer's mask, that mask or None, the channels C are of: None
        for all). With `lengths` (samples) the output frames of an utterance do not depend on the padding after it:
        a frame's receptive field lies inside the utterance, and the group norm (Base, Base+) takes its statistics
        over real frames."""
        x, mask, keep = wave[:, None], None, None
        for layer in self.layers:
            if lengths is not None:
                lengths = conv_output_length(lengths, layer.conv.kernel_size[0], layer.conv.stride[0])
            x, mask, keep = layer(x, mask, keep, lengths)
        return x, mask, keep

    def count(self, mode: str):
        total, n_in = 0, 1
        for layer in self.layers:
            params, n_in = layer.count(n_in, mode)
            total = total + params
        return total, n_in

    def macs(self, samples: int, mode: str):
        """(MACs over one utterance of `samples`, the last layer's channel count, its output frames) under `mode`."""
        total, n_in, frames = 0, 1, samples
        for layer in self.layers:
            frames = (frames - layer.conv.kernel_size[0]) // layer.conv.stride[0] + 1
            macs, n_in = layer.macs(n_in, frames, mode)
            total = total + macs
        return total, n_in, frames

    def prune(self, fold: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.layers[0].conv.weight.device
        keep, scale = torch.zeros(1, dtype=torch.long, device=device), torch.ones(1, device=device)
        for layer in self.layers:
            keep, scale = layer.prune(keep, scale, fold)
        return keep, scale


class FeatureProjection(nn.Module):
    """LayerNorm over CNN channels, then a linear map to the transformer width. HuBERT checkpoints with
    `feat_proj_layer_norm: false` (e.g. DistilHuBERT's layout) project the CNN output without the norm."""

    def __init__(self, config: FrontendConfig, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=config.layer_norm_eps) if config.feat_proj_layer_norm else None
        self.linear = nn.Linear(channels, config.hidden_size)
        self.dropout = nn.Dropout(config.feat_proj_dropout)

    def forward(self, x: torch.Tensor, channel_mask: torch.Tensor | None,
                channel_keep: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, frames, C]; `channel_mask` is the last CNN layer's gate, applied after the norm (if any);
        `channel_keep`: the CNN channels `x` holds when the CNN computed only those (None: all)."""
        n, weight = self.norm, self.linear.weight
        if channel_keep is not None:
            channel_mask, weight = channel_mask.index_select(0, channel_keep), weight.index_select(1, channel_keep)
        if n is not None:
            if channel_keep is not None:  # the kept channels alone: the statistics of the non-zero ones
                x = layer_norm(x, n.weight.index_select(0, channel_keep), n.bias.index_select(0, channel_keep), n.eps)
            else:
                x = n(x) if channel_mask is None else layer_norm(x, n.weight, n.bias, n.eps, channel_mask != 0)
        if channel_mask is not None:
            x = x * channel_mask.to(x.dtype)
        return self.dropout(F.linear(x, weight, self.linear.bias))

    @staticmethod
    def param_count(n_in, hidden_size: int, norm: bool = True):
        return (2 * n_in if norm else 0) + (n_in + 1) * hidden_size

    def count(self, n_in):
        return self.param_count(n_in, self.linear.out_features, self.norm is not None)

    def macs(self, n_in, frames: int):
        return frames * n_in * self.linear.out_features

    @torch.no_grad()
    def prune(self, keep: torch.Tensor, scale: torch.Tensor, fold: bool = True) -> None:
        """Keep the CNN's surviving channels and fold their soft mask into the norm's affine (without a norm:
        into the linear map's input weights); without `fold` the last CNN layer's shrunk gate still applies it."""
        norm, linear = self.norm, self.linear
        if not fold:
            scale = torch.ones_like(scale)
        like = dict(device=linear.weight.device, dtype=linear.weight.dtype)
        if norm is not None:
            self.norm = nn.LayerNorm(len(keep), eps=norm.eps, **like)
            self.norm.weight.copy_(norm.weight[keep] * scale)
            self.norm.bias.copy_(norm.bias[keep] * scale)
        self.linear = nn.Linear(len(keep), linear.out_features, **like)
        self.linear.weight.copy_(linear.weight[:, keep] * (1.0 if norm is not None else scale))
        self.linear.bias.copy_(linear.bias)


def conv_output_length(lengths: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Output frames of an unpadded convolution for each input length."""
    return torch.div(lengths - kernel, stride, rounding_mode="floor") + 1


def frame_lengths(lengths: torch.Tensor, config: FrontendConfig) -> torch.Tensor:
    """Number of CNN output frames for each input length (in samples)."""
    for k, s in zip(config.conv_kernel, config.conv_stride):
        lengths = conv_output_length(lengths, k, s)
    return lengths
