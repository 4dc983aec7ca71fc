"""The MAC polynomial: at a deterministic mask it is the compact model's MACs as hp.utils.profiling.count_macs measures
them, exactly, for every family and layout, unit type and utterance length; its expectation is differentiable in every
gate, and the MAC target drives the Lagrangian as the parameter one does."""
import pytest
import torch

import hp
from hp.measure import PARAMS, Measure
from hp.utils.profiling import count_macs

from helpers import hp_config, randomise_gates
from test_families import VARIANTS, hf_config

# WavLM's two layouts (tests/conftest.py) and the other families' (tests/unit/test_families.py)
CONFIGS = {**{name: (lambda name=name, **c: hp_config(name, **c)) for name in ("tiny-post", "tiny-pre")},
           **{name: (lambda name=name, **c: hp.FrontendConfig.from_dict(hf_config(name, **c).to_dict()))
              for name in VARIANTS}}
# odd lengths too: the CNN's frame counts floor at every layer, the even positional kernel adds a frame
SECONDS = (0.5, 1.0, 2.37)


def saturate(model: hp.Frontend) -> None:
    """log_alpha at +-30 where the deterministic mask keeps / drops a unit: P(z != 0) is then 0 or 1 in float64."""
    with torch.no_grad():
        for gate in model.gates().values():
            gate.log_alpha.copy_(torch.where(gate.deterministic_mask() > 0, 30.0, -30.0))


@pytest.mark.parametrize("layout", list(CONFIGS))
def test_deterministic_macs_are_the_compact_models_measured_macs(layout):
    config = CONFIGS[layout](num_hidden_layers=3)
    g = torch.Generator().manual_seed(1)
    removed = 0
    for trial in range(6):
        model = hp.Frontend(config).eval()
        randomise_gates(model, g, spread=2.0 + trial)  # wider spreads remove whole blocks more often
        small = hp.compact(model)
        removed += sum((not l.use_attention) + (not l.use_ffn) for l in small.structure.layers)
        for seconds in SECONDS:
            wave = torch.randn(1, round(seconds * 16000))
            measured = count_macs(small, wave)
            assert model.num_macs(seconds) == small.num_macs(seconds) == measured
            assert model.deterministic_cost(Measure("macs", seconds)) == measured
        saturate(model)
        assert model.expected_cost(Measure("macs", 1.0)).item() == pytest.approx(small.num_macs(1.0), abs=1.0)
    assert removed > 0  # the trials did exercise whole-block removal


@pytest.mark.parametrize("layout", ["tiny-post", "hubert-large"])
@pytest.mark.parametrize("units", [("conv",), ("head",), ("attlayer",), ("interm",), ("ffnlayer",)])
def test_macs_exact_for_each_unit_type(layout, units):
    config = CONFIGS[layout]()
    g = torch.Generator().manual_seed(len(units[0]))
    for _ in range(3):
        model = hp.Frontend(config, prune_units=units).eval()
        randomise_gates(model, g)
        small = hp.compact(model)
        wave = torch.randn(1, 16000)
        assert model.num_macs(1.0) == count_macs(small, wave) <= model.dense_cost(Measure("macs", 1.0))


@pytest.mark.parametrize("layout", list(CONFIGS))
def test_dense_macs_are_the_gated_and_the_dense_models_measured_macs(layout):
    """Masks multiply, they do not remove work: the gated model costs what the dense one does, whatever its gates."""
    config = CONFIGS[layout]()
    wave = torch.randn(1, 24000)
    dense, gated = hp.Frontend(config, prune_units=()).eval(), hp.Frontend(config).eval()
    randomise_gates(gated, torch.Generator().manual_seed(0))
    measure = Measure("macs", 1.5)
    assert count_macs(dense, wave) == count_macs(gated, wave) == dense.num_macs(1.5) == gated.dense_cost(measure)
    assert gated.dense_cost(PARAMS) == dense.num_params()


@pytest.mark.slow
def test_dense_macs_of_base_plus():
    """The released shape at the default reference length: the count matches the profiler, and the CNN is about a
    third of the forward's MACs while it is ~4 % of the parameters (the reason for a MAC target)."""
    model = hp.Frontend(hp.SHAPES["base-plus"], prune_units=()).eval()
    macs = count_macs(model, torch.randn(1, 64000))
    assert model.num_macs(4.0) == macs
    cnn, _, _ = model.cnn.macs(64000, "deterministic")
    assert 0.3 < cnn / macs < 0.4


def test_expected_macs_reach_every_gate():
    model = hp.Frontend(hp_config("tiny-post")).train()
    model.expected_sparsity(Measure("macs", 2.0)).backward()
    for name, gate in model.gates().items():
        assert gate.log_alpha.grad is not None and gate.log_alpha.grad.abs().sum() > 0, name


def test_macs_weigh_the_cnn_more_than_params_do():
    """Pruning half of every CNN channel removes a larger share of the MACs than of the parameters."""
    model = hp.Frontend(hp_config("tiny-post"), prune_units=("conv",)).eval()
    with torch.no_grad():
        for layer in model.cnn.layers:
            layer.gate.log_alpha.copy_(torch.arange(layer.gate.n) % 2 * 60.0 - 30.0)
    macs = model.deterministic_sparsity(Measure("macs", 4.0))
    assert macs > 2 * model.deterministic_sparsity(PARAMS) > 0


def test_measure_checks_its_values():
    with pytest.raises(ValueError, match="target_measure must be one of params, macs, got 'flops'"):
        Measure("flops")
    for bad in (0, -1.0, True, "4"):
        with pytest.raises(ValueError, match="macs_reference_seconds must be a positive number"):
            Measure("macs", bad)
