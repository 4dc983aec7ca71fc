"""Loading transformers checkpoints: local dirs (safetensors, .bin, task models), the hub cache, errors."""
import json
import shutil

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import hp
from hp.errors import CheckpointError

from helpers import random_hf_model


def outputs_match(model, ref, wave):
    with torch.no_grad():
        expected = ref(wave, output_hidden_states=True).hidden_states
        got = model.eval()(wave)
    return max((a - b).abs().max().item() for a, b in zip(got, expected)) <= 1e-4


def test_local_safetensors_dir(tiny_checkpoint):
    path, ref = tiny_checkpoint
    assert (path / "model.safetensors").is_file()
    model = hp.load_wavlm(path, prune_units=())
    assert not model.gates() and outputs_match(model, ref, torch.randn(2, 5000))
    gated = hp.load_wavlm(str(path))
    assert set(n.rsplit(".", 1)[-1] for n in gated.gates()) == {"gate", "head_gate", "block_gate", "unit_gate"}


def test_pytorch_model_bin_with_legacy_weight_norm_keys(tiny_checkpoint, tmp_path):
    path, ref = tiny_checkpoint
    state = load_file(path / "model.safetensors")
    pos = "encoder.pos_conv_embed.conv."
    state[pos + "weight_g"] = state.pop(pos + "parametrizations.weight.original0")
    state[pos + "weight_v"] = state.pop(pos + "parametrizations.weight.original1")
    d = tmp_path / "bin"
    d.mkdir()
    shutil.copy(path / "config.json", d)
    torch.save(state, d / "pytorch_model.bin")
    assert outputs_match(hp.load_wavlm(d, prune_units=()), ref, torch.randn(1, 4000))


def test_task_model_checkpoint_and_overrides(tmp_path):
    ref = random_hf_model("tiny-post")
    task = transformers.WavLMForXVector(ref.config)
    task.wavlm.load_state_dict(ref.state_dict())
    task.save_pretrained(tmp_path / "xvector")
    model = hp.load_wavlm(tmp_path / "xvector", prune_units=(), layerdrop=0.0, hidden_dropout=0.0)
    assert model.config.layerdrop == 0.0 and model.config.hidden_dropout == 0.0
    assert outputs_match(model, ref, torch.randn(1, 4000))
    with pytest.raises(CheckpointError, match="unknown WavLM config key"):
        hp.load_wavlm(tmp_path / "xvector", dropout_everywhere=0.1)


def test_hub_id_resolves_through_the_hub_cache(tiny_checkpoint, tmp_path, monkeypatch):
    """A hub id goes through huggingface_hub.snapshot_download; offline, it is served from the cache."""
    path, ref = tiny_checkpoint
    cache, commit = tmp_path / "hub", "0123456789abcdef0123456789abcdef01234567"
    snapshot = cache / "models--acme--wavlm-tiny" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(path / f, snapshot / f)
    (cache / "models--acme--wavlm-tiny" / "refs").mkdir()
    (cache / "models--acme--wavlm-tiny" / "refs" / "main").write_text(commit)
    model = hp.load_wavlm("acme/wavlm-tiny", prune_units=(), cache_dir=str(cache))
    assert outputs_match(model, ref, torch.randn(1, 4000))
    with pytest.raises(CheckpointError, match="acme/absent: cannot fetch from the Hugging Face hub"):
        hp.load_wavlm("acme/absent", cache_dir=str(cache))


def test_errors_name_file_and_key(tiny_checkpoint, tmp_path):
    path, _ = tiny_checkpoint
    with pytest.raises(CheckpointError, match="missing-dir: no such directory"):
        hp.load_wavlm(tmp_path / "missing-dir")

    d = tmp_path / "c"
    shutil.copytree(path, d)
    config = json.loads((d / "config.json").read_text())

    (d / "config.json").write_text(json.dumps({**config, "model_type": "hubert"}))
    with pytest.raises(CheckpointError, match=r"config.json: model_type is 'hubert', expected 'wavlm'"):
        hp.load_wavlm(d)

    (d / "config.json").write_text(json.dumps({**config, "hidden_size": 48}))
    with pytest.raises(CheckpointError, match=r"model.safetensors: 'feature_projection.projection.weight' has shape"):
        hp.load_wavlm(d)

    (d / "config.json").write_text(json.dumps(config))
    state = load_file(d / "model.safetensors")
    del state["encoder.layers.1.feed_forward.output_dense.bias"]
    save_file(state, d / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model.safetensors: missing key 'encoder.layers.1.feed_forward"):
        hp.load_wavlm(d)

    (d / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 1}))
    with pytest.raises(CheckpointError, match=r"unexpected key 'encoder.layers.1"):
        hp.load_wavlm(d)

    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors or pytorch_model.bin"):
        hp.load_wavlm(d)
    (d / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json: file not found"):
        hp.load_wavlm(d)


def test_pytorch_model_bin_is_loaded_weights_only(tiny_checkpoint, tmp_path):
    """A pickle that would run code is refused by weights_only=True, and reported against the file."""
    path, _ = tiny_checkpoint
    d = tmp_path / "evil"
    d.mkdir()
    shutil.copy(path / "config.json", d)

    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"x": Payload()}, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pytorch_model.bin: cannot read weights"):
        hp.load_wavlm(d)
