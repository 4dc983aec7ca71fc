"""hp: in-situ hybrid structured pruning of WavLM for speaker verification and anti-spoofing."""
from hp.model import (SHAPES, UNIT_TYPES, HardConcrete, LayerStructure, WavLM, WavLMConfig, WavLMStructure, compact,
                      load_compact, load_wavlm)
from hp.sparsity import SparsityController, param_groups

__all__ = ["SHAPES", "UNIT_TYPES", "HardConcrete", "LayerStructure", "SparsityController", "WavLM", "WavLMConfig",
           "WavLMStructure", "compact", "load_compact", "load_wavlm", "param_groups"]
