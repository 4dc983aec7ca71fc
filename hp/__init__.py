"""hp: in-situ hybrid structured pruning of WavLM for speaker verification and anti-spoofing.

The top-level names load on first use (PEP 562), so that importing one submodule (hp.data.synth, say) does not
import the model and its torch stack: each DVC stage then imports, and depends on, only the code it runs."""
from importlib import import_module

_EXPORTS = {
    **dict.fromkeys(["FAMILIES", "SHAPES", "UNIT_TYPES", "Frontend", "FrontendConfig", "HardConcrete", "LayerStructure",
                     "WavLM", "WavLMConfig", "WavLMStructure", "compact", "load_compact", "load_frontend",
                     "load_wavlm", "save_compact"], "hp.model"),
    **dict.fromkeys(["SparsityController", "param_groups"], "hp.training.sparsity"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hp' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
