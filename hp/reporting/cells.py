"""How the report writes names and numbers: corpus names, error rates and DCFs with their 95 % intervals, and the
note on what the brackets are."""
from __future__ import annotations

from hp.reporting.document import Document

CORPUS_NAMES = {"mini": "built-in mini corpus", "voxceleb": "VoxCeleb", "asvspoof5": "ASVspoof5 track 1",
                "asvspoof2019la": "ASVspoof 2019 LA"}


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def dcf(x: float) -> str:
    return f"{x:.4f}"


def interval_note(doc: Document, r: dict, more: str = "") -> None:
    """What the brackets are, where the score stage bootstrapped; `more`: a sentence on what has none."""
    b = r.get("bootstrap")
    if b is None:
        return
    speakers = ", ".join(f"{name}: {n}" for name, n in b["speakers"].items())
    doc.paragraph(f"Brackets: the {b['confidence']:.0%} {b['interval']} interval over {b['resamples']:,} resamples of "
                  f"the test speakers ({speakers}; seed {b['seed']}), each trial or utterance counted once per copy "
                  "of its speakers (`hp/evaluation/bootstrap.py`). Speakers, not trials, are resampled: trials "
                  "sharing a speaker err together." + more)


def ci(m: dict, name: str, fmt=pct) -> str:
    """`m[name]` formatted by `fmt`, with its 95 % interval where the score stage bootstrapped it
    (hp.evaluation.bootstrap): "17.90 [15.21, 20.84]"."""
    bounds = m.get(f"{name}_ci95")
    return fmt(m[name]) if bounds is None else f"{fmt(m[name])} [{fmt(bounds['lo'])}, {fmt(bounds['hi'])}]"
