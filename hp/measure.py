"""What a sparsity is a fraction of: the front end's parameters (the paper's measure) or its compute."""
from __future__ import annotations

import math
from dataclasses import dataclass


MEASURES = ("params", "macs")
SAMPLE_RATE = 16000  # every family's input rate (hp.data.audio resamples to it)


def prunes(target_sparsity: float) -> bool:
    """Whether a run prunes: the one place that decides what target_sparsity 0 means. At 0 the dense front end is
    fine-tuned plainly (no gates, no Lagrangian, nothing to compact): the sweep's dense point, which every pruned
    run is compared with on the same trials."""
    return target_sparsity > 0


@dataclass(frozen=True)
class Measure:
    """`params`: the front end's parameters. `macs`: the multiply-accumulates of its forward over one utterance of
    `seconds` (batch 1) as hp.utils.profiling.count_macs counts them: convolutions, matmuls and attention. Compute
    depends on the length (attention's scores grow with its square), hence the reference length."""

    name: str = "params"
    seconds: float = 4.0

    def __post_init__(self):
        if self.name not in MEASURES:
            raise ValueError(f"target_measure must be one of {', '.join(MEASURES)}, got {self.name!r}")
        s = self.seconds
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s < math.inf:
            raise ValueError(f"macs_reference_seconds must be a positive number, got {s!r}")
        object.__setattr__(self, "seconds", float(s))

    @property
    def samples(self) -> int:
        return round(self.seconds * SAMPLE_RATE)


PARAMS = Measure("params")
