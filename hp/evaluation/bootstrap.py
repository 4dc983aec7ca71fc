"""Confidence intervals of error rates, by bootstrap over speakers.

Why speakers, not trials: the trials of a test set share speakers (a target trial pairs two utterances of one voice,
and each utterance enters many trials), so their errors are correlated, and resampling trials as if they were
independent understates the spread. Speakers are the unit that is close to independent: Bolle, Ratha & Pankanti,
"Error analysis of pattern recognition systems: the subsets bootstrap", CVIU 93(1), 2004; Poh & Bengio, "Estimating
the confidence interval of expected performance curve in biometric authentication using joint bootstrap", ICASSP
2007.

How trials are re-formed: a resample draws as many speakers as the test set has, with replacement, and a speaker drawn
k times enters as k distinct copies. A trial tied to one speaker (an SV target trial; a CM utterance, bona fide or a
spoof of that speaker's voice as ASVspoof5 labels it) then appears k times, once per copy; an SV non-target trial
between speakers a and b appears k_a * k_b times, once per pair of copies (two copies of one speaker form no
non-target trial: no such trial exists to copy). A resample is thus a weighting of the original trials, and each
error rate is computed weighted, for all resamples at once: nothing is copied. The interval is the percentile one.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from hp.evaluation import metrics

# a CM attack gets an interval from this many spoofs on (fewer resolve little; hp.evaluation.scoring.cm_breakdown)
MIN_SPOOFS_FOR_INTERVAL = 50
# resamples x trials held at once per thread: 2^23 float64 weights, 64 MiB per array
_CHUNK_ELEMENTS = 1 << 23
_THREADS = min(4, len(os.sched_getaffinity(0)))  # chunks computed at once (memory: ~8 such arrays each)


@dataclass(frozen=True)
class Bootstrap:
    """`resamples` speaker-level resamples drawn from `seed`; intervals at `confidence`."""

    resamples: int = 1000
    seed: int = 0
    confidence: float = 0.95

    def __post_init__(self):
        if not isinstance(self.resamples, int) or isinstance(self.resamples, bool) or self.resamples < 1:
            raise ValueError(f"resamples must be a positive integer, got {self.resamples!r}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence!r}")

    def describe(self, speakers: dict[str, int]) -> dict:
        """What the intervals are, for the metrics file; `speakers`: how many each trial list or split resampled."""
        return {"unit": "speaker", "resamples": self.resamples, "seed": self.seed, "confidence": self.confidence,
                "interval": "percentile", "speakers": speakers}

    def counts(self, n: int) -> np.ndarray:
        """[resamples, n] how many times each of `n` speakers is drawn in each resample. The same seed and `n` give the
        same draws: two systems scored on one test set are resampled alike (paired comparisons)."""
        draws = np.random.default_rng(self.seed).integers(0, n, size=(self.resamples, n))
        flat = (draws + n * np.arange(self.resamples)[:, None]).ravel()
        return np.bincount(flat, minlength=self.resamples * n).reshape(self.resamples, n)

    def intervals(self, values: dict, scores, labels, costs: dict[str, tuple[float, float, float]], first,
                  second=None) -> tuple[dict, dict[str, np.ndarray]]:
        """`values` (the point metrics: "eer" and the minDCFs named in `costs`, see replicates) with an interval
        `<name>_ci95` beside each, and the replicates they come from, for trials tied to the speakers `first` (and
        `second`; speaker_index)."""
        n, a, b = speaker_index(first, second)
        draws = replicates(scores, labels, self.counts(n), a, b, costs)
        suffix = f"_ci{round(self.confidence * 100)}"
        return {**values, **{name + suffix: self.interval(reps) for name, reps in draws.items()}}, draws

    def interval(self, replicates: np.ndarray) -> dict[str, float] | None:
        """The percentile interval {"lo", "hi"} of `replicates`, those of degenerate resamples (NaN: no target or no
        non-target weight left) left out; None if every resample was degenerate. A mapping, not a pair: DVC's
        metrics readers (`dvc exp show`, `dvc metrics diff`) drop lists but keep numbers under keys."""
        values = replicates[~np.isnan(replicates)]
        if values.size == 0:
            return None
        tail = (1 - self.confidence) / 2 * 100
        lo, hi = np.percentile(values, [tail, 100 - tail])
        return {"lo": float(lo), "hi": float(hi)}


def speaker_index(first, second=None) -> tuple[int, np.ndarray, np.ndarray]:
    """(number of speakers, each trial's first speaker index, its second speaker index or -1) for trials tied to the
    speakers `first` (and `second`: the other side of an SV trial; a trial of one speaker is tied to it once).
    Speakers are indexed in sorted order, so that one test set gives the same index to every system scored on it."""
    first = np.asarray(first)
    second = first if second is None else np.asarray(second)
    names, inverse = np.unique(np.concatenate([first, second]), return_inverse=True)
    a, b = inverse[:len(first)], inverse[len(first):]
    return len(names), a, np.where(a == b, -1, b)


def trial_weights(counts: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[resamples, trials]: k_a for a trial tied to one speaker (b = -1), k_a * k_b for one tied to two."""
    ones = np.ones((len(counts), 1), dtype=counts.dtype)  # column -1: what b = -1 picks, a factor of 1
    return (counts[:, a] * np.concatenate([counts, ones], axis=1)[:, b]).astype(np.float64)


def weighted_error_rates(scores: np.ndarray, labels: np.ndarray,
                         weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P_miss, P_fa), [resamples, points]: metrics.error_rates with each trial counted `weights[r]` times, at the
    same thresholds (every distinct score, then one rejecting all). A threshold at a trial of weight 0 repeats the
    next point, which changes neither the EER's interpolation nor the minimum DCF. `scores` sorted ascending (and
    `labels`, `weights` in that order): replicates sorts once for all its chunks of resamples.

    The weights are whole numbers, so every sum below is exact in float64 whatever its order: the counts of
    non-targets are all trials' less the targets'."""
    rows, n = weights.shape
    pos_below, all_below = np.zeros((rows, n + 1)), np.zeros((rows, n + 1))
    np.cumsum(weights * labels.astype(bool), axis=1, out=pos_below[:, 1:])
    np.cumsum(weights, axis=1, out=all_below[:, 1:])
    starts = np.flatnonzero(np.concatenate(([True], scores[1:] != scores[:-1])))
    if len(starts) < n:  # tied scores: one threshold per distinct score (gathering costs; distinct scores need none)
        points = np.append(starts, n)
        pos_below, all_below = pos_below[:, points], all_below[:, points]
    neg_below = all_below - pos_below
    n_pos, n_neg = pos_below[:, -1:], neg_below[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample without targets or non-targets: NaN
        return pos_below / n_pos, 1.0 - neg_below / n_neg


def weighted_eer(p_miss: np.ndarray, p_fa: np.ndarray) -> np.ndarray:
    """metrics.eer per row: where P_miss = P_fa, interpolated linearly between neighbouring points."""
    diff = p_miss - p_fa  # each row rises from -1 to +1
    rows = np.arange(len(diff))
    i = np.argmax(diff >= 0, axis=1)
    d1, d0 = diff[rows, i], diff[rows, np.maximum(i - 1, 0)]
    m1, m0 = p_miss[rows, i], p_miss[rows, np.maximum(i - 1, 0)]
    with np.errstate(invalid="ignore", divide="ignore"):
        crossed = m0 + d0 / (d0 - d1) * (m1 - m0)
    out = np.where(d1 == 0, m1, crossed)
    out[np.isnan(diff).any(axis=1)] = np.nan
    return out


def weighted_min_dcf(p_miss: np.ndarray, p_fa: np.ndarray, p_target: float, c_miss: float = 1.0,
                     c_fa: float = 1.0) -> np.ndarray:
    """metrics.min_dcf per row."""
    metrics.check_prior(p_target)
    dcf = c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target)
    return dcf.min(axis=1) / min(c_miss * p_target, c_fa * (1 - p_target))


def replicates(scores, labels, counts: np.ndarray, a: np.ndarray, b: np.ndarray,
               costs: dict[str, tuple[float, float, float]]) -> dict[str, np.ndarray]:
    """EER and each minDCF of `costs` ({name: (p_target, c_miss, c_fa)}) in every resample of `counts`
    ([resamples, speakers], Bootstrap.counts), the trials tied to speakers `a` and `b` (speaker_index):
    {"eer": [resamples], name: [resamples], ...}. Labels: 1 (or True) for a target / bona fide trial."""
    scores, labels = metrics._check(scores, labels)
    order = np.argsort(scores, kind="stable")  # once: each chunk's weights are then built in this order
    scores, labels, a, b = scores[order], labels[order], a[order], b[order]
    out = {name: np.empty(len(counts)) for name in ("eer", *costs)}
    step = max(1, _CHUNK_ELEMENTS // max(1, len(scores)))

    def chunk(start: int) -> None:
        rows = slice(start, start + step)
        p_miss, p_fa = weighted_error_rates(scores, labels, trial_weights(counts[rows], a, b))
        out["eer"][rows] = weighted_eer(p_miss, p_fa)
        for name, cost in costs.items():
            out[name][rows] = weighted_min_dcf(p_miss, p_fa, *cost)

    # chunks of resamples in threads: numpy's cumsum and ufuncs run without the GIL, and each chunk writes its rows
    starts = range(0, len(counts), step)
    with ThreadPoolExecutor(min(_THREADS, len(starts))) as pool:
        list(pool.map(chunk, starts))
    return out


def paired(bootstrap: Bootstrap, scores: np.ndarray, reference: np.ndarray, labels,
           costs: dict[str, tuple[float, float, float]], first, second=None) -> dict:
    """Each metric of `scores` minus that of `reference` (another system on the same trials, in the same order),
    with the interval of the difference over the same resamples: {name: difference, name_ci95: {lo, hi}}. Pairing
    cancels what the two share (which speakers are hard), so the interval is that of the difference itself, narrower
    than the two intervals side by side suggest."""
    n, a, b = speaker_index(first, second)
    counts = bootstrap.counts(n)
    mine, theirs = (replicates(s, labels, counts, a, b, costs) for s in (scores, reference))
    labels = np.asarray(labels).astype(bool)
    point = {"eer": metrics.eer(scores, labels) - metrics.eer(reference, labels)}
    for name, cost in costs.items():
        point[name] = metrics.min_dcf(scores, labels, *cost) - metrics.min_dcf(reference, labels, *cost)
    suffix = f"_ci{round(bootstrap.confidence * 100)}"
    return {**point, **{name + suffix: bootstrap.interval(mine[name] - theirs[name]) for name in mine}}


class Trials(NamedTuple):
    """One system's scored trials (or CM utterances) for a paired comparison: `keys` name them (two systems pair
    only on the same keys in the same order); `speakers`: (first,) or (enroll, test) per trial; `costs`: the minDCFs
    to compare, as replicates takes them."""

    keys: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    speakers: tuple
    costs: dict


def compare(bootstrap: Bootstrap, mine: Trials, reference: Trials) -> dict | None:
    """paired() of two systems' trials; None when they were not scored on the same trials."""
    if len(mine.keys) != len(reference.keys) or (mine.keys != reference.keys).any():
        return None
    return paired(bootstrap, mine.scores, reference.scores, mine.labels, mine.costs, *mine.speakers)
