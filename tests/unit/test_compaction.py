"""Counting and compaction at random masks: compact == gated (eval), counts exact, save/load round trip."""
import json

import pytest
import torch

import hp
from hp.errors import CheckpointError, ConfigError
from hp.model.gates import UNIT_TYPES

from helpers import hp_config, randomise_gates

# Compaction reorders float32 sums (folded masks, smaller matmuls); observed differences are ~1e-6.
ATOL = 1e-4
LAYOUTS = ["tiny-post", "tiny-pre"]


def run(model, wave, lengths):
    with torch.no_grad():
        return model(wave, lengths)


def max_diff(a, b):
    assert len(a) == len(b)
    return max((x - y).abs().max().item() for x, y in zip(a, b))


@pytest.mark.parametrize("name", LAYOUTS)
def test_compact_equals_gated_eval_at_random_masks(name):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    wave, lengths = torch.randn(3, 9000), torch.tensor([9000, 7000, 3000])
    removed_blocks = 0
    for trial in range(12):
        model = hp.Frontend(hp_config(name, num_hidden_layers=3)).eval()
        randomise_gates(model, g, spread=2.0 + trial)  # wider spreads remove whole blocks more often
        small = hp.compact(model)
        assert not small.gates()
        assert max_diff(run(model, wave, lengths), run(small, wave, lengths)) <= ATOL
        assert max_diff(run(model, wave, None), run(small, wave, None)) <= ATOL
        assert small.num_params() == model.deterministic_num_params()
        s = small.structure
        removed_blocks += sum((not l.use_attention) + (not l.use_ffn) for l in s.layers)
        assert s.conv_channels == tuple(l.gate.num_kept() for l in model.cnn.layers)
    assert removed_blocks > 0  # the trials did exercise whole-block removal


@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("units", [("conv",), ("head",), ("attlayer",), ("interm",), ("ffnlayer",),
                                   ("head", "interm"), UNIT_TYPES])
def test_counts_exact_for_any_subset_of_unit_types(name, units):
    g = torch.Generator().manual_seed(hash(units) % 1000)
    for _ in range(5):
        model = hp.Frontend(hp_config(name), prune_units=units).eval()
        randomise_gates(model, g)
        small = hp.compact(model)
        assert small.num_params() == model.deterministic_num_params()
        # the expected count at saturated gates (P(z != 0) within 1e-9 of 0 or 1) is the same number
        with torch.no_grad():
            for gate in model.gates().values():
                mask = gate.deterministic_mask()
                gate.log_alpha.copy_(torch.where(mask > 0, 30.0, -30.0))
        assert model.expected_num_params().item() == pytest.approx(small.num_params(), abs=1.0)


def test_block_removed_entirely_and_heads_keep_original_indices():
    model = hp.Frontend(hp_config("tiny-pre", num_hidden_layers=3)).eval()
    with torch.no_grad():
        for gate in model.gates().values():
            gate.log_alpha.fill_(10.0)
        model.encoder.layers[0].attention.block_gate.log_alpha.fill_(-10.0)
        model.encoder.layers[2].attention.head_gate.log_alpha.fill_(-10.0)  # block gate on, no head left
        model.encoder.layers[1].feed_forward.unit_gate.log_alpha.fill_(-10.0)
        model.encoder.layers[1].attention.head_gate.log_alpha.copy_(torch.tensor([-10.0, 10, -10, 10]))
    small = hp.compact(model)
    assert small.encoder.layers[0].attention is None and small.encoder.layers[1].feed_forward is None
    assert small.encoder.layers[2].attention is None
    assert small.structure.layers[1].heads == (1, 3)
    assert small.structure.layers[1].ffn_dim == 0 and not small.structure.layers[0].use_attention
    wave = torch.randn(2, 6000)
    assert max_diff(run(model, wave, None), run(small, wave, None)) <= ATOL


def test_compacting_twice_is_stable():
    g = torch.Generator().manual_seed(3)
    model = hp.Frontend(hp_config("tiny-post")).eval()
    randomise_gates(model, g)
    once = hp.compact(model)
    twice = hp.compact(once)
    assert twice.structure == once.structure
    wave = torch.randn(1, 5000)
    assert max_diff(run(once, wave, None), run(twice, wave, None)) == 0.0


