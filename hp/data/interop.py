"""Files other toolkits read: Kaldi data directories, WeSpeaker trial score files, ASVspoof5 score files."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd

from hp.data.manifest import DataError
from hp.utils.files import atomic_dir, atomic_path

_WHITESPACE = re.compile(r"\s")


def _no_whitespace(values: pd.Series, what: str) -> None:
    bad = values[values.astype(str).str.contains(_WHITESPACE)]
    if len(bad):
        raise DataError(f"{what} {bad.iloc[0]!r} contains whitespace, which Kaldi-style files cannot hold")


def write_kaldi_dir(table: pd.DataFrame, directory: str | Path) -> None:
    """wav.scp, utt2spk and spk2utt of a manifest, sorted as Kaldi's validate_data_dir.sh expects.

    Utterance ids must begin with the speaker id (true of VoxCeleb-relative paths) for the two sort orders
    to agree; that is checked.
    """
    for column in ("utt", "path", "speaker"):
        _no_whitespace(table[column], column)
    rows = table.sort_values("utt", kind="stable")
    if not rows["speaker"].is_monotonic_increasing:
        raise DataError("utterance ids must start with their speaker id so that utt2spk sorts by speaker too")
    with atomic_dir(directory) as tmp:
        (tmp / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p in zip(rows["utt"], rows["path"])))
        (tmp / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in zip(rows["utt"], rows["speaker"])))
        (tmp / "spk2utt").write_text("".join(f"{s} {' '.join(g['utt'])}\n"
                                             for s, g in rows.groupby("speaker", sort=True)))


def write_trial_scores(trials: pd.DataFrame, scores: np.ndarray, path: str | Path) -> None:
    """WeSpeaker-style score file: `<enroll> <test> <score> <target|nontarget>` per trial."""
    if len(scores) != len(trials):
        raise ValueError(f"{len(scores)} scores for {len(trials)} trials")
    kind = np.where(trials["label"].to_numpy() == 1, "target", "nontarget")
    rows = pd.DataFrame({"enroll": trials["enroll"].to_numpy(), "test": trials["test"].to_numpy(), "score": scores,
                         "kind": kind})
    with atomic_path(path) as tmp:  # pandas' writer: no Python loop over a million trials
        rows.to_csv(tmp, sep=" ", header=False, index=False, float_format="%.6f", lineterminator="\n",
                    quoting=csv.QUOTE_NONE)


def read_trial_scores(path: str | Path) -> pd.DataFrame:
    """A WeSpeaker-style score file back as (enroll, test, score, label), strictly."""
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        cols = line.split()
        if len(cols) != 4 or cols[3] not in ("target", "nontarget"):
            raise DataError(f"{path}:{n}: expected '<enroll> <test> <score> <target|nontarget>', got {line!r}")
        try:
            score = float(cols[2])
        except ValueError:
            raise DataError(f"{path}:{n}: score {cols[2]!r} is not a number") from None
        rows.append((cols[0], cols[1], score, int(cols[3] == "target")))
    return pd.DataFrame(rows, columns=["enroll", "test", "score", "label"])


def write_cm_scores(utts: pd.Series, scores: np.ndarray, path: str | Path) -> None:
    """The ASVspoof5 evaluation package's input: a `filename\\tcm-score` header, then one row per file."""
    if len(scores) != len(utts):
        raise ValueError(f"{len(scores)} scores for {len(utts)} files")
    _no_whitespace(utts, "file name")
    with atomic_path(path) as tmp:
        tmp.write_text("filename\tcm-score\n" + "".join(f"{u}\t{s:.6f}\n" for u, s in zip(utts, scores)))
