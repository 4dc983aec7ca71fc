"""Manifests: one Parquet table per task and split, checked against the audio on the way in.

Columns: utt, path, speaker, label, duration_s, sample_rate, split (+ corpus-specific extras such as
attack or gender). SV labels are speaker ids; CM labels are 'bonafide' / 'spoof'. Trials (SV) are a table
of label (1 target / 0 non-target), enroll, test (utt ids).
"""
from __future__ import annotations

import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from hp.data.audio import READ_ERRORS, SAMPLE_RATE
from hp.errors import DataError
from hp.utils.files import atomic_path
from hp.utils.progress import Progress, stage_name

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
    processes: int | None = None  # None: one per core (fewer for a small table: a process costs ~0.3 s to start)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    # official list (trial list, protocol) -> how many of its entries it lists and how many are kept: with
    # drop_invalid an official list shrinks, and results on it are no longer the official list's
    kept: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, name: str, listed: int, kept: int) -> None:
        self.kept[name] = {"listed": listed, "kept": kept}

    def check(self, table: pd.DataFrame, source: str) -> pd.DataFrame:
        """Fill duration_s / sample_rate from the files; raise on (or drop) unreadable, truncated, wrong-rate and
        short audio."""
        paths = table["path"].tolist()
        frames, rates, channels, errors = probe_files(paths, self.decode, self.processes)
        durations = np.where(rates > 0, frames / np.maximum(rates, 1), np.nan)
        failed = np.array([e is not None for e in errors], dtype=bool)
        reasons = {}  # row -> why, the first check each bad file fails
        for i in np.flatnonzero(failed):
            reasons[i] = "missing" if not Path(paths[i]).exists() else f"unreadable ({errors[i]})"
        checks = ((rates != SAMPLE_RATE, lambda i: f"sample rate {rates[i]} Hz, expected {SAMPLE_RATE}"),
                  (channels != 1, lambda i: f"{channels[i]} channels, expected mono"),
                  (durations < self.min_seconds, lambda i: f"{durations[i]:.2f} s, shorter than {self.min_seconds} s"))
        for rows, why in checks:
            for i in np.flatnonzero(rows & ~failed):
                reasons.setdefault(i, why(i))
        problems = [(paths[i], reasons[i]) for i in sorted(reasons)]
        table = table.assign(duration_s=durations, sample_rate=rates)
        if problems and not self.drop_invalid:
            shown = "; ".join(f"{p}: {why}" for p, why in problems[:5])
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise DataError(f"{source}: {len(problems)} bad audio file(s): {shown}{more}")
        self.dropped.extend(problems)
        keep = np.ones(len(table), dtype=bool)
        keep[sorted(reasons)] = False
        return table[keep].reset_index(drop=True)


SERIAL_FILES = 2048  # fewer files are probed in this process: starting processes would cost more


def probe_files(paths: list[str], decode: bool, processes: int | None = None):
    """(frames, sample rates, channels, errors) of each file, arrays in `paths`' order (error None: readable; 0s
    where not). Chunks of files go to processes, not threads: opening a file costs more Python than decoding a
    short one does C, and threads would share one interpreter lock (measured on 2 cores, 0.12 s WAV files: 7,000
    files/s in 2 threads, 20,000 in one, 37,000 in 2 processes)."""
    workers = 1 if len(paths) < SERIAL_FILES else processes or len(os.sched_getaffinity(0))
    size = max(64, min(1024, -(-len(paths) // (8 * workers))))  # ~8 chunks per process: an even finish
    chunks = [paths[i:i + size] for i in range(0, len(paths), size)]
    probe = partial(_probe_chunk, decode=decode)
    what = "decoded" if decode else "headers read"
    with (Progress(stage_name(f"audio check ({what})"), len(paths), unit="file", item="file") as progress,
          ExitStack() as stack):
        # fork, as DataLoader workers: spawn would rerun the stage script (python -m stages.<name>) in each child; a
        # child only calls libsndfile, so nothing a parent thread may hold is touched
        pool = None if workers <= 1 else stack.enter_context(
            ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")))
        results = []
        for chunk in map(probe, chunks) if pool is None else pool.map(probe, chunks):  # in order, as each finishes
            results.append(chunk)
            progress.update(len(chunk))
    rows = [row for chunk in results for row in chunk]
    frames, rates, channels = (np.array([r[k] for r in rows], dtype=np.int64) for k in range(3))
    return frames, rates, channels, [r[3] for r in rows]


def shrunk_lists(kept: dict[str, dict[str, int]]) -> list[str]:
    """`<list>: K of N kept, M lost` for each official list (summary.json's `kept`) that drop_invalid shrank."""
    return [f"{name}: {c['kept']:,} of {c['listed']:,} kept, {c['listed'] - c['kept']:,} lost"
            for name, c in kept.items() if c["kept"] < c["listed"]]


def _probe_chunk(paths: list[str], decode: bool) -> list[tuple[int, int, int, str | None]]:
    return [(_decode if decode else _info)(path) for path in paths]


def _info(path: str) -> tuple[int, int, int, str | None]:
    try:
        info = sf.info(path)
    except READ_ERRORS as e:
        return 0, 0, 0, str(e)
    return info.frames, info.samplerate, info.channels, None


def _decode(path: str) -> tuple[int, int, int, str | None]:
    """The header's frames, sample rate and channels, once the whole file has decoded to as many frames as it says
    it holds."""
    try:
        with sf.SoundFile(path) as f:
            decoded = 0
            while block := len(f.read(DECODE_BLOCK, dtype="int16")):
                decoded += block
            if decoded != f.frames:
                return 0, 0, 0, f"decodes to {decoded} of the {f.frames} frames its header gives"
            return f.frames, f.samplerate, f.channels, None
    except READ_ERRORS as e:
        return 0, 0, 0, str(e)


def write_parquet(table: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)