def test_compacted_model_can_be_gated_and_pruned_again():
    g = torch.Generator().manual_seed(4)
    model = hp.Frontend(hp_config("tiny-post")).eval()
    randomise_gates(model, g, spread=1.0)
    small = hp.compact(model)
    regated = hp.Frontend(small.config, small.structure)
    regated.load_state_dict(small.state_dict(), strict=False)
    randomise_gates(regated.eval(), g, spread=1.0)
    smaller = hp.compact(regated)
    assert smaller.num_params() == regated.deterministic_num_params() < small.num_params()
    assert set(smaller.structure.layers[0].heads) <= set(small.structure.layers[0].heads)
    wave = torch.randn(1, 5000)
    assert max_diff(run(regated, wave, None), run(smaller, wave, None)) <= ATOL


@pytest.mark.parametrize("name", LAYOUTS)
def test_save_and_load_round_trip(tmp_path, name):
    model = hp.Frontend(hp_config(name)).eval()
    randomise_gates(model, torch.Generator().manual_seed(5))
    small = hp.compact(model)
    hp.save_compact(small, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors", "structure.json"]
    loaded = hp.load_compact(tmp_path / "m")
    assert loaded.structure == small.structure and loaded.config == small.config
    wave = torch.randn(2, 7000)
    assert max_diff(run(small, wave, None), run(loaded, wave, None)) == 0.0


def test_save_refuses_gated_model(tmp_path):
    with pytest.raises(ValueError, match="compact"):
        hp.save_compact(hp.Frontend(hp.SHAPES["tiny"]), tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_load_compact_errors_name_the_file(tmp_path):
    small = hp.compact(hp.Frontend(hp.SHAPES["tiny"]).eval())
    d = tmp_path / "m"
    hp.save_compact(small, d)
    (d / "structure.json").write_text('{"conv_channels": [1, 2], "layers": []}')
    with pytest.raises(CheckpointError, match="structure.json: 2 CNN layers"):
        hp.load_compact(d)
    (d / "structure.json").write_text('{"conv_channels": [1, 2]}')
    with pytest.raises(CheckpointError, match="structure.json: malformed"):
        hp.load_compact(d)
    structure = small.structure.to_dict()
    structure["layers"][0]["ffn_dim"] -= 1  # valid, but not what the weights hold
    (d / "structure.json").write_text(json.dumps(structure))
    with pytest.raises(CheckpointError, match=r"model.safetensors: 'encoder.layers.0.feed_forward.fc1.weight' has shape"):
        hp.load_compact(d)
    hp.save_compact(small, d)
    (d / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="model.safetensors: cannot read"):
        hp.load_compact(d)
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors: file not found"):
        hp.load_compact(d)
    (d / "config.json").write_text("{")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        hp.load_compact(d)
    with pytest.raises(CheckpointError, match="config.json: file not found"):
        hp.load_compact(tmp_path / "nowhere")


def test_structure_json_round_trip_and_validation():
    config = hp.SHAPES["tiny"].replace(num_hidden_layers=2)
    s = hp.WavLMStructure((3,) * 7, (hp.LayerStructure((0, 2), 5), hp.LayerStructure((), 0)))
    s.validate(config)
    assert hp.WavLMStructure.from_dict(s.to_dict()) == s
    assert s.to_dict()["layers"][1] == {"heads": [], "ffn_dim": 0, "use_attention": False, "use_ffn": False}
    for bad in (hp.WavLMStructure((3,) * 6, s.layers), hp.WavLMStructure((0,) * 7, s.layers),
                hp.WavLMStructure(s.conv_channels, (hp.LayerStructure((0, 0), 5), s.layers[1])),
                hp.WavLMStructure(s.conv_channels, (hp.LayerStructure((4,), 5), s.layers[1]))):
        with pytest.raises(ConfigError):
            bad.validate(config)


def test_expected_count_is_exact_at_full_size():
    """float64 counting: at saturated gates the Base+ count (94M) is exact, not float32-rounded."""
    with torch.device("meta"):
        shape = hp.Frontend(hp.SHAPES["base-plus"])
    model = hp.Frontend(hp.SHAPES["base-plus"].replace(num_hidden_layers=2), prune_units=("head", "interm"))
    with torch.no_grad():
        for gate in model.gates().values():
            gate.log_alpha.fill_(40.0)
    assert model.expected_num_params().dtype == torch.float64
    assert model.expected_num_params().item() == model.num_params()
    assert shape.dense_num_params == 94_381_936 - 768  # transformers: 94,381,936 with masked_spec_embed
