"""The WavLM front end's hyper-parameters, read from (and written as) transformers' config.json."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hp.errors import ConfigError


@dataclass(frozen=True)
class WavLMConfig:
    """Shape and regularisation of a WavLM front end.

    Field names and defaults are those of `transformers.WavLMConfig`, so a checkpoint's config.json maps
    onto this class key for key. Only what the front end uses is kept.
    """

    conv_dim: tuple[int, ...] = (512,) * 7
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    feat_extract_norm: str = "group"  # "group": GroupNorm in the first CNN layer only; "layer": LayerNorm in each
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    layer_norm_eps: float = 1e-5
    do_stable_layer_norm: bool = False  # True: pre-LN layers (Large); False: post-LN (Base, Base+)
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    num_buckets: int = 320
    max_bucket_distance: int = 800
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.1
    feat_proj_dropout: float = 0.0
    layerdrop: float = 0.1

    def __post_init__(self) -> None:
        for name in ("conv_dim", "conv_kernel", "conv_stride"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        n = len(self.conv_dim)
        if not (n == len(self.conv_kernel) == len(self.conv_stride)) or n == 0:
            raise ConfigError("conv_dim, conv_kernel and conv_stride must be non-empty and of equal length")
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "num_buckets", "max_bucket_distance"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if any(v < 1 for v in (*self.conv_dim, *self.conv_kernel, *self.conv_stride)):
            raise ConfigError("conv_dim, conv_kernel and conv_stride must be positive")
        for name in ("hidden_dropout", "attention_dropout", "activation_dropout", "feat_proj_dropout", "layerdrop"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            raise ConfigError(f"hidden_size {self.hidden_size} is not divisible by num_conv_pos_embedding_groups "
                              f"{self.num_conv_pos_embedding_groups}")
        if self.feat_extract_norm not in ("group", "layer"):
            raise ConfigError(f"feat_extract_norm is {self.feat_extract_norm!r}; expected 'group' or 'layer'")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def replace(self, **changes) -> WavLMConfig:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown WavLM config key(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(model_type="wavlm", num_feat_extract_layers=len(self.conv_dim))
        for name in ("conv_dim", "conv_kernel", "conv_stride"):
            d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "config.json") -> WavLMConfig:
        """Read a transformers-style WavLM config; `source` names the file in errors."""
        model_type = d.get("model_type")
        if model_type != "wavlm":
            raise ConfigError(f"{source}: model_type is {model_type!r}, expected 'wavlm'")
        for key in ("hidden_act", "feat_extract_activation"):
            if d.get(key, "gelu") != "gelu":
                raise ConfigError(f"{source}: {key} is {d[key]!r}; only 'gelu' (as in every WavLM release) is supported")
        if d.get("add_adapter"):
            raise ConfigError(f"{source}: add_adapter is true; WavLM adapters are not supported")
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in d.items() if k in names})
        except (ConfigError, TypeError, ValueError) as e:  # e.g. a string where a list of ints belongs
            raise ConfigError(f"{source}: {e}") from None


# Shapes for tests and benchmarks. base-plus and large are the released models' shapes (random weights);
# tiny keeps the CNN's strides (20 ms frames) but is small enough for CPU smoke runs, with Base+'s proportions
# where pruning cares: the transformer holds ~90% of the parameters (Base+: 90%), the unprunable positional
# conv ~2% (Base+: 5%), one FFN block ~15%, so that 0.7 sparsity still leaves a transformer.
SHAPES: dict[str, WavLMConfig] = {
    "tiny": WavLMConfig(
        conv_dim=(32,) * 7, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=16, num_buckets=64, max_bucket_distance=128,
    ),
    "base-plus": WavLMConfig(),
    "large": WavLMConfig(
        feat_extract_norm="layer", hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
        intermediate_size=4096, do_stable_layer_norm=True,
    ),
}
