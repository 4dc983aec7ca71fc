"""The transformer encoder of every family: prunable heads, FFN units and whole blocks; WavLM's gated relative
position bias where the family has it (`config.relative_position_bias`)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hp.model.config import FrontendConfig
from hp.model.gates import HardConcrete, eval_mask, unit_count
from hp.model.sampled import block_sample, skip
from hp.model.structure import LayerStructure

# WavLM's gate on the relative position bias maps each head's slice of the input to 8 values.
REL_POS_GATE_DIM = 8


def relative_position_buckets(length: int, num_buckets: int, max_distance: int, device=None) -> torch.Tensor:
    """[T, T] bucket index of (key position - query position), T5-style log buckets as in WavLM."""
    pos = torch.arange(length, dtype=torch.long, device=device)
    rel = pos[None, :] - pos[:, None]
    half = num_buckets // 2
    buckets = (rel > 0).long() * half
    rel = rel.abs()
    max_exact = half // 2
    large = max_exact + (torch.log(rel.float() / max_exact) / math.log(max_distance / max_exact)
                         * (half - max_exact)).long()
    large = large.clamp(max=half - 1)
    return buckets + torch.where(rel < max_exact, rel, large)


class RelativePositionBias(nn.Module):
    """Learned bias per (bucket, head), shared by all layers. It lives in layer 0 in WavLM; it is kept
    whole here, so that every layer's surviving heads can index it even after layer 0 is pruned."""

    def __init__(self, config: FrontendConfig):
        super().__init__()
        self.num_buckets, self.max_distance = config.num_buckets, config.max_bucket_distance
        self.embedding = nn.Embedding(config.num_buckets, config.num_attention_heads)

    def forward(self, length: int) -> torch.Tensor:
        b = relative_position_buckets(length, self.num_buckets, self.max_distance, self.embedding.weight.device)
        return self.embedding(b).permute(2, 0, 1)  # [H, T, T]


