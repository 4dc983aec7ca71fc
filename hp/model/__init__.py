from hp.model.config import FAMILIES, SHAPES, FrontendConfig
from hp.model.frontend import Frontend, compact
from hp.model.gates import UNIT_TYPES, HardConcrete
from hp.model.io import load_compact, load_frontend, load_wavlm, save_compact
from hp.model.structure import LayerStructure, WavLMStructure

# transformers' names, kept at the package's face for users (the code says Frontend, FrontendConfig)
WavLM, WavLMConfig = Frontend, FrontendConfig

__all__ = ["FAMILIES", "SHAPES", "UNIT_TYPES", "Frontend", "FrontendConfig", "HardConcrete", "LayerStructure", "WavLM",
           "WavLMConfig", "WavLMStructure", "compact", "load_compact", "load_frontend", "load_wavlm",
           "save_compact"]
