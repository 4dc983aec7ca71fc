"""The provenance record hp's pretraining leaves beside a checkpoint, and what reports read from it. Apart from
hp.training.pretraining, so that its readers (the report stage) import neither the recipe nor the synthesiser."""
from __future__ import annotations

import json
from pathlib import Path

PROVENANCE = "hp_pretraining.json"  # beside config.json: says the checkpoint is hp's own (reports label it)


def provenance(record: dict) -> dict:
    """What the checkpoint directory says about itself: the recipe and the corpus, not the curves."""
    kept = ("config", "utterances", "hours", "train_seconds", "held_out", "last")
    return {"made_by": "hp.training.pretraining", **{k: record[k] for k in kept}}


def is_hp_pretrained(source: str | Path) -> bool:
    return (Path(source) / PROVENANCE).is_file()


def pretraining_summary(directory: Path, name: str) -> str:
    """One sentence on how well hp's own front end in `directory` (shown as `name`) learned, from its PROVENANCE
    (checkpoints made before the held-out evaluation say only how long they trained)."""
    record = json.loads((directory / PROVENANCE).read_text())
    cfg, held = record["config"], record.get("held_out")
    made = (f"`{name}`: {cfg['steps']:,} steps on {record['hours']:.1f} h of {cfg['speakers']} speakers "
            f"({record['train_seconds'] / 60:.0f} min)")
    if held is None:
        return made + "."
    return (f"{made}; on {held['utterances']} utterances of {cfg['held_out_speakers']} speakers it never heard, it "
            f"names a masked frame's cluster {held['masked_accuracy']:.1%} of the time (always the most frequent "
            f"cluster: {held['majority_accuracy']:.1%}), at a cross-entropy of {held['masked_loss']:.2f} nats "
            f"against the targets' entropy of {held['chance_loss']:.2f}.")
