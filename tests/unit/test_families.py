"""HuBERT and wav2vec 2.0 through the same front-end classes as WavLM: parity with transformers' HubertModel and
Wav2Vec2Model, exact parameter counts, compaction, ONNX export, loading and the TaskModel round trip, per layout."""
import json
import shutil

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file

import hp
from hp.deploy.export import Bundle, OnnxModel, parity, random_batch
from hp.errors import CheckpointError, ConfigError
from hp.model.gates import UNIT_TYPES
from hp.model.io import state_dict_from_hf
from hp.tasks import TaskModel

from helpers import randomise_gates
from configs import head_config

# As for WavLM (tests/unit/test_wavlm_parity.py, test_compaction.py): float32 differences are ~1e-6 (summation order
# of other kernels, folded masks); 1e-4 leaves room for that and catches any real mismatch.
ATOL = 1e-4

# Tiny shapes of the released layouts. The CNN keeps the 7 layers, kernels and strides (20 ms frames) at 16-24
# channels, its last width unlike the others' so that a swapped mapping cannot go unnoticed.
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            conv_dim=(16, 16, 16, 16, 16, 24, 24), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
# the pre-LN "stable layer norm" Large layout: a LayerNorm in every CNN layer, conv bias, final encoder LayerNorm
STABLE = dict(feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True)
LAYOUTS = {
    "hubert-base": ("hubert", TINY),  # facebook/hubert-base-ls960: group-norm first conv layer, post-LN
    "hubert-large": ("hubert", {**TINY, **STABLE}),  # facebook/hubert-large-ll60k
    "wav2vec2-base": ("wav2vec2", TINY),  # facebook/wav2vec2-base
    "wav2vec2-xls-r": ("wav2vec2", {**TINY, **STABLE}),  # facebook/wav2vec2-xls-r-300m
}
# DistilHuBERT's projection without its LayerNorm (HuBERT's feat_proj_layer_norm: false): a code path of its own
VARIANTS = {**LAYOUTS, "hubert-no-proj-norm": ("hubert", {**TINY, "feat_proj_layer_norm": False})}
HF = {"hubert": (transformers.HubertConfig, transformers.HubertModel),
      "wav2vec2": (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model)}


def hf_config(layout: str, **changes):
    family, kwargs = VARIANTS[layout]
    return HF[family][0](**{**kwargs, **changes})


def random_ref(layout: str, seed: int = 0, **changes):
    """A transformers model of `layout` with random weights, its norms, biases and weight-norm gains perturbed too,
    so that a swapped or dropped affine parameter cannot go unnoticed."""
    torch.manual_seed(seed)
    ref = HF[VARIANTS[layout][0]][1](hf_config(layout, **changes)).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "norm" in name or name.endswith("bias") or "original0" in name:
                p.add_(torch.randn_like(p) * 0.2)
    return ref


def hp_from_ref(ref, prune_units=()) -> hp.Frontend:
    config = hp.FrontendConfig.from_dict(ref.config.to_dict())
    model = hp.Frontend(config, prune_units=prune_units)
    model.load_state_dict(state_dict_from_hf(ref.state_dict(), config, "test"), strict=not prune_units)
    return model.eval()


def max_diff(a, b) -> float:
    assert len(a) == len(b)
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def assert_matches(model, ref, wave, lengths=None):
    """Every hidden state and last_hidden_state against transformers. With `lengths`, against each utterance run
    alone: hp's outputs do not depend on the padding. That is the reference for every layout because the Base
    layouts (feat_extract_norm "group") are, in transformers, run without an attention mask (their feature
    extractors set return_attention_mask=False) and their group norm takes its statistics over the padding too,
    so transformers' padded batch differs from the utterances alone; hp, as for WavLM Base/Base+, takes the
    group norm's statistics over the real frames only. The layer-norm layouts (Large, XLS-R) are run with
    attention masks, and there transformers' padded batch itself must match too."""
    with torch.no_grad():
        got = model(wave, lengths)
        last = model.last_hidden_state(got)
        if lengths is None:
            runs = [(ref(wave, output_hidden_states=True), slice(None), None)]
        else:
            runs = [(ref(wave[i:i + 1, :n], output_hidden_states=True), slice(i, i + 1), None)
                    for i, n in enumerate(lengths.tolist())]
            if ref.config.feat_extract_norm == "layer":
                mask = (torch.arange(wave.shape[1]) < lengths[:, None]).long()
                frames = model.frame_mask(lengths, got[0].shape[1])
                runs.append((ref(wave, attention_mask=mask, output_hidden_states=True), slice(None), frames))
    assert len(got) == ref.config.num_hidden_layers + 1
    for expected, rows, frames in runs:
        assert len(expected.hidden_states) == len(got)
        n = expected.hidden_states[0].shape[1]
        for i, (a, b) in enumerate([*zip(got, expected.hidden_states), (last, expected.last_hidden_state)]):
            a = a[rows, :n]
            assert a.shape == b.shape, i
            diff = (a - b).abs() if frames is None else (a - b)[frames].abs()  # padding: nobody reads it
            assert diff.max().item() <= ATOL, f"hidden state {i}: max diff {diff.max().item()}"


