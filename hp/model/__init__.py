from hp.model.config import FAMILIES, SHAPES, FrontendConfig, WavLMConfig
from hp.model.gates import UNIT_TYPES, HardConcrete
from hp.model.io import load_compact, load_frontend, load_wavlm, save_compact
from hp.model.structure import LayerStructure, WavLMStructure
from hp.model.wavlm import Frontend, WavLM, compact

__all__ = ["FAMILIES", "SHAPES", "UNIT_TYPES", "Frontend", "FrontendConfig", "HardConcrete", "LayerStructure", "WavLM",
           "WavLMConfig", "WavLMStructure", "compact", "load_compact", "load_frontend", "load_wavlm",
           "save_compact"]
