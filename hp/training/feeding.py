"""A training run's data feeding: random crops of the manifest's utterances, the sampler that deals each global batch
out to the processes, and the reader that yields every step's micro-batches from any step on (resumption)."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from hp.data.audio import SAMPLE_RATE, random_crop
from hp.data.augment import Augmenter
from hp.training.config import TrainConfig


class CropDataset(Dataset):
    """Random fixed-length crops of the manifest's utterances (augmented, if given), with integer class labels."""

    def __init__(self, table: pd.DataFrame, labels: list[str], seconds: float, seed: int,
                 augment: Augmenter | None = None):
        index = {label: i for i, label in enumerate(labels)}
        self.paths = table["path"].tolist()
        self.frames = (table["duration_s"] * SAMPLE_RATE).round().astype(int).tolist()
        self.targets = [index[label] for label in table["label"]]
        self.samples, self.seed, self.epoch, self.augment = int(seconds * SAMPLE_RATE), seed, 0, augment

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        # one generator per (seed, epoch, item): crops do not depend on worker count or order
        rng = np.random.default_rng((self.seed, self.epoch, i))
        wave = torch.from_numpy(random_crop(self.paths[i], self.frames[i], self.samples, rng))
        if self.augment is not None:
            wave = self.augment(wave, rng)
        return wave, self.targets[i]


class ShardedSampler(Sampler[int]):
    """This process's share of each epoch: one seeded permutation of the utterances on every rank, dealt out
    round robin. The ranks' k-th micro-batches together are then the k-th contiguous slice of the permutation,
    whatever the number of processes, so a run's global batches do not depend on how it is spread. An epoch
    covers whole global steps only (the rest of the permutation waits for the next epoch's shuffle).
    `set_epoch(e, skip)` starts epoch e after this rank's first `skip` indices (a resumed run)."""

    def __init__(self, n: int, per_rank_step: int, rank: int, world: int, seed: int):
        self.n, self.rank, self.world, self.seed = n, rank, world, seed
        self.per_rank = (n // (world * per_rank_step)) * per_rank_step
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return self.per_rank - self.skip

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        return iter(order[: self.per_rank * self.world][self.rank::self.world][self.skip:].tolist())


class GlobalBatches:
    """This process's share of the run's data: each optimiser step's global batch as `grad_accumulation`
    micro-batches of random crops, epoch after epoch, from any step on (a resumed run continues mid-epoch)."""

    def __init__(self, table: pd.DataFrame, labels: list[str], cfg: TrainConfig, augment: Augmenter | None,
                 micro: int, rank: int, world: int):
        self.data = CropDataset(table, labels, cfg.crop_seconds, cfg.seed, augment)
        self.accumulation, self.epochs = cfg.grad_accumulation, cfg.epochs
        self.per_step = micro * self.accumulation  # this process's utterances per optimiser step
        self.sampler = ShardedSampler(len(self.data), self.per_step, rank, world, cfg.seed)
        # its own generator: creating an epoch's iterator must not draw from the global one (resumption)
        self.loader = DataLoader(self.data, batch_size=micro, sampler=self.sampler, num_workers=cfg.runtime.num_workers,
                                 generator=torch.Generator().manual_seed(cfg.seed))
        self.steps_per_epoch = self.sampler.per_rank // self.per_step
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch_size {cfg.batch_size} is larger than the {len(self.data)} training utterances")

    def from_step(self, step: int):
        """For each step from `step` to the end of the run: an iterator over its micro-batches (read lazily)."""
        first, skip = divmod(step, self.steps_per_epoch)
        for epoch in range(first, self.epochs):
            self.data.epoch = epoch
            self.sampler.set_epoch(epoch, skip * self.per_step if epoch == first else 0)
            batches = iter(self.loader)
            for _ in range(len(self.sampler) // self.per_step):
                yield itertools.islice(batches, self.accumulation)