# ---- 1. parity with transformers ------------------------------------------------------------------------
@pytest.mark.parametrize("layout", list(VARIANTS))
@pytest.mark.parametrize("padded", [False, True])
def test_matches_transformers(layout, padded):
    ref = random_ref(layout)
    model = hp_from_ref(ref)
    assert model.config.model_type == VARIANTS[layout][0] and not model.config.relative_position_bias
    torch.manual_seed(1)
    wave = torch.randn(3, 12000)
    assert_matches(model, ref, wave, torch.tensor([12000, 9100, 4000]) if padded else None)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_family_has_no_relative_position_bias(layout):
    """The encoder is WavLM's with its relative position bias switched off, not a fork: no bias parameters,
    and the attention runs on the padding mask alone."""
    model = hp.Frontend(hp.FrontendConfig.from_dict(hf_config(layout).to_dict()))
    assert model.encoder.rel_pos is None
    assert not [n for n, _ in model.named_parameters() if "rel_pos" in n]
    wavlm = hp.Frontend(hp.SHAPES["tiny"])
    assert type(model.encoder) is type(wavlm.encoder) and wavlm.encoder.rel_pos is not None


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_gradients_reach_every_parameter_and_gate(layout):
    # no LayerDrop: a dropped layer's parameters rightly get no gradient (transformers' default is 0.1)
    model = hp.Frontend(hp.FrontendConfig.from_dict(hf_config(layout, layerdrop=0.0).to_dict())).train()
    out = model(torch.randn(2, 8000), torch.tensor([8000, 6000]))
    out = (*out, model.last_hidden_state(out))  # the pre-LN layouts' final LayerNorm acts there only
    (sum(h.pow(2).mean() for h in out) + model.expected_sparsity()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


# ---- 2. parameter counts ----------------------------------------------------------------------------------
# transformers' num_parameters() of the tiny layouts (with masked_spec_embed, hidden_size = 32 values) and of the
# released shapes; hp drops masked_spec_embed (SpecAugment only; hp applies none), and nothing else.
TINY_COUNTS = {"hubert-base": 27_360, "hubert-large": 27_712, "wav2vec2-base": 27_360, "wav2vec2-xls-r": 27_712,
               "hubert-no-proj-norm": 27_312}
LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, **STABLE)
RELEASED = {  # name: (family, config changes from transformers' defaults (Base), transformers' count)
    "hubert-base-ls960": ("hubert", {}, 94_371_712),
    "hubert-large-ll60k": ("hubert", LARGE, 315_438_720),
    "wav2vec2-base": ("wav2vec2", {}, 94_371_712),
    "wav2vec2-xls-r-300m": ("wav2vec2", LARGE, 315_438_720),
}


@pytest.mark.parametrize("layout", list(VARIANTS))
def test_dense_counts_are_transformers_minus_masked_spec_embed(layout):
    ref = random_ref(layout)
    assert ref.num_parameters() == TINY_COUNTS[layout]
    model = hp_from_ref(ref)
    assert model.num_params() == TINY_COUNTS[layout] - 32 == ref.num_parameters() - ref.masked_spec_embed.numel()
    assert model.num_params() == model.dense_num_params == model.deterministic_num_params()
    assert model.expected_num_params().item() == pytest.approx(model.num_params(), abs=0.5)
    # hp's config written back as transformers' builds the same model (hp.benchmarks.training and
    # hp.training.pretraining do so for WavLM)
    family = VARIANTS[layout][0]
    with torch.device("meta"):
        again = HF[family][1](HF[family][0](**model.config.to_dict()))
    assert again.num_parameters() == ref.num_parameters()


