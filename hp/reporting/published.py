"""The authors' published results, to set beside hp's when a run is on their data and front end.

Numbers as the authors' own files give them (recipes/AUTHORS.md lists the sources); EER in %. The pruning
ratios of their per-ratio series are the fraction of parameters removed; their parameter counts include MHFA.
"""
from __future__ import annotations

from dataclasses import dataclass

from hp.model.config import SHAPES

SV_SOURCE = "JunyiPeng00/wespeaker_hubert, wespeaker/frontend/plt_vox3.py (commit 6f09f20)"
CM_SOURCE = "JunyiPeng00/wespeaker_hubert, wespeaker/frontend/plt_asv5.py (commit 6f09f20)"
CM_SYSTEM_SOURCE = "zlin0/wedefense, egs/detection/asvspoof5/v15_ssl_mhfa_pruning/README.md"
RATIOS = tuple(round(0.1 * i, 1) for i in range(10))
SV_FRONT_ENDS = {"base-plus": "WavLM Base+", "large": "WavLM Large"}

# front-end shape -> trial list -> EER (%) per ratio in RATIOS; and the parameters (M) per ratio
SV_EER = {
    "base-plus": {"O": (0.761, 0.702, 0.739, 0.675, 0.745, 0.760, 0.771, 0.803, 1.005, 1.596),
                  "E": (0.753, 0.793, 0.799, 0.791, 0.824, 0.824, 0.851, 0.913, 1.109, 1.785),
                  "H": (1.512, 1.561, 1.572, 1.538, 1.613, 1.592, 1.639, 1.757, 2.071, 3.028)},
    "large": {"O": (0.633, 0.718, 0.686, 0.702, 1.154, 1.319, 1.489, 2.032, 2.447, 7.435),
              "E": (0.654, 0.664, 0.661, 0.716, 1.235, 1.358, 1.554, 2.104, 2.394, 7.091),
              "H": (1.348, 1.353, 1.349, 1.424, 2.542, 2.754, 3.107, 4.051, 4.026, 10.143)},
}
SV_PARAMS_M = {"base-plus": (95.63, 86.25, 76.74, 67.25, 57.92, 48.44, 39.01, 29.57, 20.13, 10.55),
               "large": (316.87, 286.38, 254.70, 223.01, 191.32, 159.63, 127.95, 96.26, 64.57, 32.89)}
# ASVspoof5 with WavLM Base: the curve their plot labels "Proposed" (its variables are named as a WavLM Base
# baseline, so the label is ambiguous); None where the plot has no point
CM_EER = {"dev": (2.394, 2.738, 3.293, 3.463, 4.726, 4.248, None, 15.628, None, 25.569),
          "eval": (4.566, 3.758, 4.829, 5.657, 6.049, 8.746, 11.456, 21.135, 24.291, 28.64)}
# their README's "HP single system" (no pruning ratio stated)
CM_SYSTEM = {"dev": {"eer": 1.547, "min_dcf": 0.0395}, "eval": {"eer": 3.758, "min_dcf": 0.1028}}
# the structure of a checkpoint that decides which of their series applies (dropout and the like do not); the
# family first: a HuBERT or wav2vec 2.0 Base has Base+'s shape but none of their WavLM results
SHAPE_KEYS = ("model_type", "conv_dim", "conv_kernel", "conv_stride", "feat_extract_norm", "hidden_size",
              "num_hidden_layers", "num_attention_heads", "intermediate_size", "do_stable_layer_norm")


def shape_of(frontend: dict) -> str | None:
    """'base-plus' or 'large' when a front end's config (config.json / task.json's "frontend") has that shape
    (WavLM Base has Base+'s), else None."""
    frontend = {"model_type": "wavlm", **frontend}  # as FrontendConfig.from_dict reads a dict without one
    for name in ("base-plus", "large"):
        shape = SHAPES[name].to_dict()
        if all(_same(frontend.get(k), shape[k]) for k in SHAPE_KEYS):
            return name
    return None


def _same(a, b) -> bool:
    return list(a) == list(b) if isinstance(b, list) and isinstance(a, (list, tuple)) else a == b


def nearest_ratio(target: float) -> float:
    """Their ratio closest to `target` (ties to the lower one)."""
    return min(RATIOS, key=lambda r: (abs(r - target), r))


@dataclass(frozen=True)
class Anchor:
    """Their result at one ratio: EER (%) per trial list or split, of which front end, and where it comes from."""
    ratio: float
    eer: dict[str, float]
    front_end: str
    source: str
    params_m: float | None = None


def sv_anchor(frontend: dict, target: float, lists: list[str]) -> Anchor | None:
    """Their SV EER on `lists` at the ratio nearest `target`, for a Base+ or Large front end; None otherwise."""
    shape = shape_of(frontend)
    if shape is None:
        return None
    i = RATIOS.index(nearest_ratio(target))
    eer = {name: SV_EER[shape][name][i] for name in lists if name in SV_EER[shape]}
    return Anchor(RATIOS[i], eer, SV_FRONT_ENDS[shape], SV_SOURCE, SV_PARAMS_M[shape][i]) if eer else None


def cm_anchor(target: float, splits: list[str]) -> Anchor | None:
    """Their ASVspoof5 EER on `splits` at the ratio nearest `target` (a split without a point there is left
    out; None if none is left)."""
    i = RATIOS.index(nearest_ratio(target))
    eer = {s: CM_EER[s][i] for s in splits if s in CM_EER and CM_EER[s][i] is not None}
    return Anchor(RATIOS[i], eer, "WavLM Base", CM_SOURCE) if eer else None
