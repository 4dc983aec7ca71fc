"""Manifests: one Parquet table per task and split, checked against the audio on the way in.

Columns: utt, path, speaker, label, duration_s, sample_rate, split (+ corpus-specific extras such as
attack or gender). SV labels are speaker ids; CM labels are 'bonafide' / 'spoof'. Trials (SV) are a table
of label (1 target / 0 non-target), enroll, test (utt ids).
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import soundfile as sf

from hp.data.audio import SAMPLE_RATE
from hp.errors import HPError
from hp.utils.files import atomic_path

COLUMNS = ["utt", "path", "speaker", "label", "duration_s", "sample_rate", "split"]


class DataError(HPError, ValueError):
    """A corpus, list or protocol file does not hold what it should."""


# ---- trial lists as distributed (CM protocols: hp.data.asvspoof) ----------------------------------
TRIAL_LINE = re.compile(r"^([01]) (\S+) (\S+)$")


def read_trials(path: Path) -> pd.DataFrame:
    """A VoxCeleb trial list (`<1|0> <enroll> <test>` per line), strictly: a bad line fails with its number."""
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        m = TRIAL_LINE.match(line.strip())
        if not m:
            raise DataError(f"{path}:{n}: expected '<1|0> <enroll> <test>', got {line.strip()!r}")
        rows.append((int(m[1]), m[2], m[3]))
    if not rows:
        raise DataError(f"{path}: no trials")
    return pd.DataFrame(rows, columns=["label", "enroll", "test"])


# ---- validation ---------------------------------------------------------------------------------------
@dataclass
class Validation:
    """What checking the audio found; `drop_invalid` decides whether it is an error or a summary."""

    min_seconds: float = 0.5
    drop_invalid: bool = False
    threads: int = 8
    dropped: list[tuple[str, str]] = field(default_factory=list)

    def check(self, table: pd.DataFrame, source: str) -> pd.DataFrame:
        """Fill duration_s / sample_rate from the files; raise on (or drop) unreadable, wrong-rate, short audio."""
        durations, rates, problems = [], [], []
        # reading headers is I/O-bound (libsndfile releases the GIL): threads make VoxCeleb's 1M files minutes
        with ThreadPoolExecutor(self.threads) as pool:
            for path, (info, error) in zip(table["path"], pool.map(_info, table["path"], chunksize=256)):
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


def _info(path: str):
    try:
        return sf.info(path), None
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        return None, e


def write_parquet(table: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)
