"""Corpus adapters: ASVspoof5 protocols as distributed -> manifest tables (VoxCeleb: hp.data.voxceleb)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from hp.data.manifest import Validation, read_asvspoof5_protocol


def asvspoof5(protocol: Path, audio_dir: Path, split: str, validation: Validation) -> pd.DataFrame:
    """An ASVspoof5 protocol with its FLAC directory; keeps attack, codec and gender."""
    p = read_asvspoof5_protocol(protocol)
    table = pd.DataFrame({"utt": p["utt"], "path": [str(Path(audio_dir) / f"{u}.flac") for u in p["utt"]],
                          "speaker": p["speaker"], "label": p["key"], "duration_s": 0.0, "sample_rate": 0,
                          "split": split, "attack": p["attack"], "codec": p["codec"], "gender": p["gender"]})
    return validation.check(table, str(protocol))
