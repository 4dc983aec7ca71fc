"""Import transformers' WavLM, HuBERT and wav2vec 2.0 checkpoints (hub id or local dir); save and load compacted
models."""
from __future__ import annotations

import os
import pickle
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hp.errors import CheckpointError, ConfigError
from hp.model.config import FAMILIES, FAMILY_NAMES, FrontendConfig
from hp.model.frontend import Frontend
from hp.model.gates import UNIT_TYPES
from hp.model.structure import WavLMStructure
from hp.utils.files import atomic_dir, read_json, write_json

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
COMPACT_FORMAT = "hp-compact-wavlm"  # the name predates the other families; config.json's model_type tells them apart


# ---- transformers checkpoint -> hp ----------------------------------------------------------------------
def _hf_sources(config: FrontendConfig) -> dict[str, tuple[str, ...]]:
    """hp parameter name -> the transformers key(s) it is made of (q, k, v are fused into qkv).

    The three families name their shared modules alike (transformers' HuBERT and WavLM copy wav2vec 2.0's
    modules); only WavLM has the relative position bias (rel_attn_embed, gru_rel_pos_*) and only HuBERT may
    lack the projection's norm (feat_proj_layer_norm: false).
    """
    m = {}
    for i in range(len(config.conv_dim)):
        src = f"feature_extractor.conv_layers.{i}"
        m[f"cnn.layers.{i}.conv.weight"] = (f"{src}.conv.weight",)
        if config.conv_bias:
            m[f"cnn.layers.{i}.conv.bias"] = (f"{src}.conv.bias",)
        if config.feat_extract_norm == "layer" or i == 0:
            for p in ("weight", "bias"):
                m[f"cnn.layers.{i}.norm.{p}"] = (f"{src}.layer_norm.{p}",)
    for p in ("weight", "bias"):
        if config.feat_proj_layer_norm:
            m[f"projection.norm.{p}"] = (f"feature_projection.layer_norm.{p}",)
        m[f"projection.linear.{p}"] = (f"feature_projection.projection.{p}",)
        m[f"encoder.norm.{p}"] = (f"encoder.layer_norm.{p}",)
    pos = "encoder.pos_conv_embed.conv"
    m["encoder.pos_conv.weight_g"] = (f"{pos}.parametrizations.weight.original0",)
    m["encoder.pos_conv.weight_v"] = (f"{pos}.parametrizations.weight.original1",)
    m["encoder.pos_conv.bias"] = (f"{pos}.bias",)
    rel_pos = config.relative_position_bias
    if rel_pos:
        m["encoder.rel_pos.embedding.weight"] = ("encoder.layers.0.attention.rel_attn_embed.weight",)
    stable = config.do_stable_layer_norm
    for i in range(config.num_hidden_layers):
        src, dst = f"encoder.layers.{i}", f"encoder.layers.{i}"
        for p in ("weight", "bias"):
            m[f"{dst}.attention.qkv.{p}"] = tuple(f"{src}.attention.{x}_proj.{p}" for x in "qkv")
            m[f"{dst}.attention.out_proj.{p}"] = (f"{src}.attention.out_proj.{p}",)
            if rel_pos:
                m[f"{dst}.attention.rel_pos_gate.{p}"] = (f"{src}.attention.gru_rel_pos_linear.{p}",)
            m[f"{dst}.feed_forward.fc1.{p}"] = (f"{src}.feed_forward.intermediate_dense.{p}",)
            m[f"{dst}.feed_forward.fc2.{p}"] = (f"{src}.feed_forward.output_dense.{p}",)
            # Pre-LN: each norm belongs to the block it feeds. Post-LN: the norms sit on the residual stream.
            m[f"{dst}.{'attention.norm' if stable else 'attention_norm'}.{p}"] = (f"{src}.layer_norm.{p}",)
            m[f"{dst}.{'feed_forward.norm' if stable else 'ffn_norm'}.{p}"] = (f"{src}.final_layer_norm.{p}",)
        if rel_pos:
            m[f"{dst}.attention.rel_pos_const"] = (f"{src}.attention.gru_rel_pos_const",)
    return m


