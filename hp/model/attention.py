"""Self-attention with prunable heads and a prunable whole block, and WavLM's gated relative position bias where the
family has it (`config.relative_position_bias`); under sampled execution it computes only the kept heads."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hp.model.config import FrontendConfig
from hp.model.gates import HardConcrete, eval_mask, unit_count
from hp.model.sampled import block_sample

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
