"""The transformer encoder of every family: its layers (self-attention from hp.model.attention, a FFN of prunable
units and a prunable whole block), the positional convolution and the layer stack."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hp.model.attention import RelativePositionBias, SelfAttention
from hp.model.config import FrontendConfig
from hp.model.gates import HardConcrete, eval_mask, unit_count
from hp.model.sampled import block_sample, skip
from hp.model.structure import LayerStructure


class FeedForward(nn.Module):
    """Linear -> GELU -> Linear with one gate per intermediate unit and one for the whole block."""

    def __init__(self, config: FrontendConfig, dim: int, gate_units: bool, gate_block: bool):
        super().__init__()
        d = config.hidden_size
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps) if config.do_stable_layer_norm else None
        self.fc1 = nn.Linear(d, dim)
        self.fc2 = nn.Linear(dim, d)
        self.activation_dropout = nn.Dropout(config.activation_dropout)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.unit_gate = HardConcrete(dim, init_prune_prob=0.5) if gate_units else None
        self.block_gate = HardConcrete(1, init_prune_prob=0.01) if gate_block else None

    def forward(self, x: torch.Tensor) -> torch.Tensor | None:
        """None: this forward's gate sample switched the block off (hp.model.sampled)."""
        sample = block_sample(self.unit_gate, self.block_gate)
        if sample.off:
            return None
        unit_mask = sample.unit_mask
        fc1_weight, fc1_bias, fc2_weight = self.fc1.weight, self.fc1.bias, self.fc2.weight
        if sample.keep is not None:  # sampled execution: the kept units' rows of fc1, columns of fc2
            keep = sample.keep
            fc1_weight, fc1_bias = fc1_weight.index_select(0, keep), fc1_bias.index_select(0, keep)
            fc2_weight, unit_mask = fc2_weight.index_select(1, keep), unit_mask.index_select(0, keep)
        if self.norm is not None:
            x = self.norm(x)
        x = self.activation_dropout(F.gelu(F.linear(x, fc1_weight, fc1_bias)))
        if unit_mask is not None:
            x = x * unit_mask.to(x.dtype)
        x = self.dropout(F.linear(x, fc2_weight, self.fc2.bias))
        if sample.gated:
            x = x * sample.scale(x.dtype)
        return x

    @staticmethod
    def param_count(config: FrontendConfig, units, alive):
        d = config.hidden_size
        norm = 2 * d if config.do_stable_layer_norm else 0
        return alive * ((d + 1) * units + (units + 1) * d + norm)

    def count(self, config: FrontendConfig, mode: str):
        units, any_unit = unit_count(self.unit_gate, self.fc1.out_features, mode)
        block, _ = unit_count(self.block_gate, 1, mode)
        return self.param_count(config, units, block * any_unit)

    def macs(self, config: FrontendConfig, frames: int, mode: str):
        units, any_unit = unit_count(self.unit_gate, self.fc1.out_features, mode)
        block, _ = unit_count(self.block_gate, 1, mode)
        return block * any_unit * 2 * frames * config.hidden_size * units

    @torch.no_grad()
    def prune(self, fold: bool = True) -> bool:
        """Drop pruned units and fold the masks into fc2 (without `fold`: keep the gates, the unit gate shrunk);
        False if the whole block is gone."""
        w = self.fc2.weight
        dim = self.fc1.out_features
        unit_mask, block_mask = eval_mask(self.unit_gate, dim, w), eval_mask(self.block_gate, 1, w)
        keep = unit_mask.nonzero().squeeze(1)
        if len(keep) == 0 or block_mask.item() == 0:
            return False
        d = self.fc1.in_features
        fc1 = nn.Linear(d, len(keep), device=w.device, dtype=w.dtype)
        fc2 = nn.Linear(len(keep), d, device=w.device, dtype=w.dtype)
        fc1.weight.copy_(self.fc1.weight[keep])
        fc1.bias.copy_(self.fc1.bias[keep])
        fc2.weight.copy_(w[:, keep] * (unit_mask[keep] * block_mask if fold else 1.0))
        fc2.bias.copy_(self.fc2.bias * (block_mask if fold else 1.0))
        self.fc1, self.fc2 = fc1, fc2
        if fold:
            self.unit_gate = self.block_gate = None
        elif self.unit_gate is not None:
            self.unit_gate.select(keep)
        return True


