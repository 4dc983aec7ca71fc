"""The manifests stage's audio check (manifests.check_audio: header | decode) on generated files: files/s.

    python -m hp.benchmarks audio-check --format flac --seconds 4 --json
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from hp.benchmarks.common import comma_list
from hp.data.audio import SAMPLE_RATE
from hp.data.manifest import Validation


def audio_check(args: argparse.Namespace) -> dict:
    return check_rates(args.files, args.seconds, args.format, args.processes, args.seed)


def check_rates(files: int, mean_seconds: float, audio_format: str, processes: list[int], seed: int = 0) -> dict:
    """Files/s and audio seconds/s of the manifests stage's check, headers only and fully decoded, per process
    count. The files were just written, so they come from the page cache: this is the CPU's rate, and a corpus
    on a slow disk is read no faster than the disk delivers it."""
    rng = np.random.default_rng(seed)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        paths, seconds = [], 0.0
        for i in range(files):
            length = rng.uniform(0.5, 1.5) * mean_seconds
            # low-level noise under a tone: FLAC compresses it about as well as speech (~55 %)
            t = np.arange(int(length * SAMPLE_RATE)) / SAMPLE_RATE
            wave = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(len(t))
            path = Path(tmp) / f"{i:06d}.{audio_format}"
            sf.write(path, wave.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
            paths.append(str(path))
            seconds += length
        table = pd.DataFrame({"path": paths})
        Validation(min_seconds=0.0, decode=True).check(table, "bench")  # untimed: the first pass warms caches
        for mode in ("header", "decode"):
            for count in processes:
                start = time.perf_counter()
                Validation(min_seconds=0.0, decode=mode == "decode", processes=count).check(table, "bench")
                wall = time.perf_counter() - start
                results.append({"check_audio": mode, "processes": count, "files_per_s": round(len(paths) / wall, 1),
                                "audio_seconds_per_s": round(seconds / wall, 1)})
    return {"benchmark": "audio-check", "format": audio_format, "files": files,
            "mean_seconds": round(seconds / files, 2), "results": results, "cpus": os.cpu_count(),
            "soundfile": sf.__version__, "libsndfile": sf.__libsndfile_version__}


def add_parser(sub) -> None:
    p = sub.add_parser("audio-check", help="the manifests stage's audio check, headers vs full decode: files/s")
    p.add_argument("--files", type=int, default=4000, help="(fewer than 2,048 are checked in one process)")
    p.add_argument("--seconds", type=float, default=4.0, help="mean file length (uniform in 0.5x-1.5x)")
    p.add_argument("--format", choices=("flac", "wav"), default="flac")
    p.add_argument("--processes", type=comma_list(int), default=[1, 2], help="comma-separated process counts")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=audio_check)
