"""Corpus adapters: trees and protocols as distributed -> manifest tables (see hp.data.manifest)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from hp.data.manifest import COLUMNS, DataError, Validation, read_asvspoof5_protocol, read_trials


def voxceleb_tree(wav_dir: Path, split: str, validation: Validation) -> pd.DataFrame:
    """`<wav_dir>/<speaker>/<video>/<NNNNN>.wav` (VoxCeleb1/2 as wav); utt ids are the relative paths."""
    wav_dir = Path(wav_dir)
    files = sorted(wav_dir.glob("*/*/*.wav"))
    if not files:
        raise DataError(f"{wav_dir}: no <speaker>/<video>/<utt>.wav files")
    utts = [f.relative_to(wav_dir).as_posix() for f in files]
    speakers = [u.split("/", 1)[0] for u in utts]
    table = pd.DataFrame({"utt": utts, "path": [str(f) for f in files], "speaker": speakers, "label": speakers,
                          "duration_s": 0.0, "sample_rate": 0, "split": split})
    return validation.check(table[COLUMNS], str(wav_dir))


def trials_table(trials_path: Path, test: pd.DataFrame) -> pd.DataFrame:
    """Parse a trial list and check that every utterance it names is in the test manifest."""
    trials = read_trials(trials_path)
    known = set(test["utt"])
    for column in ("enroll", "test"):
        missing = ~trials[column].isin(known)
        if missing.any():
            line = int(missing.to_numpy().argmax()) + 1
            raise DataError(f"{trials_path}:{line}: {trials[column][line - 1]!r} is not an available test utterance")
    return trials


def asvspoof5(protocol: Path, audio_dir: Path, split: str, validation: Validation) -> pd.DataFrame:
    """An ASVspoof5 protocol with its FLAC directory; keeps attack, codec and gender."""
    p = read_asvspoof5_protocol(protocol)
    table = pd.DataFrame({"utt": p["utt"], "path": [str(Path(audio_dir) / f"{u}.flac") for u in p["utt"]],
                          "speaker": p["speaker"], "label": p["key"], "duration_s": 0.0, "sample_rate": 0,
                          "split": split, "attack": p["attack"], "codec": p["codec"], "gender": p["gender"]})
    return validation.check(table, str(protocol))
