"""The pruned architecture as a value: what compaction produces, what a compact model is rebuilt from."""
from __future__ import annotations

from dataclasses import dataclass

from hp.errors import ConfigError
from hp.model.config import FrontendConfig


@dataclass(frozen=True)
class LayerStructure:
    heads: tuple[int, ...]  # kept heads, by their original index (the relative-position bias is per head)
    ffn_dim: int  # kept FFN units

    @property
    def use_attention(self) -> bool:
        return len(self.heads) > 0

    @property
    def use_ffn(self) -> bool:
        return self.ffn_dim > 0


@dataclass(frozen=True)
class WavLMStructure:
    conv_channels: tuple[int, ...]  # kept output channels per CNN layer
    layers: tuple[LayerStructure, ...]

    @classmethod
    def dense(cls, config: FrontendConfig) -> WavLMStructure:
        layer = LayerStructure(tuple(range(config.num_attention_heads)), config.intermediate_size)
        return cls(tuple(config.conv_dim), (layer,) * config.num_hidden_layers)

    def validate(self, config: FrontendConfig, source: str = "structure") -> None:
        if len(self.conv_channels) != len(config.conv_dim):
            raise ConfigError(f"{source}: {len(self.conv_channels)} CNN layers, config has {len(config.conv_dim)}")
        for i, (c, full) in enumerate(zip(self.conv_channels, config.conv_dim)):
            if not 1 <= c <= full:
                raise ConfigError(f"{source}: conv_channels[{i}] = {c}, must be in 1..{full}")
        if len(self.layers) != config.num_hidden_layers:
            raise ConfigError(f"{source}: {len(self.layers)} layers, config has {config.num_hidden_layers}")
        for i, layer in enumerate(self.layers):
            h = config.num_attention_heads
            if len(set(layer.heads)) != len(layer.heads) or any(not 0 <= j < h for j in layer.heads):
                raise ConfigError(f"{source}: layers[{i}].heads = {list(layer.heads)} must be distinct, in 0..{h - 1}")
            if not 0 <= layer.ffn_dim <= config.intermediate_size:
                raise ConfigError(f"{source}: layers[{i}].ffn_dim = {layer.ffn_dim}, must be in "
                                  f"0..{config.intermediate_size}")

    def to_dict(self) -> dict:
        return {
            "conv_channels": list(self.conv_channels),
            "layers": [
                {"heads": list(l.heads), "ffn_dim": l.ffn_dim, "use_attention": l.use_attention, "use_ffn": l.use_ffn}
                for l in self.layers
            ],
        }

    @classmethod
    def from_dict(cls, d: dict, source: str = "structure.json") -> WavLMStructure:
        try:
            layers = tuple(LayerStructure(tuple(int(h) for h in l["heads"]), int(l["ffn_dim"])) for l in d["layers"])
            structure = cls(tuple(int(c) for c in d["conv_channels"]), layers)
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{source}: malformed structure ({type(e).__name__}: {e})") from None
        for i, (raw, layer) in enumerate(zip(d["layers"], layers)):  # the derived flags, if written, must agree
            for flag in ("use_attention", "use_ffn"):
                if flag in raw and raw[flag] != getattr(layer, flag):
                    raise ConfigError(f"{source}: layers[{i}].{flag} = {raw[flag]} contradicts its heads/ffn_dim")
        return structure
