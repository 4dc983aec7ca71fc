"""hp.training.schedules' small objects that the training loop asks at each step: the sparsity target's warm-up and the
gate freeze (the lr and margin schedules are tested in test_training.py)."""
import math

import pytest

import hp
from hp.training.schedules import TARGET_SHAPES, GateFreeze, TargetSchedule


def test_target_warms_up_linearly_or_along_a_half_cosine_then_holds():
    linear = TargetSchedule(0.6, 10)
    assert [linear(i) for i in (0, 5, 10, 11, 1000)] == pytest.approx([0.0, 0.3, 0.6, 0.6, 0.6])
    assert linear(10) == 0.6 and linear(3) == 0.6 * 3 / 10  # exactly the target once warmed up
    cosine = TargetSchedule(0.6, 10, "cosine")
    for i in (0, 2, 5, 8, 10):
        assert cosine(i) == pytest.approx(0.6 * 0.5 * (1 - math.cos(math.pi * i / 10)), abs=1e-15)
    assert cosine(2) < linear(2) and cosine(8) > linear(8)  # slow start, slow finish
    assert TargetSchedule(0.6, 0)(0) == 0.6  # no warm-up: the target from the start
    assert TargetSchedule(0.0, 10)(5) == 0.0 and set(TARGET_SHAPES) == {"linear", "cosine"}


@pytest.mark.parametrize("bad,message", [(dict(target=1.0), "target_sparsity must be in"),
                                         (dict(target=-0.1), "target_sparsity must be in"),
                                         (dict(shape="step"), "unknown sparsity schedule"),
                                         (dict(warmup=-1), "warmup_steps must be >= 0")])
def test_target_schedule_checks_its_settings(bad, message):
    with pytest.raises(ValueError, match=message):
        TargetSchedule(**{"target": 0.5, "warmup": 10, **bad})


@pytest.mark.parametrize("shape", ["linear", "cosine"])
def test_the_controller_holds_to_the_target_schedule(shape):
    controller = hp.SparsityController(0.7, 13, shape)
    schedule = TargetSchedule(0.7, 13, shape)
    assert controller.targets == schedule
    assert all(controller.target_at(i) == schedule(i) for i in range(30))


def test_gates_freeze_at_the_first_step_close_to_the_target_after_the_warm_up():
    freeze = GateFreeze(0.05, start=4)
    assert not freeze.frozen and not freeze.watching(3) and freeze.watching(4)
    assert not freeze.update(3, 0.5, 0.5)  # within tolerance, but still warming up
    assert not freeze.update(4, 0.40, 0.5) and not freeze.update(5, 0.56, 0.5)  # too far, either side
    assert freeze.update(6, 0.46, 0.5) and freeze.frozen_at == 6 and freeze.frozen
    assert not freeze.watching(7) and not freeze.update(7, 0.5, 0.5) and freeze.frozen_at == 6  # once only
    exact = GateFreeze(0.0)
    assert not exact.update(0, 0.3, 0.31) and exact.update(1, 0.31, 0.31)  # tolerance 0: exactly on target
    assert exact.frozen_at == 1


def test_no_tolerance_never_freezes_and_a_resumed_freeze_stays():
    never = GateFreeze(None, start=0)
    assert not any(never.update(i, 0.5, 0.5) for i in range(100)) and not never.watching(0)
    resumed = GateFreeze(0.1, start=2, frozen_at=3)  # the state a checkpoint restores
    assert resumed.frozen and not resumed.update(10, 0.5, 0.5) and resumed.frozen_at == 3
    with pytest.raises(ValueError, match="freeze_tolerance must be >= 0 or null"):
        GateFreeze(-0.1)
