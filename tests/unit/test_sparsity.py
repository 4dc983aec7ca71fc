import pytest
import torch

import hp
from hp.training.sparsity import SCHEDULES


def test_schedules():
    c = hp.SparsityController(0.6, warmup_steps=100, schedule="linear")
    assert [c.target_at(s) for s in (0, 50, 100, 500)] == pytest.approx([0.0, 0.3, 0.6, 0.6])
    c = hp.SparsityController(0.6, warmup_steps=100, schedule="cosine")
    assert [c.target_at(s) for s in (0, 50, 100, 500)] == pytest.approx([0.0, 0.3, 0.6, 0.6])
    assert c.target_at(25) < 0.15 < c.target_at(75) - 0.3  # slow start and slow finish
    assert hp.SparsityController(0.6, warmup_steps=0).target_at(0) == 0.6
    assert set(SCHEDULES) >= {"linear", "cosine"}
    with pytest.raises(ValueError, match="schedule"):
        hp.SparsityController(0.6, 10, schedule="step")
    with pytest.raises(ValueError, match="target_sparsity"):
        hp.SparsityController(1.0, 10)


def test_lagrangian_value_and_gradient_signs():
    c = hp.SparsityController(0.5, warmup_steps=0)
    with torch.no_grad():
        c.lambda1.fill_(2.0)
        c.lambda2.fill_(3.0)
    s = torch.tensor(0.4, requires_grad=True)
    loss, t = c(s, step=7)
    assert t == 0.5 and loss.item() == pytest.approx(2 * -0.1 + 3 * 0.01)
    loss.backward()
    assert c.lambda1.grad.item() == pytest.approx(-0.1) and c.lambda2.grad.item() == pytest.approx(0.01)


def test_param_groups_split_model_gates_and_lambdas():
    model = hp.Frontend(hp.SHAPES["tiny"])
    head = torch.nn.Linear(64, 3)  # a back-end in the same optimiser
    ctl = hp.SparsityController(0.5, 10)
    main, reg = hp.param_groups(torch.nn.ModuleList([model, head]), ctl, lr=1e-4, reg_lr=0.05, weight_decay=1e-7)
    gate_ids = {id(g.log_alpha) for g in model.gates().values()}
    main_ids = {id(p) for g in main for p in g["params"]}
    assert main_ids.isdisjoint(gate_ids)
    assert main_ids | gate_ids == {id(p) for p in model.parameters()} | {id(p) for p in head.parameters()}
    assert {id(p) for p in reg[0]["params"]} == gate_ids and reg[0]["lr"] == 0.05
    assert reg[1]["params"] == [ctl.lambda1, ctl.lambda2] and reg[1]["lr"] == -0.05
    assert all(p.dim() < 2 for p in main[1]["params"]) and main[1]["weight_decay"] == 0.0
    assert main[0]["weight_decay"] == 1e-7
    _, reg = hp.param_groups(model, ctl, lr=1e-4, reg_lr=0.2, lambda_lr=0.02)
    assert reg[0]["lr"] == 0.2 and reg[1]["lr"] == -0.02


@pytest.mark.slow  # hundreds of optimiser steps (~14 s each)
@pytest.mark.parametrize("target,schedule", [(0.5, "linear"), (0.7, "cosine")])
def test_controller_reaches_and_holds_target_against_a_dense_loving_task(target, schedule):
    """Only the gates train; the task loss rewards keeping every unit, the constraint must win exactly."""
    torch.manual_seed(0)
    model = hp.Frontend(hp.SHAPES["tiny"])
    ctl = hp.SparsityController(target, warmup_steps=200, schedule=schedule)
    _, reg = hp.param_groups(model, ctl, lr=1e-3, reg_lr=0.05)  # the authors' reg_lr
    opt = torch.optim.AdamW(reg)
    gates = list(model.gates().values())
    errors = []
    for step in range(1000):
        s_hat = model.expected_sparsity()
        task = -torch.stack([g.prob_nonzero().mean() for g in gates]).mean()
        reg_loss, t = ctl(s_hat, step)
        opt.zero_grad()
        (task + reg_loss).backward()
        opt.step()
        ctl.clamp_()
        errors.append(abs(s_hat.item() - t))
    assert max(errors[:100]) > 0.01  # it did have to catch up with the schedule
    assert max(errors[-300:]) < 0.005  # held within half a percent over the last 300 steps


def test_clamp_keeps_lambda1_non_negative():
    ctl = hp.SparsityController(0.5, 0, clamp_lambda1=True)
    with torch.no_grad():
        ctl.lambda1.fill_(-1.0)
    ctl.clamp_()
    assert ctl.lambda1.item() == 0.0


def test_lambda2_init_gives_a_restoring_force_from_the_first_step():
    c = hp.SparsityController(0.5, warmup_steps=0, lambda2_init=10.0)
    assert c.lambda2.item() == 10.0 and c.lambda1.item() == 0.0
    s = torch.tensor(0.4, requires_grad=True)
    loss, _ = c(s, step=0)
    loss.backward()
    assert s.grad.item() == pytest.approx(2 * 10.0 * -0.1)  # pushes s up while it is below t
    with pytest.raises(ValueError, match="lambda2_init"):
        hp.SparsityController(0.5, 0, lambda2_init=-1.0)


def test_deterministic_constraint_uses_the_realised_gap_with_the_expected_gradient():
    c = hp.SparsityController(0.5, warmup_steps=0, constrain="deterministic")
    with torch.no_grad():
        c.lambda1.fill_(2.0)
        c.lambda2.fill_(3.0)
    s = torch.tensor(0.45, requires_grad=True)
    loss, _ = c(s, step=0, deterministic_sparsity=0.6)  # rounding removed more than expected
    assert loss.item() == pytest.approx(2 * 0.1 + 3 * 0.01)
    loss.backward()
    assert s.grad.item() == pytest.approx(2 + 2 * 3 * 0.1)  # d/ds at the deterministic gap
    assert c.lambda1.grad.item() == pytest.approx(0.1) and c.lambda2.grad.item() == pytest.approx(0.01)
    with pytest.raises(ValueError, match="deterministic sparsity"):
        c(s, step=0)
    with pytest.raises(ValueError, match="constrain"):
        hp.SparsityController(0.5, 0, constrain="exact")