@pytest.mark.parametrize("name", list(RELEASED))
def test_counts_of_the_released_shapes(name):
    family, changes, count = RELEASED[name]
    with torch.device("meta"):
        ref = HF[family][1](HF[family][0](**changes))
        model = hp.Frontend(hp.FrontendConfig.from_dict(ref.config.to_dict()), prune_units=())
    assert ref.num_parameters() == count
    assert model.num_params() == model.dense_num_params == count - ref.config.hidden_size


@pytest.mark.parametrize("layout", list(VARIANTS))
@pytest.mark.parametrize("units", [("conv",), ("head",), ("attlayer",), ("interm",), ("ffnlayer",), UNIT_TYPES])
def test_counts_exact_for_each_unit_type(layout, units):
    """The gates sit on the same unit types as WavLM's; deterministic count == compact count, and the expected
    count at saturated gates is the same number."""
    config = hp.FrontendConfig.from_dict(hf_config(layout).to_dict())
    g = torch.Generator().manual_seed(len(units))
    for _ in range(3):
        model = hp.Frontend(config, prune_units=units).eval()
        assert model.prune_units == frozenset(units)
        randomise_gates(model, g)
        small = hp.compact(model)
        assert small.num_params() == model.deterministic_num_params() <= model.dense_num_params
        with torch.no_grad():
            for gate in model.gates().values():
                gate.log_alpha.copy_(torch.where(gate.deterministic_mask() > 0, 30.0, -30.0))
        assert model.expected_num_params().item() == pytest.approx(small.num_params(), abs=1.0)