class SelfAttention(nn.Module):
    """Multi-head self-attention, with WavLM's gated relative position bias for that family (HuBERT and
    wav2vec 2.0 attend without a position bias: their positions come from the positional conv alone).

    Gates: one per head (on each head's output, before out_proj) and one for the whole block (on its
    output). In the pre-LN layout the block owns its LayerNorm, which goes with it when it is removed.
    """

    def __init__(self, config: FrontendConfig, heads: tuple[int, ...], gate_heads: bool, gate_block: bool):
        super().__init__()
        d, self.head_dim = config.hidden_size, config.head_dim
        self.num_orig_heads = config.num_attention_heads
        h = len(heads)
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps) if config.do_stable_layer_norm else None
        self.qkv = nn.Linear(d, 3 * h * self.head_dim)
        self.out_proj = nn.Linear(h * self.head_dim, d)
        if config.relative_position_bias:
            # The bias gate reads the input in slices of d / H_orig, by the head's original index.
            self.rel_pos_gate = nn.Linear(d // self.num_orig_heads, REL_POS_GATE_DIM)
            self.rel_pos_const = nn.Parameter(torch.ones(h))
        else:
            self.rel_pos_gate = self.rel_pos_const = None
        self.heads = tuple(heads)  # original indices; a plain value so the structure stays outside the weights
        self._head_index: dict[torch.device, torch.Tensor] = {}
        self.dropout = config.attention_dropout
        self.head_gate = HardConcrete(h, init_prune_prob=0.01) if gate_heads else None
        self.block_gate = HardConcrete(1, init_prune_prob=0.01) if gate_block else None

    def head_index(self, device: torch.device) -> torch.Tensor:
        if device not in self._head_index:
            self._head_index[device] = torch.tensor(self.heads, dtype=torch.long, device=device)
        return self._head_index[device]

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor | None,
                key_bias: torch.Tensor | None) -> torch.Tensor | None:
        """x: [B, T, D]; position_bias: [H_orig, T, T] (WavLM; None for the other families);
        key_bias: [B, 1, 1, T] additive padding mask. None: this forward's gate sample switched the block off."""
        sample = block_sample(self.head_gate, self.block_gate)
        if sample.off:
            return None
        head_mask, h, dh = sample.unit_mask, len(self.heads), self.head_dim
        qkv_weight, qkv_bias, out_weight, const = self.qkv.weight, self.qkv.bias, self.out_proj.weight, self.rel_pos_const
        heads = self.head_index(x.device) if self.rel_pos_gate is not None else None
        if sample.keep is not None:  # sampled execution: the kept heads' rows of qkv, columns of out_proj, bias slices
            keep, d = sample.keep, x.shape[-1]
            qkv_weight = qkv_weight.view(3, h, dh, d).index_select(1, keep).reshape(-1, d)
            qkv_bias = qkv_bias.view(3, h, dh).index_select(1, keep).reshape(-1)
            out_weight = out_weight.view(d, h, dh).index_select(1, keep).reshape(d, -1)
            head_mask, h = head_mask.index_select(0, keep), len(keep)
            if heads is not None:
                heads, const = heads.index_select(0, keep), const.index_select(0, keep)
        if self.norm is not None:
            x = self.norm(x)
        b, t, _ = x.shape
        q, k, v = F.linear(x, qkv_weight, qkv_bias).view(b, t, 3, h, dh).permute(2, 0, 3, 1, 4).unbind(0)

        bias = key_bias
        if self.rel_pos_gate is not None:
            # WavLM's gate on the relative position bias, from each original head's slice of the input.
            # The 8-wide projection is cheap for all slices; selecting after it moves 32x less data.
            gate_in = self.rel_pos_gate(x.view(b, t, self.num_orig_heads, -1)).view(b, t, -1, 2, 4).sum(-1)
            if h != self.num_orig_heads:
                gate_in = gate_in.index_select(2, heads)
                position_bias = position_bias.index_select(0, heads)
            gate_a, gate_b = torch.sigmoid(gate_in).unbind(-1)
            gate = gate_a * (gate_b * const - 1.0) + 2.0  # [B, T, h]
            bias = gate.transpose(1, 2)[..., None] * position_bias  # [B, h, T, T]
            if key_bias is not None:
                bias = bias + key_bias

        # in the query's dtype: under bf16 autocast CUDA's memory-efficient kernel rejects a float32 bias
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if bias is None else bias.to(q.dtype),
                                             dropout_p=self.dropout if self.training else 0.0)
        if head_mask is not None:
            out = out * head_mask.to(out.dtype)[:, None, None]
        if torch.compiler.is_exporting():  # torch.export mis-decomposes the reshape below into a view
            out = F.linear(torch.cat(out.unbind(1), dim=-1), out_weight, self.out_proj.bias)
        else:
            out = F.linear(out.transpose(1, 2).reshape(b, t, h * dh), out_weight, self.out_proj.bias)
        if sample.gated:
            out = out * sample.scale(out.dtype)
        return out

    @staticmethod
    def param_count(config: FrontendConfig, heads, alive):
        d, dh = config.hidden_size, config.head_dim
        norm = 2 * d if config.do_stable_layer_norm else 0
        per_block = 3 * (d + 1) * heads * dh + (heads * dh + 1) * d + norm
        if config.relative_position_bias:  # the bias gate's linear map and one constant per head
            per_block = per_block + (d // config.num_attention_heads + 1) * REL_POS_GATE_DIM + heads
        return alive * per_block

    def count(self, config: FrontendConfig, mode: str):
        heads, any_head = unit_count(self.head_gate, len(self.heads), mode)
        block, _ = unit_count(self.block_gate, 1, mode)
        return self.param_count(config, heads, block * any_head)

    @staticmethod
    def mac_count(config: FrontendConfig, heads, alive, frames: int):
        """MACs over `frames` frames: the projections are linear in the heads, the scores (QK^T) and their weighted
        sum of values quadratic in the length; WavLM's bias gate reads every original head's slice of the input."""
        d, dh = config.hidden_size, config.head_dim
        per_block = 4 * frames * d * heads * dh + 2 * frames * frames * heads * dh
        if config.relative_position_bias:
            h_orig = config.num_attention_heads
            per_block = per_block + frames * (d // h_orig) * h_orig * REL_POS_GATE_DIM
        return alive * per_block

    def macs(self, config: FrontendConfig, frames: int, mode: str):
        heads, any_head = unit_count(self.head_gate, len(self.heads), mode)
        block, _ = unit_count(self.block_gate, 1, mode)
        return self.mac_count(config, heads, block * any_head, frames)

    @torch.no_grad()
    def prune(self, fold: bool = True) -> bool:
        """Drop pruned heads and fold masks into out_proj (without `fold`: keep the gates, the head gate shrunk to
        the kept heads); False if the whole block is gone."""
        h, dh, w = len(self.heads), self.head_dim, self.out_proj.weight
        head_mask, block_mask = eval_mask(self.head_gate, h, w), eval_mask(self.block_gate, 1, w)
        keep = head_mask.nonzero().squeeze(1)
        if len(keep) == 0 or block_mask.item() == 0:
            return False
        d = self.qkv.in_features
        qkv = nn.Linear(d, 3 * len(keep) * dh, device=w.device, dtype=w.dtype)
        qkv.weight.copy_(self.qkv.weight.view(3, h, dh, d)[:, keep].reshape(-1, d))
        qkv.bias.copy_(self.qkv.bias.view(3, h, dh)[:, keep].reshape(-1))
        out = nn.Linear(len(keep) * dh, d, device=w.device, dtype=w.dtype)
        scale = head_mask[keep].repeat_interleave(dh) * block_mask if fold else 1.0
        out.weight.copy_(w.view(d, h, dh)[:, keep].reshape(d, -1) * scale)
        out.bias.copy_(self.out_proj.bias * (block_mask if fold else 1.0))
        self.qkv, self.out_proj = qkv, out
        if self.rel_pos_const is not None:
            self.rel_pos_const = nn.Parameter(self.rel_pos_const[keep].clone())
        self.heads = tuple(self.heads[i] for i in keep.tolist())
        self._head_index = {}
        if fold:
            self.head_gate = self.block_gate = None
        elif self.head_gate is not None:
            self.head_gate.select(keep)
        return True


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
