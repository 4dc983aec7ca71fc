"""Hard-concrete gates (Louizos et al., 2018) with the temperature and stretch used by CoFi and DPHuBERT."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# The five prunable unit types (docs/references.md §1); `prune_units` picks a subset of these names.
UNIT_TYPES = ("conv", "head", "attlayer", "interm", "ffnlayer")


class HardConcrete(nn.Module):
    """`n` independent gates with learnable `log_alpha`.

    Training mode samples one mask per forward call (shared by the batch); eval mode returns the
    deterministic mask: the round(n - E[L0]) gates with the smallest log_alpha are 0, the rest keep the soft
    value sigmoid(0.8 * log_alpha / beta), which compaction folds into the following weights.
    A frozen gate (`freeze()`) stops learning and gives its deterministic mask in training mode too, so the
    rest of the model trains on the structure compaction will keep. It holds that mask as the buffer
    `frozen_mask` (in its state dict, so that a model saved or checkpointed frozen loads frozen), and `select()`
    can then shrink it to its kept units (train-time compaction, Frontend.prune(fold=False)).
    """

    def __init__(
        self,
        n: int,
        init_prune_prob: float = 0.01,
        beta: float = 2 / 3,
        stretch: tuple[float, float] = (-0.1, 1.1),
        eps: float = 1e-6,
        min_keep: int = 0,
    ):
        super().__init__()
        if n < 1:
            raise ValueError(f"a gate group needs at least one unit, got {n}")
        self.n, self.beta, self.eps, self.min_keep = n, beta, eps, min_keep
        self.l, self.r = stretch
        # P(z != 0) = sigmoid(log_alpha - beta * log(-l / r)); this shift is that constant.
        self.l0_shift = beta * math.log(-self.l / self.r)
        self.log_alpha = nn.Parameter(torch.empty(n))
        self._mask_cache: tuple | None = None
        self._keep_cache: tuple | None = None  # see frozen_keep
        self.frozen = False
        self.holding, self._held_noise = False, None  # see hold_noise
        self.generator: torch.Generator | None = None  # None: the global one (see WavLM.share_sampling)
        # a training forward computes only the units this gate's sample keeps (hp.model.sampled); a plain value, set
        # for the whole model by Frontend.set_sampled_execution
        self.sampled_execution = True
        with torch.no_grad():
            self.log_alpha.normal_(math.log((1 - init_prune_prob) / init_prune_prob), 0.01)

    def extra_repr(self) -> str:
        return f"n={self.n}, beta={self.beta:.3f}, stretch=({self.l}, {self.r})"

    def prob_nonzero(self) -> torch.Tensor:
        """P(z_i != 0) per gate: the expected L0 norm of each unit, differentiable."""
        return torch.sigmoid(self.log_alpha - self.l0_shift)

    def expected_l0(self) -> torch.Tensor:
        return self.prob_nonzero().sum()

    def prob_any_nonzero(self) -> torch.Tensor:
        """P(at least one gate != 0), for blocks that vanish once all their units are gone."""
        log_all_zero = F.logsigmoid(self.l0_shift - self.log_alpha).sum()  # log prod (1 - p_i), stably
        return -torch.expm1(log_all_zero)

    def hold_noise(self, hold: bool) -> None:
        """While held, every sample reuses the first one's noise (z is still recomputed from log_alpha, so each
        forward has its own graph): the micro-batches of one accumulated step share one sampled structure."""
        self.holding, self._held_noise = hold, None

    def sample(self) -> torch.Tensor:
        u = self._held_noise
        if u is None:
            u = torch.rand(self.n, device=self.log_alpha.device, generator=self.generator).clamp(self.eps, 1 - self.eps)
            if self.holding:
                self._held_noise = u
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / self.beta)
        return (s * (self.r - self.l) + self.l).clamp(0.0, 1.0)

    def num_pruned(self) -> int:
        """Units the deterministic mask sets to zero."""
        if self.frozen:
            return int((self.frozen_mask == 0).sum())
        k = round(self.n - self.expected_l0().item())
        return max(0, min(k, self.n - self.min_keep))

    def num_kept(self) -> int:
        return self.n - self.num_pruned()

    @torch.no_grad()
    def deterministic_mask(self) -> torch.Tensor:
        if self.frozen:
            return self.frozen_mask.clone()
        a = self.log_alpha
        c = self._mask_cache  # recomputed only when log_alpha changes: no .item() sync per eval forward
        if c is None or c[0] is not a or c[1] != (a._version, a.device):
            # a kept unit must stay non-zero even where sigmoid underflows (log_alpha < -87 in float32)
            mask = torch.sigmoid(0.8 * a / self.beta).clamp_min(torch.finfo(a.dtype).tiny)
            k = self.num_pruned()
            if k:
                mask[torch.topk(a, k, largest=False).indices] = 0.0
            c = self._mask_cache = (a, (a._version, a.device), mask)
        return c[2].clone()

    def freeze(self, mask: torch.Tensor | None = None) -> None:
        """Fix the deterministic mask (or `mask`, a frozen state being loaded). The gradient of the last learning
        step is dropped: the gate no longer learns, and a stale gradient would still count in the clipping norm."""
        if self.frozen and mask is None:
            return
        mask = self.deterministic_mask() if mask is None else mask.to(self.log_alpha)
        self.frozen = True
        self.register_buffer("frozen_mask", mask)
        self.log_alpha.requires_grad_(False)
        self.log_alpha.grad = None

    def frozen_keep(self) -> torch.Tensor:
        """The indices of the units a frozen gate's mask keeps, found once per mask (hp.model.sampled reads them at
        every training forward)."""
        mask, c = self.frozen_mask, self._keep_cache
        if c is None or c[0] is not mask or c[1] != mask._version:  # a new mask, or this one written in place
            c = self._keep_cache = (mask, mask._version, mask.nonzero().squeeze(1))
        return c[2]

    @torch.no_grad()
    def select(self, keep: torch.Tensor) -> None:
        """Keep only the units `keep` of a frozen gate (their log_alpha and mask values)."""
        if not self.frozen:
            raise RuntimeError("only a frozen gate can drop units")
        self.n = len(keep)
        self.log_alpha = nn.Parameter(self.log_alpha[keep].clone(), requires_grad=False)
        self.frozen_mask = self.frozen_mask[keep].clone()
        self._mask_cache = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """A state saved frozen (it holds `frozen_mask`) freezes this gate, at that mask, then loads."""
        mask = state_dict.get(prefix + "frozen_mask")
        if mask is not None:
            self.freeze(mask)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self) -> torch.Tensor:
        return self.sample() if self.training and not self.frozen else self.deterministic_mask()


def eval_mask(gate: HardConcrete | None, n: int, like: torch.Tensor) -> torch.Tensor:
    """The deterministic mask of `gate`, or all ones (on `like`'s device and dtype) for an ungated group."""
    if gate is None:
        return torch.ones(n, device=like.device, dtype=like.dtype)
    return gate.deterministic_mask().to(like)


def unit_count(gate: HardConcrete | None, full: int, mode: str) -> tuple[torch.Tensor | int, torch.Tensor | int]:
    """(number of units, probability the unit group is non-empty) for one gate group.

    `mode` "expected" gives differentiable expectations for the sparsity loss; "deterministic" gives the
    integers of the eval mask, which compaction realises. Without a gate all `full` units count.
    """
    if gate is None:
        return full, 1
    if mode == "expected":  # float64: counts reach 3e8, where float32 resolves only steps of 32
        return gate.expected_l0().double(), gate.prob_any_nonzero().double()
    if mode == "deterministic":
        kept = gate.num_kept()
        return kept, int(kept > 0)
    raise ValueError(f"mode must be 'expected' or 'deterministic', got {mode!r}")
