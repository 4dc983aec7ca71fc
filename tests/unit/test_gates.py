import math

import pytest
import torch

from hp.model.gates import HardConcrete, unit_count


def test_init_follows_the_brief():
    torch.manual_seed(0)
    on, half = HardConcrete(4000, init_prune_prob=0.01), HardConcrete(4000, init_prune_prob=0.5)
    assert on.log_alpha.mean().item() == pytest.approx(math.log(99), abs=0.002)
    assert half.log_alpha.mean().item() == pytest.approx(0.0, abs=0.002)
    assert on.log_alpha.std().item() == pytest.approx(0.01, rel=0.05)
    assert (on.beta, on.l, on.r) == (2 / 3, -0.1, 1.1)


def test_samples_are_in_range_and_zero_as_often_as_l0_says():
    torch.manual_seed(0)
    gate = HardConcrete(8)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.linspace(-3, 3, 8))
    z = torch.stack([gate.sample() for _ in range(20000)])
    assert z.min() >= 0 and z.max() <= 1
    assert ((z == 1).float().mean(0) > 0).any()  # the stretch puts mass on exactly 1 as well
    empirical = (z != 0).float().mean(0)
    # 20000 Bernoulli draws: standard error <= 0.0036, so 0.015 is > 4 sigma
    torch.testing.assert_close(empirical, gate.prob_nonzero().detach(), atol=0.015, rtol=0)


def test_prob_nonzero_formula():
    gate = HardConcrete(3)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-1.0, 0.0, 2.0]))
    expected = torch.sigmoid(gate.log_alpha - (2 / 3) * math.log(0.1 / 1.1))
    torch.testing.assert_close(gate.prob_nonzero(), expected)
    torch.testing.assert_close(gate.prob_any_nonzero(), 1 - (1 - expected).prod())


def test_deterministic_mask_zeroes_smallest_and_keeps_soft_values():
    gate = HardConcrete(10).eval()
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([5.0, -9, 4, -8, 3, -7, 2, 1, -6, 0.5]))
    k = round(10 - gate.expected_l0().item())
    mask = gate()
    assert (mask == 0).sum().item() == k == gate.num_pruned()
    zeroed = set(torch.topk(gate.log_alpha, k, largest=False).indices.tolist())
    assert {i for i in range(10) if mask[i] == 0} == zeroed
    kept = mask != 0
    torch.testing.assert_close(mask[kept], torch.sigmoid(0.8 * gate.log_alpha[kept] / gate.beta).detach())
    assert torch.equal(gate(), mask)  # eval mode is deterministic


def test_min_keep():
    gate = HardConcrete(5, min_keep=1)
    with torch.no_grad():
        gate.log_alpha.fill_(-20)
    assert gate.num_kept() == 1 and (gate.deterministic_mask() != 0).sum() == 1


def test_unit_count_modes():
    gate = HardConcrete(6)
    n, alive = unit_count(gate, 6, "expected")
    assert n.requires_grad and alive.requires_grad
    assert unit_count(gate, 6, "deterministic") == (6, 1)
    assert unit_count(None, 7, "expected") == (7, 1)
    with pytest.raises(ValueError):
        unit_count(gate, 6, "soft")


def test_eval_mask_follows_log_alpha_changes_and_never_underflows():
    gate = HardConcrete(4, min_keep=1).eval()
    first = gate()
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-100.0, -120, -130, -140]))  # sigmoid underflows to 0 here
    mask = gate()
    assert not torch.equal(mask, first)
    assert (mask != 0).sum() == 1 == gate.num_kept() and mask[0] > 0  # the min_keep unit stays non-zero
    gate.log_alpha = torch.nn.Parameter(torch.full((4,), 5.0))  # a replaced parameter is noticed too
    assert (gate() > 0.99).all()


def test_all_zero_training_mask_gives_finite_output():
    """A sampled CNN mask can be all zero in training; the masked LayerNorm must not divide by zero."""
    import hp

    for norm in ("group", "layer"):
        model = hp.Frontend(hp.SHAPES["tiny"].replace(feat_extract_norm=norm), prune_units=("conv",)).train()
        with torch.no_grad():
            for layer in model.cnn.layers:
                layer.gate.log_alpha.fill_(-30.0)
        states = model(torch.randn(1, 4000))
        assert all(torch.isfinite(h).all() for h in states)


def test_masks_keep_the_autocast_dtype():
    import hp

    model = hp.Frontend(hp.SHAPES["tiny"].replace(feat_extract_norm="layer")).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        states = model(torch.randn(2, 4000))
    assert all(h.dtype == torch.bfloat16 for h in states[1:])


def test_a_frozen_gate_keeps_its_deterministic_mask_in_training():
    torch.manual_seed(0)
    gate = HardConcrete(6, init_prune_prob=0.5).train()
    assert not torch.equal(gate(), gate())  # sampling while it learns
    gate.freeze()
    assert gate.frozen and not gate.log_alpha.requires_grad
    torch.testing.assert_close(gate(), gate.deterministic_mask())
    torch.testing.assert_close(gate(), gate())