class EncoderLayer(nn.Module):
    """One transformer layer, post-LN (Base/Base+) or pre-LN (Large, `do_stable_layer_norm`).

    A removed block leaves only its residual path; post-LN layers keep their norms, which sit on the
    residual stream.
    """

    def __init__(self, config: FrontendConfig, layer: LayerStructure, prune_units: frozenset[str]):
        super().__init__()
        self.attention = (SelfAttention(config, layer.heads, "head" in prune_units, "attlayer" in prune_units)
                          if layer.use_attention else None)
        self.feed_forward = (FeedForward(config, layer.ffn_dim, "interm" in prune_units, "ffnlayer" in prune_units)
                             if layer.use_ffn else None)
        self.post_ln = not config.do_stable_layer_norm
        if self.post_ln:
            self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
            self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, x, position_bias, key_bias):
        # a block whose gate sample switched it off returns None: the residual path alone (hp.model.sampled)
        if self.attention is not None:
            out = self.attention(x, position_bias, key_bias)
            x = skip(x, self.attention, position_bias) if out is None else x + self.dropout(out)
        if self.post_ln:
            x = self.attention_norm(x)
        if self.feed_forward is not None:
            out = self.feed_forward(x)
            x = skip(x, self.feed_forward) if out is None else x + out
        if self.post_ln:
            x = self.ffn_norm(x)
        return x

    @property
    def structure(self) -> LayerStructure:
        return LayerStructure(self.attention.heads if self.attention is not None else (),
                              self.feed_forward.fc1.out_features if self.feed_forward is not None else 0)

    def count(self, config: FrontendConfig, mode: str):
        total = sum(p.numel() for m in (self.attention_norm, self.ffn_norm) for p in m.parameters()) if self.post_ln else 0
        if self.attention is not None:
            total = total + self.attention.count(config, mode)
        if self.feed_forward is not None:
            total = total + self.feed_forward.count(config, mode)
        return total

    def macs(self, config: FrontendConfig, frames: int, mode: str):
        """A post-LN layer's norms, on the residual stream, multiply no weights."""
        blocks = [b for b in (self.attention, self.feed_forward) if b is not None]
        return sum((b.macs(config, frames, mode) for b in blocks), 0)

    def prune(self, fold: bool = True) -> None:
        if self.attention is not None and not self.attention.prune(fold):
            self.attention = None
        if self.feed_forward is not None and not self.feed_forward.prune(fold):
            self.feed_forward = None


class PositionalConv(nn.Module):
    """Grouped, weight-normalised convolution over time whose GELU output is added to the input."""

    def __init__(self, config: FrontendConfig):
        super().__init__()
        d, k, g = config.hidden_size, config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups
        self.groups, self.kernel = g, k
        # weight = g * v / ||v||, the norm taken over all dims but the kernel axis (weight_norm with dim=2)
        self.weight_g = nn.Parameter(torch.ones(1, 1, k))
        self.weight_v = nn.Parameter(torch.randn(d, d // g, k) * (2 / (k * d) ** 0.5))
        self.bias = nn.Parameter(torch.zeros(d))
        with torch.no_grad():
            self.weight_g.copy_(self.weight_v.norm(dim=(0, 1), keepdim=True))
        self._cached: tuple | None = None  # (g, v, their versions, weight)

    def weight(self) -> torch.Tensor:
        """The normalised weight; with autograd off it is cached until g or v change (in place or replaced)."""
        if torch.is_grad_enabled():
            return torch._weight_norm(self.weight_v, self.weight_g, 2)  # nn.utils.weight_norm's kernel
        g, v = self.weight_g, self.weight_v
        c = self._cached
        if c is None or c[0] is not g or c[1] is not v or c[2] != (g._version, v._version):
            c = self._cached = (g, v, (g._version, v._version), torch._weight_norm(v, g, 2))
        return c[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight()
        y = F.conv1d(x.transpose(1, 2), w, self.bias, padding=self.kernel // 2, groups=self.groups)
        if self.kernel % 2 == 0:  # "same" padding for an even kernel leaves one extra frame
            y = y[..., :-1]
        return F.gelu(y).transpose(1, 2)

    def macs(self, frames: int) -> int:
        """The grouped convolution over `frames` (an even kernel computes one frame more, then drops it)."""
        out = frames + 2 * (self.kernel // 2) - self.kernel + 1
        d = self.bias.numel()
        return out * d * (d // self.groups) * self.kernel


class Encoder(nn.Module):
    def __init__(self, config: FrontendConfig, layers: tuple[LayerStructure, ...], prune_units: frozenset[str]):
        super().__init__()
        self.stable_layer_norm, self.layerdrop = config.do_stable_layer_norm, config.layerdrop
        self.layerdrop_generator: torch.Generator | None = None  # a CPU one; None: the global one
        self.pos_conv = PositionalConv(config)
        # Post-LN: normalises the input of the first layer. Pre-LN: normalises the last layer's output,
        # which transformers reports as last_hidden_state but not as hidden_states[-1].
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.rel_pos = RelativePositionBias(config) if config.relative_position_bias else None
        self.layers = nn.ModuleList(EncoderLayer(config, layer, prune_units) for layer in layers)

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        key_bias = None
        if frame_mask is not None:
            x = x.masked_fill(~frame_mask[..., None], 0.0)
            key_bias = torch.zeros(frame_mask.shape, dtype=x.dtype, device=x.device)
            key_bias = key_bias.masked_fill(~frame_mask, float("-inf"))[:, None, None, :]
        x = x + self.pos_conv(x)
        if not self.stable_layer_norm:
            x = self.norm(x)
        x = self.dropout(x)
        position_bias = self.rel_pos(x.shape[1]) if self.rel_pos is not None else None
        states = [x]
        for i, layer in enumerate(self.layers):
            # LayerDrop as in transformers (training only, never layer 0); a skipped layer repeats its
            # input so that the number of hidden states stays L + 1.
            skip = (self.training and i > 0 and self.layerdrop > 0
                    and torch.rand((), generator=self.layerdrop_generator) < self.layerdrop)
            if not skip:
                x = layer(x, position_bias, key_bias)
            states.append(x)
        return tuple(states)

    def count(self, config: FrontendConfig, mode: str):
        total = sum(p.numel() for m in (self.pos_conv, self.norm, self.rel_pos) if m is not None
                    for p in m.parameters())
        for layer in self.layers:
            total = total + layer.count(config, mode)
        return total

    def macs(self, config: FrontendConfig, frames: int, mode: str):
        total = self.pos_conv.macs(frames)
        for layer in self.layers:
            total = total + layer.macs(config, frames, mode)
        return total
