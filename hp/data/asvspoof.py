"""ASVspoof as distributed -> CM manifests: ASVspoof5 (track 1) and ASVspoof 2019 LA, train / dev / eval.

The prepare stage records the corpus and its directory in `corpus.json` (the built-in mini corpus is written
in ASVspoof5's layout, so it goes through this module too). The trees, as the release archives unpack:

    ASVspoof5 (<asvspoof5_dir>)                      ASVspoof 2019 LA (<asvspoof2019_dir>, or its LA/)
    ASVspoof5_protocols/ (or the top directory)      LA/ASVspoof2019_LA_cm_protocols/
        ASVspoof5.train.tsv                              ASVspoof2019.LA.cm.train.trn.txt
        ASVspoof5.dev.track_1.tsv                        ASVspoof2019.LA.cm.dev.trl.txt
        ASVspoof5.eval.track_1.tsv                       ASVspoof2019.LA.cm.eval.trl.txt
    flac_T/ flac_D/ flac_E_eval/ <name>.flac         LA/ASVspoof2019_LA_{train,dev,eval}/flac/<name>.flac

Protocols are parsed strictly, as released (space separated, ASVspoof5's despite the .tsv extension): a line
with the wrong number of columns, an unknown KEY, a repeated file name or a file missing from the audio
directory fails with the protocol's path and line number.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from hp.data.manifest import COLUMNS, DataError, Validation
from hp.data.source import CorpusSource

SPLITS = ("train", "dev", "eval")
KEYS = ("bonafide", "spoof")
EXTRA_COLUMNS = ["attack", "codec", "gender"]  # kept in the manifests for per-attack and per-codec results
NONE = "-"  # the protocols' "not applicable" (no codec, no attack, gender not given)


class Format(NamedTuple):
    """One corpus's protocol format and where its files are, relative to the corpus directory."""

    columns: tuple[str, ...]  # the protocol's columns, named as the manifest uses them where it keeps them
    protocol_dirs: tuple[str, ...]  # searched in order
    protocols: dict[str, str]  # split -> protocol file name
    audio_dirs: dict[str, str]  # split -> directory of <name>.flac


FORMATS = {
    "asvspoof5": Format(
        ("speaker", "utt", "gender", "codec", "codec_q", "codec_seed", "attack_tag", "attack", "key", "tmp"),
        ("ASVspoof5_protocols", "."),
        {"train": "ASVspoof5.train.tsv", "dev": "ASVspoof5.dev.track_1.tsv", "eval": "ASVspoof5.eval.track_1.tsv"},
        {"train": "flac_T", "dev": "flac_D", "eval": "flac_E_eval"}),
    "asvspoof2019la": Format(
        ("speaker", "utt", "environment", "attack", "key"),  # SYSTEM_ID: A01-A19, or '-' for bona fide
        ("LA/ASVspoof2019_LA_cm_protocols", "ASVspoof2019_LA_cm_protocols"),
        {"train": "ASVspoof2019.LA.cm.train.trn.txt", "dev": "ASVspoof2019.LA.cm.dev.trl.txt",
         "eval": "ASVspoof2019.LA.cm.eval.trl.txt"},
        {split: f"ASVspoof2019_LA_{split}/flac" for split in SPLITS}),
}
CORPUS_DIRS = {"asvspoof5": "asvspoof5_dir", "asvspoof2019la": "asvspoof2019_dir"}  # params key of each


