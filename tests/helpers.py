"""What many tests build: transformers reference models and configs, hp configs from them, random gates, noise
files, a small compacted SV model and its scoring.json settings; and the repository root."""
import textwrap
from pathlib import Path

import torch
import transformers

import hp
from configs import head_config
from hp.model import Frontend
from hp.model.config import SHAPES
from hp.tasks import TaskModel

ROOT_DIR = Path(__file__).resolve().parents[1]

# transformers configs for the layouts hp must reproduce. The tiny ones keep every code path (group/layer
# norm CNN, conv bias on/off, post-LN/pre-LN, even pos-conv kernel) at a size that runs in milliseconds.
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, conv_dim=(32,) * 7,
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, num_buckets=64, max_bucket_distance=128)
HF_CONFIGS = {
    "tiny-post": dict(TINY),
    "tiny-pre": dict(TINY, do_stable_layer_norm=True, feat_extract_norm="layer", conv_bias=True),
    "base-plus": dict(),  # transformers' defaults are WavLM Base+'s shape
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                  do_stable_layer_norm=True, feat_extract_norm="layer"),
}


def hf_config(name: str, **changes) -> transformers.WavLMConfig:
    return transformers.WavLMConfig(**{**HF_CONFIGS[name], **changes})


def random_hf_model(name: str, seed: int = 0, **changes) -> transformers.WavLMModel:
    """A transformers WavLMModel with random weights, norms, biases and bias-gate constants perturbed too,
    so that a swapped or dropped affine parameter cannot go unnoticed."""
    torch.manual_seed(seed)
    model = transformers.WavLMModel(hf_config(name, **changes)).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n or n.endswith("bias") or "gru_rel_pos" in n or "weight_g" in n or "original0" in n:
                p.add_(torch.randn_like(p) * 0.2)
    return model


def hp_config(name: str, **changes) -> hp.FrontendConfig:
    return hp.FrontendConfig.from_dict(hf_config(name, **changes).to_dict())


def randomise_gates(model: hp.Frontend, generator: torch.Generator, spread: float = 4.0) -> None:
    """log_alpha ~ N(0, spread^2): masks that prune a good share of every unit type, soft values in (0, 1)."""
    with torch.no_grad():
        for gate in model.gates().values():
            gate.log_alpha.copy_(torch.randn(gate.n, generator=generator) * spread)


def noise_wav(path: Path, seconds: float, seed: int, decay: float | None = None, fmt: str = "WAV") -> None:
    """White noise at 16 kHz (an RIR with `decay`: a direct path, then an exponentially decaying tail)."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    wave = rng.normal(0, 0.1, int(seconds * 16000))
    if decay is not None:
        wave *= np.exp(-np.arange(len(wave)) / (decay * 16000))
        wave[0] = 1.0
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave.astype(np.float32), 16000, format=fmt)


SV_SCORING = {"mean": None, "threshold": 0.3, "threshold_rule": "EER of the cosine scores on trial list O"}


def compact_sv_model() -> TaskModel:
    """A compacted two-layer SV model with the ECAPA-TDNN back-end (batch norm, masked statistics) and some
    heads, units, channels and one block removed."""
    config = SHAPES["tiny"].replace(num_hidden_layers=2, intermediate_size=64, conv_dim=(16,) * 7)
    torch.manual_seed(0)
    head = head_config(backend="ecapa", ecapa_channels=16, ecapa_mfa_channels=48, embedding=12)
    model = TaskModel("sv", Frontend(config), ["a", "b", "c"], head)
    with torch.no_grad():
        randomise_gates(model.frontend, torch.Generator().manual_seed(0), spread=1.5)
        model.frontend.encoder.layers[1].feed_forward.block_gate.log_alpha.fill_(-20.0)  # a whole block off
    return model.compacted()


def only_importing(*packages: str) -> str:
    """Python source that, run first in a fresh process, makes every import fail but the standard library's and
    `packages`' (what a machine with only those installed would do)."""
    return textwrap.dedent(f"""
        import importlib.abc, sys
        ALLOWED = set({sorted(packages)!r}) | set(sys.stdlib_module_names)
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] not in ALLOWED:
                    raise ImportError(f"{{name}} is not installed here")
        sys.meta_path.insert(0, Block())
    """)
