"""Holding the expected sparsity to a target: the Lagrangian of CoFi/DPHuBERT and its optimiser groups."""
from __future__ import annotations

import torch
from torch import nn

from hp.model.gates import HardConcrete
from hp.training.schedules import TARGET_SHAPES, TargetSchedule

# Fraction of the final target reached at training progress p in [0, 1] of the warm-up (hp.training.schedules).
SCHEDULES = TARGET_SHAPES


# Which sparsity the constraint holds to the target: the differentiable expected one, or the one compaction
# will realise.
CONSTRAINED = ("expected", "deterministic")


class SparsityController(nn.Module):
    """L_reg = lambda1 * (s_hat - t) + lambda2 * (s_hat - t)^2, the target t warming up from 0.

    lambda1 and lambda2 start at 0 and are trained by gradient *ascent* (their optimiser group has a
    negative learning rate, see `param_groups`), so the penalty grows for as long as s_hat misses t.
    `clamp_lambda1` keeps lambda1 >= 0 after each step, as the authors' code does; call `clamp_()` then.
    With the sign convention above, ascent drives lambda1 *negative* while s_hat is below t (most of the
    warm-up), so the clamp leaves only the quadratic term to pull s_hat up: on the tests' toy problem the
    unclamped controller holds t to 1e-4, the clamped one lags by up to 0.02. Hence it is off by default.

    Two options for short runs (the authors' setting is `lambda2_init=0`, `constrain="expected"`):
    - `lambda2_init` > 0 starts with a quadratic penalty, i.e. a restoring force proportional to the gap from
      step 0. Without it the gates only move once lambda1 has integrated the gap for a while, then all at
      once, and lambda1's wind-up carries s_hat far past t (mini corpus, 2-layer model: 0.29 -> 0.77 in 30 steps).
    - `constrain="deterministic"` holds the *deterministic* sparsity (what compaction will realise) to t
      instead of the expected one: the Lagrangian is evaluated at the deterministic gap, its gradient for the
      gates is the expected count's (straight-through). The two sparsities differ by the rounding of each
      gate group to whole units: several percent in a small model, where one FFN block is 15% of it.
    """

    def __init__(self, target: float, warmup_steps: int, schedule: str = "linear", clamp_lambda1: bool = False,
                 lambda2_init: float = 0.0, constrain: str = "expected"):
        super().__init__()
        self.targets = TargetSchedule(target, warmup_steps, schedule)  # checks all three
        self.target, self.warmup_steps, self.schedule = target, warmup_steps, schedule
        if constrain not in CONSTRAINED:
            raise ValueError(f"unknown constrain {constrain!r}; choose from {list(CONSTRAINED)}")
        if lambda2_init < 0:
            raise ValueError(f"lambda2_init must be >= 0, got {lambda2_init}")
        self.clamp_lambda1, self.constrain = clamp_lambda1, constrain
        self.lambda1 = nn.Parameter(torch.zeros(()))
        self.lambda2 = nn.Parameter(torch.full((), float(lambda2_init)))

    def extra_repr(self) -> str:
        return (f"target={self.target}, warmup_steps={self.warmup_steps}, schedule={self.schedule}, "
                f"constrain={self.constrain}")

    def target_at(self, step: int) -> float:
        return self.targets(step)

    def forward(self, expected_sparsity: torch.Tensor, step: int,
                deterministic_sparsity: float | None = None) -> tuple[torch.Tensor, float]:
        """(Lagrangian term to add to the task loss, target at this step).

        With `constrain="deterministic"`, pass the deterministic sparsity too.
        """
        target = self.target_at(step)
        gap = expected_sparsity - target
        if self.constrain == "deterministic":
            if deterministic_sparsity is None:
                raise ValueError('constrain="deterministic" needs the deterministic sparsity')
            # straight-through: the value is the deterministic gap, the gradient the expected count's
            gap = gap + (deterministic_sparsity - expected_sparsity).detach()
        return self.lambda1 * gap + self.lambda2 * gap * gap, target

    @torch.no_grad()
    def clamp_(self) -> None:
        if self.clamp_lambda1:
            self.lambda1.clamp_(min=0.0)


def param_groups(model: nn.Module, controller: SparsityController, lr: float, reg_lr: float,
                 weight_decay: float = 0.0, lambda_lr: float | None = None) -> tuple[list[dict], list[dict]]:
    """(groups for the model's optimiser, groups for the reg optimiser).

    Model groups: every trainable parameter but the gates', without weight decay on biases and norms.
    Reg groups: all log_alpha at +reg_lr (descent), the lambdas at -reg_lr (ascent); no weight decay.
    `lambda_lr` gives the lambdas their own rate: short runs need fast gates but slow multipliers, or the
    multipliers wind up while the gates catch up with the target and then overshoot it.
    """
    gate_params = [p for m in model.modules() if isinstance(m, HardConcrete) for p in m.parameters()]
    gate_ids = {id(p) for p in gate_params}
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad and id(p) not in gate_ids:
            (decay if p.dim() >= 2 else no_decay).append(p)
    main = [{"params": decay, "lr": lr, "weight_decay": weight_decay},
            {"params": no_decay, "lr": lr, "weight_decay": 0.0}]
    reg = [{"params": gate_params, "lr": reg_lr, "weight_decay": 0.0},
           {"params": [controller.lambda1, controller.lambda2], "lr": -(reg_lr if lambda_lr is None else lambda_lr),
            "weight_decay": 0.0}]
    return [g for g in main if g["params"]], [g for g in reg if g["params"]]
