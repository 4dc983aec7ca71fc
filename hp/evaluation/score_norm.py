"""Speaker-verification score post-processing: embedding mean subtraction, cohort, adaptive s-norm.

AS-norm (Matějka et al., 2017; "AS-norm1" as in WeSpeaker): each side of a trial is normalised by the mean
and standard deviation of its own top-N cosine scores against a cohort,

    s' = ((s - mu_e) / sd_e + (s - mu_t) / sd_t) / 2,

with mu/sd over the N highest cohort scores of the enrollment (e) and test (t) embedding; sd is the
population standard deviation (ddof 0). The statistics are computed once per utterance, so the cost is one
[utterances x cohort] matrix product plus a top-N, independent of the number of trials.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hp.utils.timing import timed

TRIAL_CHUNK = 1 << 16  # trials scored at once


def _normalised(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return F.normalize(torch.as_tensor(x, dtype=torch.float32), dim=1)


def speaker_cohort(embeddings: np.ndarray, speakers: list[str] | np.ndarray) -> np.ndarray:
    """One cohort entry per training speaker: the mean of its length-normalised utterance embeddings."""
    codes, inverse = np.unique(np.asarray(speakers), return_inverse=True)
    e = _normalised(embeddings)
    sums = torch.zeros(len(codes), e.shape[1]).index_add_(0, torch.from_numpy(inverse), e)
    return (sums / torch.bincount(torch.from_numpy(inverse)).unsqueeze(1)).numpy()


def cohort_statistics(embeddings: np.ndarray, cohort: np.ndarray, top_n: int, chunk: int = 2048,
                      exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of each embedding's `top_n` highest cosine scores against the cohort.

    `exclude[i]`, if given, is a cohort row left out for embedding i (its own speaker, when training
    utterances are normalised against a cohort of the training speakers)."""
    if top_n < 1:
        raise ValueError(f"AS-norm top_n must be >= 1, got {top_n}")
    if top_n > len(cohort) - (exclude is not None):
        raise ValueError(f"AS-norm top_n {top_n} exceeds the cohort's {len(cohort)} entries")
    e, c = _normalised(embeddings), _normalised(cohort)
    skip = None if exclude is None else torch.as_tensor(exclude, dtype=torch.long)
    means, stds = [], []
    for start, part in zip(range(0, len(e), chunk), e.split(chunk)):  # bounds memory at chunk x cohort scores
        scores = part @ c.T
        if skip is not None:
            scores[torch.arange(len(part)), skip[start:start + len(part)]] = -torch.inf
        top = torch.topk(scores, top_n, dim=1).values.double()
        means.append(top.mean(1))
        stds.append(top.std(1, correction=0))
    return torch.cat(means).numpy(), torch.cat(stds).numpy()


def as_norm(scores: np.ndarray, enroll_stats: tuple[np.ndarray, np.ndarray],
            test_stats: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Normalise trial scores with the per-trial (mean, std) of the enrollment and the test side."""
    (mu_e, sd_e), (mu_t, sd_t) = enroll_stats, test_stats
    return 0.5 * ((scores - mu_e) / sd_e + (scores - mu_t) / sd_t)


def trial_scores(embeddings: np.ndarray, enroll: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Cosine score of each trial, given row indices of its enrollment and test embeddings."""
    e, enroll, test = _normalised(embeddings), torch.as_tensor(enroll), torch.as_tensor(test)
    # in chunks of trials: both sides of a million trials would take ~1 GB (128 dimensions) at once
    return torch.cat([(e[enroll[s:s + TRIAL_CHUNK]] * e[test[s:s + TRIAL_CHUNK]]).sum(1)
                      for s in range(0, len(enroll), TRIAL_CHUNK)]).double().numpy()


def score_trials(embeddings: np.ndarray, enroll: np.ndarray, test: np.ndarray, train_embeddings: np.ndarray,
                 train_speakers: list[str] | np.ndarray, mean_subtraction: bool = True,
                 top_n: int | None = 300, speakers: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Raw cosine scores and, when `top_n` is set, AS-normed ones with a training-speaker cohort.

    `mean_subtraction` removes the training set's mean embedding from every embedding first (the authors'
    recipe). `top_n` larger than the number of training speakers uses all of them. `speakers` (one id per
    row of `embeddings`) is for trials among training utterances: each utterance's own speaker, whose cohort
    entry holds that very utterance, is left out of its statistics, as a test speaker is never in the cohort.
    """
    with timed("cosine", len(enroll)):
        if mean_subtraction:
            mean = train_embeddings.mean(0, keepdims=True)
            embeddings, train_embeddings = embeddings - mean, train_embeddings - mean
        out = {"raw": trial_scores(embeddings, enroll, test)}
    if top_n is not None:
        with timed("AS-norm cohort", len(train_embeddings)):
            codes = np.unique(np.asarray(train_speakers))
            cohort = speaker_cohort(train_embeddings, train_speakers)
        with timed("AS-norm statistics and scores", len(enroll)):
            exclude = None if speakers is None else np.searchsorted(codes, np.asarray(speakers))
            n = min(top_n, len(cohort) - (exclude is not None))
            mu, sd = cohort_statistics(embeddings, cohort, n, exclude=exclude)
            out["asnorm"] = as_norm(out["raw"], (mu[enroll], sd[enroll]), (mu[test], sd[test]))
    return out
