"""Metrics against brute-force references written straight from their definitions (docs/references.md §5)."""
import math

import numpy as np
import pytest

from hp.evaluation import metrics


def brute_rates(scores, labels):
    """P_miss, P_fa at every candidate threshold (each distinct score, and +inf), by direct counting."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    out = []
    for t in sorted(set(scores.tolist())) + [np.inf]:
        accept = scores >= t
        out.append(((~accept & labels).sum() / labels.sum(), (accept & ~labels).sum() / (~labels).sum()))
    return out


def brute_min_dcf(scores, labels, p, c_miss=1.0, c_fa=1.0):
    dcf = min(c_miss * m * p + c_fa * f * (1 - p) for m, f in brute_rates(scores, labels))
    return dcf / min(c_miss * p, c_fa * (1 - p))


def brute_eer_bounds(scores, labels):
    """The EER lies between the best max(P_miss, P_fa) neighbours: min over thresholds of max and of min."""
    rates = brute_rates(scores, labels)
    return min(min(m, f) for m, f in rates if m >= f), min(max(m, f) for m, f in rates)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("tied", [False, True])
def test_against_brute_force(seed, tied):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 300))
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    scores = rng.normal(labels * rng.uniform(0, 3), 1.0)
    if tied:
        scores = np.round(scores * 2) / 2  # many exact ties
    for p, cm, cf in ((0.01, 1, 1), (0.05, 1, 1), (0.95, 1, 10)):
        assert metrics.min_dcf(scores, labels, p, cm, cf) == pytest.approx(brute_min_dcf(scores, labels, p, cm, cf))
    lo, hi = brute_eer_bounds(scores, labels)
    assert lo - 1e-12 <= metrics.eer(scores, labels) <= hi + 1e-12
    # order of tied scores does not matter
    perm = rng.permutation(n)
    assert metrics.eer(scores[perm], labels[perm]) == pytest.approx(metrics.eer(scores, labels))


def test_known_values():
    assert metrics.eer([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 0.0
    assert metrics.eer([0.5] * 4, [0, 1, 0, 1]) == 0.5  # one threshold for all ties
    assert metrics.eer([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 1.0
    # 1 target of 4 below the crossing and 1 non-target of 4 above it: EER 25 %
    assert metrics.eer([1, 2, 3, 6, 4, 7, 8, 9], [0, 0, 0, 0, 1, 1, 1, 1]) == pytest.approx(0.25)
    assert metrics.min_dcf([0.1, 0.9], [0, 1], 0.01) == 0.0
    # all accepted: DCF = (1 - p) * P_fa = 0.99; all rejected: p = 0.01 -> normalised 1.0
    assert metrics.min_dcf([0.9, 0.1], [0, 1], 0.01) == pytest.approx(1.0)


def test_det_curve_monotone():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    p_fa, p_miss = metrics.det_curve(rng.normal(labels, 1.0), labels)
    assert p_fa[0] == 1.0 and p_miss[0] == 0.0 and p_fa[-1] == 0.0 and p_miss[-1] == 1.0
    assert (np.diff(p_fa) <= 0).all() and (np.diff(p_miss) >= 0).all()


@pytest.mark.parametrize("scores,labels,match", [
    ([], [], "equally many"),
    ([0.1, 0.2], [1, 1], "both classes"),
    ([0.1, 0.2], [0, 0], "both classes"),
    ([0.1, float("nan")], [0, 1], "NaN"),
    ([0.1, 0.2], [0, 2], "0 or 1"),
    ([0.1, 0.2, 0.3], [0, 1], "equally many"),
])
def test_bad_input(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        metrics.eer(scores, labels)
    with pytest.raises(ValueError, match=match):
        metrics.min_dcf(scores, labels, 0.01)


def brute_act_dcf(llrs, labels, p, c_miss=1.0, c_fa=1.0):
    """Straight from docs/references.md §5: accept (bona fide / target) when llr >= -ln(beta),
    beta = c_miss p / (c_fa (1-p))."""
    tau = math.log(c_fa * (1 - p) / (c_miss * p))
    tar = [s for s, l in zip(llrs, labels) if l == 1]
    non = [s for s, l in zip(llrs, labels) if l == 0]
    p_miss = sum(s < tau for s in tar) / len(tar)
    p_fa = sum(s >= tau for s in non) / len(non)
    return (c_miss * p * p_miss + c_fa * (1 - p) * p_fa) / min(c_miss * p, c_fa * (1 - p))


def brute_cllr(llrs, labels):
    tar = [s for s, l in zip(llrs, labels) if l == 1]
    non = [s for s, l in zip(llrs, labels) if l == 0]
    return 0.5 * (sum(math.log2(1 + math.exp(-s)) for s in tar) / len(tar)
                  + sum(math.log2(1 + math.exp(s)) for s in non) / len(non))


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("tied", [False, True])
def test_act_dcf_and_cllr_against_definitions(seed, tied):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(20, 300))
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    llrs = rng.normal((2 * labels - 1) * rng.uniform(0, 3), 1.5) + rng.normal(0, 1)  # some miscalibration
    if tied:  # many ties, some exactly at ASVspoof5's threshold (accepted: llr >= threshold)
        llrs = np.round(llrs * 2) / 2
        llrs[rng.random(n) < 0.2] = metrics.bayes_threshold(0.95, 1, 10)
    for p, cm, cf in ((0.95, 1, 10), (0.5, 1, 1), (0.01, 1, 1), (0.05, 2, 1)):
        act = metrics.act_dcf(llrs, labels, p, cm, cf)
        assert act == pytest.approx(brute_act_dcf(llrs, labels, p, cm, cf), abs=1e-12)
        assert act >= metrics.min_dcf(llrs, labels, p, cm, cf) - 1e-12  # the Bayes threshold is one candidate
    assert metrics.cllr(llrs, labels) == pytest.approx(brute_cllr(llrs, labels), rel=1e-12)


def test_act_dcf_known_values():
    # ASVspoof5 costs: threshold -ln(1.9) = -0.6419; normalisation min(0.95, 0.5) = 0.5
    assert metrics.bayes_threshold(0.95, 1, 10) == pytest.approx(-math.log(1.9))
    assert metrics.effective_prior(0.95, 1, 10) == pytest.approx(0.95 / 1.45)
    assert metrics.act_dcf([-0.6, -0.7], [1, 0], 0.95, 1, 10) == 0.0  # both on their right side
    # one bona fide just below the threshold is missed: 0.95 * 1/1 / 0.5
    assert metrics.act_dcf([-0.65, -3.0], [1, 0], 0.95, 1, 10) == pytest.approx(1.9)
    # a spoof exactly at the threshold is accepted: 10 * 0.05 / 0.5
    assert metrics.act_dcf([5.0, metrics.bayes_threshold(0.95, 1, 10)], [1, 0], 0.95, 1, 10) == pytest.approx(1.0)
    # LLR 0 everywhere (no information, perfectly calibrated): Cllr 1 bit; actDCF of the trivial decision
    assert metrics.cllr([0.0, 0.0], [1, 0]) == pytest.approx(1.0)
    assert metrics.act_dcf([0.0, 0.0], [1, 0], 0.95, 1, 10) == pytest.approx(1.0)  # accepts all: 0.5 / 0.5


def test_act_dcf_bad_input():
    for scores, labels, match in (([], [], "equally many"), ([0.1, 0.2], [1, 1], "both classes"),
                                  ([0.1, float("inf")], [0, 1], "NaN or infinite")):
        with pytest.raises(ValueError, match=match):
            metrics.act_dcf(scores, labels, 0.95, 1, 10)
    with pytest.raises(ValueError, match="p_target"):
        metrics.act_dcf([0.1, 0.2], [0, 1], 1.0)


@pytest.mark.parametrize("seed", range(5))
def test_eer_threshold_operates_at_the_eer(seed):
    """On scores with ties: the threshold lies between the two neighbouring thresholds whose error rates
    bracket the EER (where P_miss - P_fa changes sign), and deciding score >= it takes the upper one's decisions."""
    rng = np.random.default_rng(seed)
    labels = rng.random(400) < 0.3
    scores = np.round(rng.normal(labels * 1.5, 1.0), 1)
    t, eer = metrics.eer_threshold(scores, labels), metrics.eer(scores, labels)
    thresholds, p_miss, p_fa = metrics.error_rates(scores, labels)
    i = int(np.flatnonzero(p_miss >= p_fa)[0])
    assert thresholds[i - 1] <= t <= thresholds[i]
    assert min(p_miss[i - 1], p_miss[i]) <= eer <= max(p_miss[i - 1], p_miss[i])
    if t > thresholds[i - 1]:
        assert (scores[labels] < t).mean() == pytest.approx(p_miss[i])
        assert (scores[~labels] >= t).mean() == pytest.approx(p_fa[i])


def test_eer_threshold_separable_scores():
    """Perfectly separated classes: the threshold lies between them, so every decision is right."""
    t = metrics.eer_threshold([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    assert 0.2 <= t <= 0.8
