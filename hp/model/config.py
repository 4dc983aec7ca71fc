"""The front end's hyper-parameters (WavLM, HuBERT, wav2vec 2.0), read from (and written as) transformers'
config.json."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hp.errors import ConfigError

# The front-end families, by transformers' model_type. They share the CNN, the feature projection and the
# transformer layout (post-LN Base / pre-LN "stable layer norm" Large); what differs is per-family below.
FAMILIES = ("wavlm", "hubert", "wav2vec2")
FAMILY_NAMES = {"wavlm": "WavLM", "hubert": "HuBERT", "wav2vec2": "wav2vec 2.0"}
# Keys that exist in one family only: WavLM's gated relative position bias, HuBERT's optional projection norm.
# A config of another family keeps them at their defaults and does not write them.
FAMILY_KEYS = {"wavlm": ("num_buckets", "max_bucket_distance"), "hubert": ("feat_proj_layer_norm",), "wav2vec2": ()}


@dataclass(frozen=True)
class FrontendConfig:
    """Shape and regularisation of a front end of one of the FAMILIES (`model_type`, WavLM by default).

    Field names and defaults are those of `transformers.WavLMConfig` (`HubertConfig`, `Wav2Vec2Config`), so a
    checkpoint's config.json maps onto this class key for key. Only what the front end uses is kept.
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
    num_buckets: int = 320  # WavLM only
    max_bucket_distance: int = 800  # WavLM only
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.1
    feat_proj_dropout: float = 0.0
    layerdrop: float = 0.1
    # last, so that positional construction of the WavLM fields is unchanged
    model_type: str = "wavlm"
    feat_proj_layer_norm: bool = True  # HuBERT only: False drops the LayerNorm before the feature projection

    def __post_init__(self) -> None:
        if self.model_type not in FAMILIES:
            raise ConfigError(f"model_type is {self.model_type!r}; expected one of {', '.join(map(repr, FAMILIES))}")
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
        # another family's keys must keep their defaults: to_dict leaves them out, and from_dict must give
        # back an equal config
        for family, keys in FAMILY_KEYS.items():
            for key in keys if family != self.model_type else ():
                if getattr(self, key) != _DEFAULTS[key]:
                    raise ConfigError(f"{key} is {FAMILY_NAMES[family]}'s; a {self.model_type} front end has no "
                                      f"such setting (got {getattr(self, key)!r})")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def family_name(self) -> str:
        return FAMILY_NAMES[self.model_type]

    @property
    def relative_position_bias(self) -> bool:
        """WavLM's gated relative position bias in every attention block; HuBERT and wav2vec 2.0 have none."""
        return self.model_type == "wavlm"

    def _keys(self) -> list[str]:
        """The fields this family writes and reads: the shared ones and its own."""
        foreign = {k for family, keys in FAMILY_KEYS.items() if family != self.model_type for k in keys}
        return [f.name for f in dataclasses.fields(self) if f.name not in foreign]

    def replace(self, **changes) -> FrontendConfig:
        unknown = set(changes) - set(self._keys())
        if unknown:
            raise ConfigError(f"unknown {self.family_name} config key(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self._keys()}
        d.update(num_feat_extract_layers=len(self.conv_dim))
        for name in ("conv_dim", "conv_kernel", "conv_stride"):
            d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "config.json", families: tuple[str, ...] = FAMILIES) -> FrontendConfig:
        """Read a transformers-style config of one of `families`; `source` names the file in errors.

        A dict without model_type reads as WavLM, the only family hp knew before HuBERT and wav2vec 2.0 (every
        file hp wrote names it anyway; transformers' config.json always does).
        """
        model_type = d.get("model_type", "wavlm")
        if model_type not in families:
            expected = repr(families[0]) if len(families) == 1 else f"one of {', '.join(map(repr, families))}"
            raise ConfigError(f"{source}: model_type is {model_type!r}, expected {expected}")
        name = FAMILY_NAMES[model_type]
        for key in ("hidden_act", "feat_extract_activation"):
            if d.get(key, "gelu") != "gelu":
                raise ConfigError(f"{source}: {key} is {d[key]!r}; only 'gelu' (as in every {name} release) "
                                  "is supported")
        if d.get("add_adapter"):
            raise ConfigError(f"{source}: add_adapter is true; {name} adapters are not supported")
        if d.get("adapter_attn_dim") is not None:  # wav2vec 2.0 (MMS): an adapter after every pre-LN layer
            raise ConfigError(f"{source}: adapter_attn_dim is {d['adapter_attn_dim']!r}; attention adapters "
                              "are not supported")
        if d.get("conv_pos_batch_norm"):  # HuBERT: a BatchNorm, not a weight norm, on the positional conv
            raise ConfigError(f"{source}: conv_pos_batch_norm is true; only the weight-normalised positional "
                              "convolution is supported")
        keys = cls(model_type=model_type)._keys()
        try:
            return cls(**{k: v for k, v in d.items() if k in keys and k != "model_type"}, model_type=model_type)
        except (ConfigError, TypeError, ValueError) as e:  # e.g. a string where a list of ints belongs
            raise ConfigError(f"{source}: {e}") from None


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(FrontendConfig)}


# Shapes for tests and benchmarks. base-plus and large are the released models' shapes (random weights);
# tiny keeps the CNN's strides (20 ms frames) but is small enough for CPU smoke runs, with Base+'s proportions
# where pruning cares: the transformer holds ~90% of the parameters (Base+: 90%), the unprunable positional
# conv ~2% (Base+: 5%), one FFN block ~15%, so that 0.7 sparsity still leaves a transformer.
SHAPES: dict[str, FrontendConfig] = {
    "tiny": FrontendConfig(
        conv_dim=(32,) * 7, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=16, num_buckets=64, max_bucket_distance=128,
    ),
    "base-plus": FrontendConfig(),
    "large": FrontendConfig(
        feat_extract_norm="layer", hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
        intermediate_size=4096, do_stable_layer_norm=True,
    ),
}
