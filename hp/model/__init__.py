from hp.model.config import SHAPES, WavLMConfig
from hp.model.gates import UNIT_TYPES, HardConcrete
from hp.model.io import load_compact, load_wavlm
from hp.model.structure import LayerStructure, WavLMStructure
from hp.model.wavlm import WavLM, compact

__all__ = ["SHAPES", "UNIT_TYPES", "HardConcrete", "LayerStructure", "WavLM", "WavLMConfig", "WavLMStructure",
           "compact", "load_compact", "load_wavlm"]