# ---- 3. compact == gated ------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", list(VARIANTS))
def test_compact_equals_gated_eval_at_random_masks(layout):
    ref = random_ref(layout, num_hidden_layers=3)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    wave, lengths = torch.randn(3, 9000), torch.tensor([9000, 7000, 3000])
    removed_blocks = 0
    for trial in range(8):
        model = hp_from_ref(ref, prune_units=UNIT_TYPES)
        randomise_gates(model, g, spread=2.0 + trial)  # wider spreads remove whole blocks more often
        small = hp.compact(model)
        assert not small.gates() and small.config == model.config
        with torch.no_grad():
            assert max_diff(model(wave, lengths), small(wave, lengths)) <= ATOL
            assert max_diff(model(wave), small(wave)) <= ATOL
        assert small.num_params() == model.deterministic_num_params()
        removed_blocks += sum((not l.use_attention) + (not l.use_ffn) for l in small.structure.layers)
    assert removed_blocks > 0  # the trials did exercise whole-block removal


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_compact_save_and_load_compact(tmp_path, layout):
    model = hp_from_ref(random_ref(layout), prune_units=UNIT_TYPES)
    randomise_gates(model, torch.Generator().manual_seed(5))
    small = hp.compact(model)
    hp.save_compact(small, tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model_type"] == VARIANTS[layout][0]
    loaded = hp.load_compact(tmp_path / "m")
    assert loaded.config == small.config and loaded.structure == small.structure
    wave = torch.randn(2, 7000)
    with torch.no_grad():
        assert max_diff(small(wave), loaded(wave)) == 0.0


# ---- 4. ONNX export of a TaskModel ------------------------------------------------------------------------
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_onnx_export_of_a_task_model(tmp_path, layout):
    """A compacted SV TaskModel over the family's front end exports with parity against PyTorch (the bundle's
    own check, then padded batches the export never saw), and the bundle loads back as that family."""
    torch.manual_seed(0)
    frontend = hp_from_ref(random_ref(layout), prune_units=UNIT_TYPES)
    randomise_gates(frontend, torch.Generator().manual_seed(0), spread=1.5)
    model = TaskModel("sv", frontend, ["a", "b", "c"], head_config(heads=2, compression=8, embedding=8))
    scoring = {"mean": None, "threshold": 0.3, "threshold_rule": "test"}
    written, checked = Bundle.write(model.compacted(), scoring, tmp_path / "sv", parity_seconds=[0.6, 1.3])
    assert checked["embeddings"]["scaled"] <= ATOL
    worst = parity(written.graph, OnnxModel(written.directory / "model.onnx"), [1.1, 0.45, 0.9], seed=3)
    assert worst["embeddings"]["scaled"] <= ATOL
    loaded = Bundle.load(written.directory)
    assert loaded.graph.model.frontend.config == written.graph.model.frontend.config
    wave, lengths = random_batch([0.8, 0.5])
    np.testing.assert_array_equal(loaded.graph.run(wave, lengths)["embeddings"],
                                  written.graph.run(wave, lengths)["embeddings"])


# ---- 5. loading checkpoints; TaskModel.save / load ----------------------------------------------------------
@pytest.mark.parametrize("layout", list(VARIANTS))
def test_load_frontend_from_a_local_directory(tmp_path, layout):
    ref = random_ref(layout)
    ref.save_pretrained(tmp_path / "ckpt")
    model = hp.load_frontend(tmp_path / "ckpt", prune_units=(), layerdrop=0.0)
    assert model.config.model_type == VARIANTS[layout][0] and model.config.layerdrop == 0.0 and not model.gates()
    assert_matches(model.eval(), ref, torch.randn(2, 6000))
    gated = hp.load_frontend(str(tmp_path / "ckpt"))
    assert gated.prune_units == frozenset(UNIT_TYPES)
    with pytest.raises(CheckpointError, match=rf"config.json: model_type is '{VARIANTS[layout][0]}', expected 'wavlm'"):
        hp.load_wavlm(tmp_path / "ckpt")  # load_wavlm stays WavLM's
    with pytest.raises(CheckpointError, match="unknown .* config key.*: num_buckets"):
        hp.load_frontend(tmp_path / "ckpt", num_buckets=64)  # WavLM's key, not this family's


def test_load_frontend_reads_wavlm_as_load_wavlm_does(tiny_checkpoint):
    path, _ = tiny_checkpoint
    a, b = hp.load_frontend(path, prune_units=()), hp.load_wavlm(path, prune_units=())
    assert a.config == b.config and a.config.model_type == "wavlm"
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("layout", ["hubert-base", "wav2vec2-xls-r"])
def test_task_and_pretraining_checkpoints(tmp_path, layout):
    """HuBERT task models (`hubert.` prefix, a CTC head) and wav2vec 2.0 pretraining checkpoints (`wav2vec2.`
    prefix, quantiser and projections; the XLS-R releases), the latter as a pytorch_model.bin with the legacy
    weight_g / weight_v keys of the facebook/wav2vec2-* releases."""
    ref = random_ref(layout)
    d = tmp_path / "ckpt"
    if layout.startswith("hubert"):
        task = transformers.HubertForCTC(ref.config)
        task.hubert.load_state_dict(ref.state_dict())
        task.save_pretrained(d)
    else:
        task = transformers.Wav2Vec2ForPreTraining(ref.config)
        task.wav2vec2.load_state_dict(ref.state_dict())
        task.save_pretrained(d)
        state = load_file(d / "model.safetensors")
        pos = "wav2vec2.encoder.pos_conv_embed.conv."
        state[pos + "weight_g"] = state.pop(pos + "parametrizations.weight.original0")
        state[pos + "weight_v"] = state.pop(pos + "parametrizations.weight.original1")
        (d / "model.safetensors").unlink()
        torch.save(state, d / "pytorch_model.bin")
    assert_matches(hp.load_frontend(d, prune_units=()).eval(), ref, torch.randn(1, 5000))


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_task_model_save_load_round_trip(tmp_path, layout):
    """TaskModel.save writes the front end's config.to_dict(); TaskModel.load rebuilds it through
    WavLMConfig.from_dict + WavLM(config, structure, prune_units): the family survives, gated and compacted."""
    ref = random_ref(layout)
    ref.save_pretrained(tmp_path / "ckpt")
    frontend = hp.load_frontend(tmp_path / "ckpt", prune_units=("head", "interm", "ffnlayer"))
    randomise_gates(frontend, torch.Generator().manual_seed(2))
    model = TaskModel("cm", frontend, ["spoof", "bonafide"], head_config(heads=2, compression=8, embedding=8)).eval()
    wave, lengths = torch.randn(2, 6000), torch.tensor([6000, 4500])
    for m, name in ((model, "gated"), (model.compacted(), "compact")):
        m.save(tmp_path / name)
        meta = json.loads((tmp_path / name / "task.json").read_text())
        assert meta["frontend"]["model_type"] == VARIANTS[layout][0]
        assert "num_buckets" not in meta["frontend"]  # WavLM's key is not written for another family
        back = TaskModel.load(tmp_path / name).eval()
        assert back.frontend.config == m.frontend.config and back.frontend.structure == m.frontend.structure
        assert back.frontend.prune_units == m.frontend.prune_units
        with torch.no_grad():
            assert torch.equal(back.embed(wave, lengths), m.embed(wave, lengths))


def test_old_task_json_without_model_type_loads_as_wavlm(tmp_path):
    model = TaskModel("sv", hp.Frontend(hp.SHAPES["tiny"].replace(num_hidden_layers=1)), ["a", "b"],
                      head_config(heads=2, compression=8, embedding=8)).eval()
    model.save(tmp_path / "m")
    path = tmp_path / "m" / "task.json"
    meta = json.loads(path.read_text())
    del meta["frontend"]["model_type"]
    path.write_text(json.dumps(meta))
    back = TaskModel.load(tmp_path / "m")
    assert back.frontend.config == model.frontend.config and back.frontend.config.model_type == "wavlm"


def test_config_round_trip_and_family_keys():
    for family in hp.FAMILIES:
        config = hp.FrontendConfig(model_type=family, hidden_size=64, num_attention_heads=4)
        assert hp.FrontendConfig.from_dict(config.to_dict()) == config
    assert hp.FrontendConfig is hp.FrontendConfig and hp.Frontend is hp.Frontend
    assert set(hp.SHAPES["tiny"].to_dict()) == set(hp.FrontendConfig(model_type="wav2vec2").to_dict()) | {
        "num_buckets", "max_bucket_distance"}
    with pytest.raises(ConfigError, match="num_buckets is WavLM's; a hubert front end"):
        hp.FrontendConfig(model_type="hubert", num_buckets=64)
    with pytest.raises(ConfigError, match="feat_proj_layer_norm is HuBERT's"):
        hp.FrontendConfig(model_type="wav2vec2", feat_proj_layer_norm=False)
    with pytest.raises(ConfigError, match="unknown wav2vec 2.0 config key.*: feat_proj_layer_norm"):
        hp.FrontendConfig(model_type="wav2vec2").replace(feat_proj_layer_norm=False)


def test_wavlm_anchors_are_not_claimed_by_other_families():
    """The report sets the authors' WavLM results beside a run of the same shape: never beside HuBERT's."""
    from hp.reporting import published

    for name, (family, changes, _) in RELEASED.items():
        config = hp.FrontendConfig.from_dict(HF[family][0](**changes).to_dict())
        assert published.shape_of(config.to_dict()) is None
        assert published.shape_of(config.replace(model_type="wavlm").to_dict()) in ("base-plus", "large")


# ---- 6. unsupported checkpoints ----------------------------------------------------------------------------
def test_unsupported_model_type_is_a_one_line_error(tiny_checkpoint, tmp_path):
    path, _ = tiny_checkpoint
    d = tmp_path / "whisper"
    shutil.copytree(path, d)
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "model_type": "whisper"}))
    with pytest.raises(CheckpointError) as error:
        hp.load_frontend(d)
    message = str(error.value)
    assert message == (f"{d / 'config.json'}: model_type is 'whisper', expected one of 'wavlm', 'hubert', "
                       "'wav2vec2'") and "\n" not in message
    del config["model_type"]  # a transformers config.json always names it; hp does not guess
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="config.json: model_type is None, expected one of"):
        hp.load_frontend(d)
    with pytest.raises(ConfigError, match="task.json: model_type is 'whisper'"):
        hp.FrontendConfig.from_dict({"model_type": "whisper"}, "task.json")


@pytest.mark.parametrize("layout, change, message", [
    ("hubert-base", {"conv_pos_batch_norm": True}, "conv_pos_batch_norm is true"),
    ("wav2vec2-xls-r", {"adapter_attn_dim": 16}, "adapter_attn_dim is 16"),
    ("wav2vec2-base", {"add_adapter": True}, "add_adapter is true; wav2vec 2.0 adapters"),
    ("hubert-large", {"hidden_act": "relu"}, "hidden_act is 'relu'"),
])
def test_layouts_hp_cannot_reproduce_are_refused(tmp_path, layout, change, message):
    random_ref(layout).save_pretrained(tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(CheckpointError, match=f"config.json: {message}"):
        hp.load_frontend(tmp_path / "ckpt")


def test_wavlm_checkpoint_still_matches(tiny_checkpoint):
    """The WavLM path through the shared classes: relative position bias on, parity as before."""
    path, ref = tiny_checkpoint
    model = hp.load_frontend(path, prune_units=()).eval()
    assert model.config.relative_position_bias and model.encoder.rel_pos is not None
    wave = torch.randn(2, 5000)
    with torch.no_grad():
        assert max_diff(model(wave), ref(wave, output_hidden_states=True).hidden_states) <= ATOL