# Older checkpoints (e.g. the microsoft/wavlm-* and facebook/wav2vec2-* releases) store the weight norm as
# weight_g / weight_v.
_LEGACY_KEYS = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
# Keys outside these (masked_spec_embed, task heads) are not part of hp's front end and are ignored.
_OWN_PREFIXES = ("feature_extractor.", "feature_projection.", "encoder.")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        weights = (load_file(path) if path.suffix == ".safetensors"
                   else torch.load(path, map_location="cpu", weights_only=True))
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: cannot read weights (refused by weights_only=True: "
                              "the pickle holds more than tensors)") from None
    except (SafetensorError, OSError, RuntimeError, EOFError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"{path}: cannot read weights ({type(e).__name__}: {reason})") from None
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{path}: cannot read weights (not a flat mapping of names to tensors)")
    return weights


def _normalise_keys(weights: dict[str, torch.Tensor], model_type: str = "wavlm") -> dict[str, torch.Tensor]:
    """Strip the family's prefix (`wavlm.`, `hubert.`, `wav2vec2.`) of task and pretraining checkpoints (their
    heads, quantiser and projections are dropped) and rename legacy keys."""
    prefix = f"{model_type}."  # transformers' base_model_prefix is the model_type in all three families
    if any(k.startswith(prefix) for k in weights):
        weights = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    out = {}
    for k, v in weights.items():
        head, _, last = k.rpartition(".")
        out[f"{head}.{_LEGACY_KEYS[last]}" if last in _LEGACY_KEYS and "pos_conv_embed" in head else k] = v
    return out