@dataclass(frozen=True)
class CMSource(CorpusSource):
    """Which ASVspoof corpus and where; relative paths are relative to corpus.json."""

    corpus: str
    corpus_dir: str
    musan_dir: str | None = None
    rirs_dir: str | None = None

    def __post_init__(self):
        if self.corpus not in FORMATS:
            raise ValueError(f"corpus must be one of {list(FORMATS)}, got {self.corpus!r}")

    def files(self) -> dict[str, tuple[Path, Path]]:
        """split -> (protocol, audio directory); a missing one fails naming what was looked for."""
        fmt, root = FORMATS[self.corpus], Path(self.corpus_dir)
        if not root.is_dir():
            raise DataError(f"{root}: {CORPUS_DIRS[self.corpus]} is not a directory")
        out = {}
        for split in SPLITS:
            candidates = [root / d / fmt.protocols[split] for d in fmt.protocol_dirs]
            protocol = next((p for p in candidates if p.is_file()), None)
            if protocol is None:
                raise DataError(f"{root}: no {fmt.protocols[split]} (looked in "
                                f"{', '.join(str(p.parent) for p in candidates)})")
            # ASVspoof 2019's audio sits beside its protocol directory (in LA/, or at the top if that is LA/)
            base = protocol.parent.parent if self.corpus == "asvspoof2019la" else root
            audio = base / fmt.audio_dirs[split]
            if not audio.is_dir():
                raise DataError(f"{audio}: the {split} audio directory is missing (unpack the release's archives "
                                f"into {root})")
            out[split] = (protocol, audio)
        return out

    def check_paths(self) -> None:
        self.files()
        self.check_augmentation_dirs()


def read_protocol(path: Path, corpus: str) -> pd.DataFrame:
    """A CM protocol as released, strictly: every column named in FORMATS, one row per line; blank lines are
    skipped."""
    columns = FORMATS[corpus].columns
    rows, seen = [], {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        cols = line.split()
        if not cols:
            continue
        if len(cols) != len(columns):
            raise DataError(f"{path}:{n}: expected {len(columns)} space-separated columns, got {len(cols)}")
        row = dict(zip(columns, cols))
        if row["key"] not in KEYS:
            raise DataError(f"{path}:{n}: KEY is {row['key']!r}, expected 'bonafide' or 'spoof'")
        if row["utt"] in seen:
            raise DataError(f"{path}:{n}: {row['utt']} is listed twice (first at line {seen[row['utt']]})")
        seen[row["utt"]] = n
        rows.append(cols + [n])
    if not rows:
        raise DataError(f"{path}: empty protocol")
    return pd.DataFrame(rows, columns=[*columns, "line"])  # line: its number in the file, for errors naming it


def protocol_table(protocol: Path, audio_dir: Path, corpus: str, split: str, validation: Validation) -> pd.DataFrame:
    """A protocol with its FLAC directory as a manifest (COLUMNS + attack, codec, gender)."""
    p = read_protocol(protocol, corpus)
    with os.scandir(audio_dir) as entries:  # one listing, not a stat per file: eval has 680k of them
        present = {e.name for e in entries}
    missing = ~(p["utt"] + ".flac").isin(present)
    if missing.any():
        first = p[missing].iloc[0]
        raise DataError(f"{protocol}:{first['line']}: {audio_dir / (first['utt'] + '.flac')} not found "
                        f"({int(missing.sum())} of the protocol's {len(p)} files are missing)")
    table = pd.DataFrame({"utt": p["utt"], "path": [str(audio_dir / f"{u}.flac") for u in p["utt"]],
                          "speaker": p["speaker"], "label": p["key"], "duration_s": 0.0, "sample_rate": 0,
                          "split": split, "attack": p["attack"],
                          "codec": p["codec"] if "codec" in p else NONE,
                          "gender": p["gender"] if "gender" in p else NONE})
    checked = validation.check(table[COLUMNS + EXTRA_COLUMNS], str(protocol))
    validation.count(split, len(table), len(checked))
    return checked


def cm_tables(source: CMSource, validation: Validation) -> dict[str, pd.DataFrame]:
    """train, dev and eval manifests; each split needs both classes (dev fits the calibration)."""
    tables = {}
    for split, (protocol, audio) in source.files().items():
        table = protocol_table(protocol, audio, source.corpus, split, validation)
        absent = [key for key in KEYS if not (table["label"] == key).any()]
        if absent:
            raise DataError(f"{protocol}: no {absent[0]} utterances left; {split} needs both classes")
        tables[split] = table
    return tables
