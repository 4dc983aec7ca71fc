"""The training data path alone (decode, crop, MUSAN/RIR augmentation) for several DataLoader worker counts: utt/s.

    python -m hp.benchmarks loader [--workers 0,2] [--no-augment] --json
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
import torch
from torch.utils.data import DataLoader, RandomSampler

from hp.benchmarks.common import comma_list, write_noise
from hp.data.audio import SAMPLE_RATE
from hp.data.augment import AugmentConfig, Augmenter, musan_table, rir_table
from hp.training.feeding import CropDataset


def loader_corpus(root: Path, utterances: int, seed: int = 0) -> tuple[pd.DataFrame, Augmenter]:
    """A random-noise corpus under `root`: the manifest of `utterances` 4-8 s FLAC files, and an Augmenter
    (every crop augmented) over MUSAN and RIRS_NOISES trees in their distributed layouts."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(utterances):
        path, duration = root / "wav" / f"utt{i:05d}.flac", float(rng.uniform(4, 8))
        write_noise(path, duration, rng)
        rows.append({"utt": path.stem, "path": str(path), "speaker": f"spk{i % 4}", "label": f"spk{i % 4}",
                     "duration_s": sf.info(path).frames / SAMPLE_RATE, "sample_rate": SAMPLE_RATE,
                     "split": "train"})
    for kind in ("noise", "music", "speech"):
        for j in range(4):  # 4 talkers: babble draws 3-7
            write_noise(root / "musan" / kind / "x" / f"{kind}-{j:04d}.wav", 6.0, rng)
    for j in range(4):
        write_noise(root / "RIRS_NOISES/simulated_rirs/smallroom/Room001" / f"Room001-{j:05d}.wav", 0.5, rng,
                    decay_s=0.1)
    augmenter = Augmenter(musan_table(root), rir_table(root), AugmentConfig(prob=1.0))
    return pd.DataFrame(rows), augmenter


def loader(args: argparse.Namespace) -> dict:
    # DataLoader workers run with one torch thread; the main process (workers=0) gets --threads. With more
    # threads than free cores, every small reduction in the augmentation waits on OpenMP: 40-100x slower here
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        table, augmenter = loader_corpus(Path(tmp), args.utterances, args.seed)
        data = CropDataset(table, sorted(set(table["label"])), args.seconds, args.seed,
                           augmenter if args.augment else None)
        for workers in args.workers:
            # sampling with replacement: any number of batches from a small corpus, in one pass
            sampler = RandomSampler(data, replacement=True, num_samples=args.batch * (args.batches + 1),
                                    generator=torch.Generator().manual_seed(args.seed))
            batches = iter(DataLoader(data, batch_size=args.batch, sampler=sampler, num_workers=workers))
            next(batches)  # warm-up: worker start-up and the first reads are not timed
            start = time.perf_counter()
            count = sum(len(wave) for wave, _ in batches)
            results.append({"workers": workers, "utt_per_s": round(count / (time.perf_counter() - start), 2)})
            del batches  # shuts its workers down before the next setting
    return {"benchmark": "loader", "utterances": args.utterances, "seconds": args.seconds, "batch": args.batch,
            "batches": args.batches, "augment": args.augment, "threads": args.threads, "results": results,
            "cpus": os.cpu_count(), "torch": torch.__version__}


def add_parser(sub) -> None:
    p = sub.add_parser("loader", help="training data path alone (decode, crop, MUSAN/RIR augmentation): utt/s")
    p.add_argument("--utterances", type=int, default=64, help="random-noise FLAC files, 4-8 s, in a temporary corpus")
    p.add_argument("--seconds", type=float, default=3.0, help="crop length")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=comma_list(int), default=[0, 2], help="comma-separated DataLoader worker counts")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="augment every crop (MUSAN noise/music/babble, RIR)")
    p.add_argument("--batches", type=int, default=8, help="timed batches, after one warm-up batch")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the main process (workers use 1)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=loader)