def state_dict_from_hf(weights: dict[str, torch.Tensor], config: FrontendConfig,
                       source: str) -> dict[str, torch.Tensor]:
    """Map a transformers state dict of `config`'s family onto hp's dense parameter names, checking keys and
    shapes."""
    weights = _normalise_keys(weights, config.model_type)
    with torch.device("meta"):
        expected = Frontend(config, prune_units=()).state_dict()
    sources = _hf_sources(config)
    out, used = {}, set()
    for name, keys in sources.items():
        for k in keys:
            if k not in weights:
                raise CheckpointError(f"{source}: missing key {k!r}")
        tensors = [weights[k] for k in keys]
        used.update(keys)
        if name.endswith("rel_pos_const"):
            tensors = [t.reshape(-1) for t in tensors]  # [1, H, 1, 1] -> [H]
        shape = expected[name].shape
        parts = [shape[0] // len(keys), *shape[1:]] if len(keys) > 1 else list(shape)
        for k, t in zip(keys, tensors):
            if list(t.shape) != parts and not (name.endswith("rel_pos_const") and t.numel() == parts[0]):
                raise CheckpointError(
                    f"{source}: {k!r} has shape {tuple(t.shape)} but config.json implies {tuple(parts)}")
        out[name] = torch.cat(tensors) if len(tensors) > 1 else tensors[0]
    unexpected = [k for k in weights if k not in used and k.startswith(_OWN_PREFIXES)]
    if unexpected:
        raise CheckpointError(f"{source}: unexpected key {unexpected[0]!r} ({len(unexpected)} in all); "
                              "does config.json describe this checkpoint?")
    missing = set(expected) - set(out)
    assert not missing, missing  # _hf_sources covers every dense parameter
    return {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in out.items()}


def _resolve(source: str | os.PathLike, revision: str | None, cache_dir: str | None) -> Path:
    """A local checkpoint directory, or the hub id's snapshot (config and one weight file) in the HF cache."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    # hub ids look like "org/name"; anything path-like that is not a directory is a local mistake
    if path.exists() or str(source).startswith((".", "/", "~")) or str(source).count("/") > 1:
        raise CheckpointError(f"{source}: no such directory holding a transformers checkpoint "
                              f"({', '.join(FAMILY_NAMES.values())})")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        for weights in WEIGHT_FILES:  # fetch one weight file, the preferred one when the repo has both
            root = Path(snapshot_download(repo_id=str(source), revision=revision, cache_dir=cache_dir,
                                          allow_patterns=["config.json", weights]))
            if (root / weights).is_file():
                break
        return root
    except HFValidationError:
        raise CheckpointError(f"{source}: neither a local directory nor a valid Hugging Face hub id") from None
    except Exception as e:  # network, authentication, missing repo: all end here with the reason
        reason = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"{source}: cannot fetch from the Hugging Face hub ({type(e).__name__}: {reason})") from None


def load_frontend(source: str | os.PathLike, prune_units: Iterable[str] = UNIT_TYPES, *,
                  revision: str | None = None, cache_dir: str | None = None, **config_overrides) -> Frontend:
    """A pretrained front end of the family config.json's `model_type` names ("wavlm", "hubert", "wav2vec2"),
    from a Hugging Face hub id or a local directory in transformers' layout.

    The directory holds `config.json` and `model.safetensors` (preferred) or `pytorch_model.bin` (read with
    `weights_only=True`); checkpoints of transformers' task and pretraining models (`wavlm.`, `hubert.`,
    `wav2vec2.` prefix, e.g. Wav2Vec2ForPreTraining's XLS-R releases) work too. `config_overrides` replace
    config values, e.g. `layerdrop=0.0`. Gates start as the brief prescribes.
    """
    return _load(source, prune_units, FAMILIES, revision, cache_dir, config_overrides)


def load_wavlm(source: str | os.PathLike, prune_units: Iterable[str] = UNIT_TYPES, *, revision: str | None = None,
               cache_dir: str | None = None, **config_overrides) -> Frontend:
    """`load_frontend` for WavLM checkpoints only: another model_type is an error."""
    return _load(source, prune_units, ("wavlm",), revision, cache_dir, config_overrides)


def _load(source, prune_units, families: tuple[str, ...], revision, cache_dir, config_overrides: dict) -> Frontend:
    root = _resolve(source, revision, cache_dir)
    config_path = root / "config.json"
    config_dict = read_json(config_path, CheckpointError)
    # the family is what config.json says, never a guess: a missing model_type (which from_dict reads as hp's
    # own files without one, as WavLM) is reported as None
    config_dict = {**config_dict, "model_type": config_dict.get("model_type")}
    try:
        config = FrontendConfig.from_dict(config_dict, source=str(config_path), families=families)
        config = config.replace(**config_overrides)
    except ConfigError as e:  # one error type for everything the loader finds wrong
        raise CheckpointError(str(e)) from None
    weights_path = next((root / f for f in WEIGHT_FILES if (root / f).is_file()), None)
    if weights_path is None:
        raise CheckpointError(f"{root}: no {' or '.join(WEIGHT_FILES)} found")
    state = state_dict_from_hf(_read_weights(weights_path), config, str(weights_path))
    model = Frontend(config, prune_units=prune_units)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("log_alpha") for k in missing), (missing, unexpected)
    return model


# ---- compact models -----------------------------------------------------------------------------------
def save_compact(model: Frontend, directory: str | os.PathLike) -> None:
    """Write `config.json`, `structure.json` and `model.safetensors`; the directory appears complete or not at all."""
    if model.gates():
        raise ValueError("save_compact() writes compacted models; call hp.compact(model) first")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_dir(directory) as tmp:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": COMPACT_FORMAT})
        write_json(tmp / "config.json", {"format": COMPACT_FORMAT, **model.config.to_dict()})
        write_json(tmp / "structure.json", model.structure.to_dict())


def load_compact(directory: str | os.PathLike, device: str | torch.device = "cpu") -> Frontend:
    """Rebuild a compacted model saved by `save_compact` from its structure, then load its weights."""
    directory = Path(directory)
    config_path, structure_path, weights_path = (directory / f for f in
                                                 ("config.json", "structure.json", "model.safetensors"))
    config_dict = read_json(config_path, CheckpointError)
    if config_dict.get("format") != COMPACT_FORMAT:
        raise CheckpointError(f"{config_path}: not an hp compact model (format is {config_dict.get('format')!r})")
    try:
        config = FrontendConfig.from_dict(config_dict, source=str(config_path))
        structure = WavLMStructure.from_dict(read_json(structure_path, CheckpointError), source=str(structure_path))
        structure.validate(config, source=str(structure_path))
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: file not found")
    state = _read_weights(weights_path)
    with torch.device("meta"):
        model = Frontend(config, structure, prune_units=())
    expected = model.state_dict()
    for k, v in expected.items():
        if k not in state:
            raise CheckpointError(f"{weights_path}: missing key {k!r}")
        if state[k].shape != v.shape:
            raise CheckpointError(f"{weights_path}: {k!r} has shape {tuple(state[k].shape)}, "
                                  f"{structure_path.name} implies {tuple(v.shape)}")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CheckpointError(f"{weights_path}: unexpected key {extra[0]!r}")
    model.load_state_dict({k: v.to(device) for k, v in state.items()}, assign=True)
    return model.eval()
