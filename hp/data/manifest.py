"""Manifests: one Parquet table per task and split, checked against the audio on the way in.

Columns: utt, path, speaker, label, duration_s, sample_rate, split (+ corpus-specific extras such as
attack or gender). SV labels are speaker ids; CM labels are 'bonafide' / 'spoof'. Trials (SV) are a table
of label (1 target / 0 non-target), enroll, test (utt ids).
"""
from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import soundfile as sf

from hp.data.audio import READ_ERRORS, SAMPLE_RATE
from hp.errors import DataError
from hp.utils.files import atomic_path

# DataError moved to hp.errors; it is still importable from here, where it was first
__all__ = ["COLUMNS", "DataError", "Validation", "read_trials", "shrunk_lists", "write_parquet"]

COLUMNS = ["utt", "path", "speaker", "label", "duration_s", "sample_rate", "split"]
DECODE_BLOCK = 1 << 18  # frames per read when decoding a whole file (16 s at 16 kHz): memory stays bounded

# ---- trial lists as distributed (CM protocols: hp.data.asvspoof) ----------------------------------
TRIAL_LINE = re.compile(r"^([01]) (\S+) (\S+)$")


def read_trials(path: Path) -> pd.DataFrame:
    """A VoxCeleb trial list (`<1|0> <enroll> <test>` per line), strictly: a bad line fails with its number; blank
    lines (a trailing newline too many) are skipped. Columns label, enroll, test and line (its number in the
    file)."""
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        m = TRIAL_LINE.match(line.strip())
        if not m:
            raise DataError(f"{path}:{n}: expected '<1|0> <enroll> <test>', got {line.strip()!r}")
        rows.append((int(m[1]), m[2], m[3], n))
    if not rows:
        raise DataError(f"{path}: no trials")
    return pd.DataFrame(rows, columns=["label", "enroll", "test", "line"])  # line: for errors naming it


# ---- validation ---------------------------------------------------------------------------------------
@dataclass
class Validation:
    """What checking the audio found; `drop_invalid` decides whether it is an error or a summary.

    `decode`: every file is decoded to its end, so that a file cut mid-stream (a FLAC's header still says its
    full length) fails here, naming it, and not hours into training or scoring; otherwise headers only."""

    min_seconds: float = 0.5
    drop_invalid: bool = False
    decode: bool = True
    threads: int | None = None  # None: one per core to decode (CPU-bound), 8 for headers (I/O-bound)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    # official list (trial list, protocol) -> how many of its entries it lists and how many are kept: with
    # drop_invalid an official list shrinks, and results on it are no longer the official list's
    kept: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, name: str, listed: int, kept: int) -> None:
        self.kept[name] = {"listed": listed, "kept": kept}

    def check(self, table: pd.DataFrame, source: str) -> pd.DataFrame:
        """Fill duration_s / sample_rate from the files; raise on (or drop) unreadable, truncated, wrong-rate and
        short audio."""
        durations, rates, problems = [], [], []
        # libsndfile runs without the GIL (cffi releases it), so threads read headers or decode in parallel
        threads = self.threads or ((os.cpu_count() or 1) if self.decode else 8)
        with ThreadPoolExecutor(threads) as pool:
            for path, (info, error) in zip(table["path"], pool.map(_decode if self.decode else _info, table["path"],
                                                                   chunksize=64)):
                durations.append(info.frames / info.samplerate if info else float("nan"))
                rates.append(info.samplerate if info else 0)
                if error is not None:
                    problems.append((path, "missing" if not Path(path).exists() else f"unreadable ({error})"))
                elif info.samplerate != SAMPLE_RATE:
                    problems.append((path, f"sample rate {info.samplerate} Hz, expected {SAMPLE_RATE}"))
                elif info.channels != 1:
                    problems.append((path, f"{info.channels} channels, expected mono"))
                elif durations[-1] < self.min_seconds:
                    problems.append((path, f"{durations[-1]:.2f} s, shorter than {self.min_seconds} s"))
        table = table.assign(duration_s=durations, sample_rate=rates)
        if problems and not self.drop_invalid:
            shown = "; ".join(f"{p}: {why}" for p, why in problems[:5])
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise DataError(f"{source}: {len(problems)} bad audio file(s): {shown}{more}")
        self.dropped.extend(problems)
        bad = {p for p, _ in problems}
        return table[~table["path"].isin(bad)].reset_index(drop=True)


def shrunk_lists(kept: dict[str, dict[str, int]]) -> list[str]:
    """`<list>: K of N kept, M lost` for each official list (summary.json's `kept`) that drop_invalid shrank."""
    return [f"{name}: {c['kept']:,} of {c['listed']:,} kept, {c['listed'] - c['kept']:,} lost"
            for name, c in kept.items() if c["kept"] < c["listed"]]


def _info(path: str):
    try:
        return sf.info(path), None
    except READ_ERRORS as e:
        return None, e


def _decode(path: str):
    """The header (the closed file keeps frames, samplerate, channels), once the whole file has decoded to as many
    frames as it says it holds."""
    try:
        with sf.SoundFile(path) as f:
            decoded = 0
            while block := len(f.read(DECODE_BLOCK, dtype="int16")):
                decoded += block
            if decoded != f.frames:
                return None, f"decodes to {decoded} of the {f.frames} frames its header gives"
        return f, None
    except READ_ERRORS as e:
        return None, e


def write_parquet(table: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)
