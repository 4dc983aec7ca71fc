"""Detection metrics (docs/references.md §5). Labels: 1 = target / bona fide (positive), 0 = non-target / spoof.

All functions take a threshold sweep over the distinct scores: tied scores form one threshold, so no
order among equal scores can change a result. Results are fractions, not percentages.
"""
from __future__ import annotations

import math

import numpy as np

# ASVspoof5 CM costs (docs/references.md §5): bona fide is the positive class, P(spoof) = 0.05, C_fa = 10.
CM_P_TARGET, CM_C_MISS, CM_C_FA = 0.95, 1.0, 10.0
# the minimum DCFs hp reports, by name: (p_target, c_miss, c_fa). SV: p = 0.01 (WeSpeaker, 3D-Speaker, SpeechBrain)
# and 0.05 (ESPnet), docs/references.md §5; CM: ASVspoof5's
SV_COSTS = {"min_dcf_0.01": (0.01, 1.0, 1.0), "min_dcf_0.05": (0.05, 1.0, 1.0)}
CM_COSTS = {"min_dcf": (CM_P_TARGET, CM_C_MISS, CM_C_FA)}


def check_sizes(n: int, labels: np.ndarray, what: str) -> None:
    if n == 0 or labels.size != n:
        raise ValueError(f"need equally many {what} and labels, got {n} and {labels.size}")


def check_finite(values: np.ndarray, what: str) -> None:
    if not np.isfinite(values).all():
        raise ValueError(f"{what} hold {int((~np.isfinite(values)).sum())} NaN or infinite values")


def check_labels(labels, n: int, what: str) -> np.ndarray:
    """`n` labels, each 0 or 1, both classes present, as a boolean array (True = positive)."""
    labels = np.asarray(labels).ravel()
    check_sizes(n, labels, what)
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    labels = labels.astype(bool)
    if labels.all() or not labels.any():
        raise ValueError("need both classes: got only " + ("positives" if labels.all() else "negatives"))
    return labels


def check_prior(p_target: float) -> None:
    if not 0 < p_target < 1:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")


def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    check_sizes(scores.size, np.asarray(labels).ravel(), "scores")  # sizes, then values, then labels
    check_finite(scores, "scores")
    return scores, check_labels(labels, scores.size, "scores")


def error_rates(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, P_miss, P_fa) with a decision `score >= threshold`, thresholds ascending.

    The first point accepts everything (P_miss = 0, P_fa = 1) and an extra last one rejects everything.
    """
    scores, labels = _check(scores, labels)
    order = np.argsort(scores, kind="stable")
    s, l = scores[order], labels[order]
    n_pos, n_neg = l.sum(), (~l).sum()
    # at the k-th distinct score as threshold, everything below it is rejected
    first = np.concatenate(([True], s[1:] != s[:-1]))
    idx = np.flatnonzero(first)
    pos_below = np.concatenate(([0], np.cumsum(l)))[idx]
    neg_below = np.concatenate(([0], np.cumsum(~l)))[idx]
    thresholds = np.append(s[idx], np.inf)
    p_miss = np.append(pos_below, n_pos) / n_pos
    p_fa = 1.0 - np.append(neg_below, n_neg) / n_neg
    return thresholds, p_miss, p_fa


def det_curve(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """(P_fa, P_miss) points of the DET curve, P_fa descending."""
    _, p_miss, p_fa = error_rates(scores, labels)
    return p_fa, p_miss


def _eer_point(scores, labels) -> tuple[float, float]:
    """(EER, threshold): where P_miss = P_fa, interpolated linearly between neighbouring thresholds."""
    thresholds, p_miss, p_fa = error_rates(scores, labels)
    diff = p_miss - p_fa  # rises from -1 to +1
    i = int(np.flatnonzero(diff >= 0)[0])
    if diff[i] == 0:
        return float(p_miss[i]), float(thresholds[i])
    # segment (i-1, i) crosses zero: intersect the line P_miss = P_fa
    d0, d1 = diff[i - 1], diff[i]
    w = d0 / (d0 - d1)
    lo, hi = thresholds[i - 1], thresholds[i]
    threshold = lo + w * (hi - lo) if np.isfinite(hi) else lo  # the last point rejects all: no score above
    return float(p_miss[i - 1] + w * (p_miss[i] - p_miss[i - 1])), float(threshold)


def eer(scores, labels) -> float:
    """Equal error rate: where P_miss = P_fa, interpolated linearly between neighbouring thresholds."""
    return _eer_point(scores, labels)[0]


def eer_threshold(scores, labels) -> float:
    """A decision threshold (accept score >= it) at the EER: the same interpolation between the two neighbouring
    thresholds as eer() makes (every threshold strictly between them takes the same decisions)."""
    return _eer_point(scores, labels)[1]


def min_dcf(scores, labels, p_target: float, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """min over thresholds of c_miss P_miss p + c_fa P_fa (1 - p), over min(c_miss p, c_fa (1 - p))."""
    check_prior(p_target)
    _, p_miss, p_fa = error_rates(scores, labels)
    dcf = c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target)
    return float(dcf.min() / min(c_miss * p_target, c_fa * (1 - p_target)))


def bayes_threshold(p_target: float, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """The LLR threshold of the Bayes decision for these costs and prior: ln(c_fa (1 - p) / (c_miss p))."""
    check_prior(p_target)
    return math.log(c_fa * (1 - p_target) / (c_miss * p_target))


def effective_prior(p_target: float, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """The prior at which equal costs give the same Bayes decisions: c_miss p / (c_miss p + c_fa (1 - p))."""
    check_prior(p_target)
    return c_miss * p_target / (c_miss * p_target + c_fa * (1 - p_target))


def act_dcf(llrs, labels, p_target: float, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """The normalised DCF of the decision `llr >= bayes_threshold(...)`: what calibrated LLRs actually cost.

    Normalised as min_dcf (by the cost of the better trivial system), so actDCF >= minDCF, with equality for
    perfectly calibrated scores; ASVspoof5: p_target = 0.95 (bona fide), c_miss = 1, c_fa = 10, threshold -ln 1.9.
    """
    threshold = bayes_threshold(p_target, c_miss, c_fa)
    llrs, labels = _check(llrs, labels)
    accept = llrs >= threshold
    p_miss, p_fa = (~accept[labels]).mean(), accept[~labels].mean()
    dcf = c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target)
    return float(dcf / min(c_miss * p_target, c_fa * (1 - p_target)))


def cllr(llrs, labels) -> float:
    """Cllr in bits: 0.5 * (mean_targets log2(1 + e^-llr) + mean_nontargets log2(1 + e^llr)).

    The calibration loss of natural-log LLRs (docs/references.md §5): 1 bit for llr = 0 everywhere, 0 for
    perfect, confident LLRs (log(1 + e^x) as logaddexp, so no overflow).
    """
    llrs = np.asarray(llrs, dtype=np.float64).ravel()
    labels = check_labels(labels, llrs.size, "llrs")
    check_finite(llrs, "llrs")
    return float(0.5 * (np.logaddexp(0.0, -llrs[labels]).mean() + np.logaddexp(0.0, llrs[~labels]).mean())
                 / math.log(2))
