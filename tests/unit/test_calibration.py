"""Calibration: Cllr against its definition, the logistic fit against the known LLR of Gaussian classes and
against an objective written here from the formula, QMF features and trial sampling against direct counts."""
import json
import math
import warnings

import numpy as np
import pytest

from hp.errors import ConfigError
from hp.evaluation.calibration import QMF_COLUMNS, LinearCalibration, fit_logistic, qmf_features, sample_trials
from hp.evaluation.metrics import cllr

# Two equal-variance Gaussian classes: the true LLR is linear, w = (mu1 - mu0) / sd^2, b = (mu0^2 - mu1^2) / 2sd^2.
MU0, MU1, SD = 1.0, 3.0, 1.5
TRUE_W, TRUE_B = (MU1 - MU0) / SD**2, (MU0**2 - MU1**2) / (2 * SD**2)  # 0.889, -1.778
N = 20000


def gaussian_data(seed, target_fraction, noise_feature=False):
    rng = np.random.default_rng(seed)
    n_target = int(N * target_fraction)
    labels = np.r_[np.ones(n_target, int), np.zeros(N - n_target, int)]
    x = rng.normal(np.where(labels == 1, MU1, MU0), SD)
    if noise_feature:
        x = np.c_[x, rng.normal(0.0, 1.0, N)]
    return x, labels


def objective(w, b, x, labels, prior, l2):
    """fit_logistic's objective straight from its formula, independent of its implementation."""
    x = np.asarray(x, float).reshape(len(labels), -1)
    s = x @ np.atleast_1d(w) + b + math.log(prior / (1 - prior))
    t = labels == 1
    return (prior * np.logaddexp(0, -s[t]).mean() + (1 - prior) * np.logaddexp(0, s[~t]).mean()
            + l2 / 2 * float(np.sum(np.square(w))))


def perturbations(w, b, deltas):
    for d in deltas:
        for dw, db in ((d, 0), (-d, 0), (0, d), (0, -d), (d, d), (d, -d)):
            yield w + dw, b + db


# --- cllr -----------------------------------------------------------------------------------------------------

def test_cllr_matches_the_direct_formula():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    llrs = rng.normal(np.where(labels == 1, 1.0, -1.0), 2.0)
    t = labels == 1
    direct = 0.5 * (np.mean(np.log2(1 + np.exp(-llrs[t]))) + np.mean(np.log2(1 + np.exp(llrs[~t]))))
    assert cllr(llrs, labels) == pytest.approx(direct, rel=1e-12)
    # each class is averaged on its own: repeating the targets changes nothing
    assert cllr(np.r_[llrs, llrs[t]], np.r_[labels, labels[t]]) == pytest.approx(direct, rel=1e-12)


def test_cllr_known_values_and_stability():
    labels = np.array([1, 1, 0, 0, 0])
    assert cllr(np.zeros(5), labels) == pytest.approx(1.0, abs=1e-15)  # an uninformative system costs 1 bit
    assert cllr(np.where(labels == 1, 50.0, -50.0), labels) < 1e-20
    # |llr| = 1000 overflows e^llr in the direct formula; wrong, confident LLRs cost |llr| / ln 2 bits per class
    assert cllr(np.where(labels == 1, 1000.0, -1000.0), labels) == 0.0
    assert cllr(np.where(labels == 1, -1000.0, 1000.0), labels) == pytest.approx(1000 / math.log(2), rel=1e-12)


@pytest.mark.parametrize("llrs, labels, message", [
    ([0.0, 1.0], [1], "equally many"),
    ([0.0, np.nan], [1, 0], "NaN or infinite"),
    ([0.0, np.inf], [1, 0], "NaN or infinite"),
    ([0.0, 1.0], [1, 1], "only positives"),
    ([0.0, 1.0], [0, 0], "only negatives"),
    ([0.0, 1.0], [1, 2], "0 or 1"),
    ([], [], "equally many"),
])
def test_cllr_rejects_bad_input(llrs, labels, message):
    with pytest.raises(ValueError, match=message):
        cllr(llrs, labels)


# --- fit_logistic ---------------------------------------------------------------------------------------------

# Standard errors of (w, b) at N = 20000, measured over 300 seeds: balanced at prior 0.5, 0.013 and 0.027; at
# prior 0.01 (which weights the targets down), 0.021 and 0.047; 10% targets, 0.021 and 0.056 at either prior. The tolerance is 4 of them (a false failure about once in 10^4 runs). The
# errors these catch are far larger: a missing logit(prior) offset moves b by 4.6 at prior 0.01, missing class
# weights move it by logit(0.1) = -2.2 at 10% targets, a wrong back-mapping of the standardisation moves both.
@pytest.mark.parametrize("target_fraction, prior, se_w, se_b", [
    (0.5, 0.5, 0.013, 0.027),
    (0.1, 0.5, 0.021, 0.056),
    (0.1, 0.01, 0.021, 0.056),
    (0.5, 0.01, 0.021, 0.047),
])
def test_fit_recovers_the_true_llr_of_gaussian_classes(target_fraction, prior, se_w, se_b):
    x, labels = gaussian_data(1, target_fraction)
    cal = fit_logistic(x, labels, prior=prior)
    assert cal.prior == prior and len(cal.weights) == 1
    assert cal.weights[0] == pytest.approx(TRUE_W, abs=4 * se_w)
    assert cal.bias == pytest.approx(TRUE_B, abs=4 * se_b)
    np.testing.assert_allclose(cal.llr(x), cal.weights[0] * x + cal.bias)


def test_fit_is_the_cllr_optimum_at_prior_half():
    # At prior 0.5 and l2 = 0 the objective is Cllr * ln 2. Unequal variances make the linear model
    # misspecified, so the optimum is a property of the objective alone, not of the data's true LLR.
    rng = np.random.default_rng(2)
    labels = (rng.random(3000) < 0.3).astype(int)
    x = np.where(labels == 1, rng.normal(2.0, 0.5, 3000), rng.normal(0.0, 2.0, 3000))
    cal = fit_logistic(x, labels, prior=0.5, l2=0.0)
    w, b = cal.weights[0], cal.bias
    best = cllr(cal.llr(x), labels)
    assert best * math.log(2) == pytest.approx(objective(w, b, x, labels, 0.5, 0.0), rel=1e-12)
    for pw, pb in perturbations(w, b, (1e-3, 1e-2, 1e-1)):
        assert cllr(pw * x + pb, labels) > best


@pytest.mark.parametrize("prior", [0.5, 0.01, 0.9])
def test_fit_minimises_the_prior_weighted_objective(prior):
    rng = np.random.default_rng(3)
    labels = (rng.random(3000) < 0.3).astype(int)
    x = np.where(labels == 1, rng.normal(2.0, 0.5, 3000), rng.normal(0.0, 2.0, 3000))
    cal = fit_logistic(x, labels, prior=prior, l2=1e-3)
    w, b = cal.weights[0], cal.bias
    best = objective(w, b, x, labels, prior, 1e-3)
    # the objective is ~0.5 * curvature * delta^2 above the optimum: ~1e-8 at delta 1e-3, well above rounding
    for pw, pb in perturbations(w, b, (1e-3, 1e-2, 1e-1)):
        assert objective(pw, pb, x, labels, prior, 1e-3) > best


def test_prior_changes_a_misspecified_fit():
    # the prior must reach the fit: with a misspecified model, the best line depends on the operating point
    rng = np.random.default_rng(3)
    labels = (rng.random(3000) < 0.3).astype(int)
    x = np.where(labels == 1, rng.normal(2.0, 0.5, 3000), rng.normal(0.0, 2.0, 3000))
    a, b = fit_logistic(x, labels, prior=0.5), fit_logistic(x, labels, prior=0.01)
    assert abs(a.weights[0] - b.weights[0]) > 0.1


def test_separable_data_gives_a_finite_converged_fit():
    rng = np.random.default_rng(4)
    x = np.r_[rng.uniform(1, 2, 300), rng.uniform(-2, -1, 700)]
    labels = np.r_[np.ones(300, int), np.zeros(700, int)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a non-convergence warning fails the test
        cal = fit_logistic(x, labels)
    w, b = cal.weights[0], cal.bias
    assert math.isfinite(w) and math.isfinite(b) and w > 1
    llr = cal.llr(x)
    assert llr[labels == 1].min() > 0 > llr[labels == 0].max()
    # converged, not stopped early: the l2 term balances the vanishing loss only at the optimum
    best = objective(w, b, x, labels, 0.5, 1e-6)
    for pw, pb in perturbations(w, b, (1e-2, 1e-1, 1.0)):
        assert objective(pw, pb, x, labels, 0.5, 1e-6) > best


@pytest.mark.parametrize("seed", [1, 3])
@pytest.mark.parametrize("prior", [0.01, 0.99])
def test_line_search_keeps_newton_from_overshooting(seed, prior):
    # Few, nearly separated trials at an extreme prior: a full Newton step from the start overshoots to
    # |w| ~ 1e4 on these seeds (checked with the line search removed); the damped steps reach the optimum.
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(60, int), np.zeros(140, int)]
    x = rng.normal(np.where(labels == 1, 4.0, 0.0), 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cal = fit_logistic(x, labels, prior=prior)
    w, b = cal.weights[0], cal.bias
    best = objective(w, b, x, labels, prior, 1e-6)
    for pw, pb in perturbations(w, b, (1e-3, 1e-2, 1e-1)):
        assert objective(pw, pb, x, labels, prior, 1e-6) > best


def test_noise_feature_gets_a_near_zero_weight():
    x, labels = gaussian_data(5, 0.5, noise_feature=True)
    cal = fit_logistic(x, labels)
    # standard errors at N = 20000 (300 seeds): 0.013 for the informative weight, 0.017 for the noise one
    assert cal.weights[0] == pytest.approx(TRUE_W, abs=4 * 0.013)
    assert abs(cal.weights[1]) < 4 * 0.017
    assert cal.bias == pytest.approx(TRUE_B, abs=4 * 0.027)


def test_fit_is_equivariant_to_feature_offset_and_scale():
    # the internal standardisation must be undone exactly: an affine change of a feature leaves the LLRs alone
    x, labels = gaussian_data(6, 0.2)
    base = fit_logistic(x, labels, l2=0.0)
    moved = fit_logistic(1000.0 * x + 5000.0, labels, l2=0.0)
    np.testing.assert_allclose(moved.llr(1000.0 * x + 5000.0), base.llr(x), rtol=0, atol=1e-7)
    assert moved.weights[0] == pytest.approx(base.weights[0] / 1000.0, rel=1e-8)
    # [N] and [N, 1] are the same input; a constant column gets no weight (the bias absorbs it)
    assert fit_logistic(x[:, None], labels) == fit_logistic(x, labels)
    const = fit_logistic(np.c_[x, np.full(N, 7.0)], labels)
    # "no weight" up to rounding: its share of any LLR (weight x 7) stays far below the 1e-9 the LLRs agree to
    # (numpy 2.4 leaves ~3e-22 where earlier versions gave exactly 0)
    assert abs(const.weights[1]) * 7.0 < 1e-12
    np.testing.assert_allclose(const.llr(np.c_[x, np.full(N, 7.0)]), fit_logistic(x, labels).llr(x), atol=1e-9)


def test_fit_warns_when_newton_has_not_converged():
    x, labels = gaussian_data(7, 0.5)
    with pytest.warns(RuntimeWarning, match="did not converge in 1 steps"):
        fit_logistic(x, labels, max_iter=1)


@pytest.mark.parametrize("features, labels, kwargs, message", [
    ([0.0, 1.0, 2.0], [1, 0], {}, "equally many"),
    ([0.0, np.nan], [1, 0], {}, "NaN or infinite"),
    ([0.0, 1.0], [1, 1], {}, "only positives"),
    ([0.0, 1.0], [0, 2], {}, "0 or 1"),
    (np.zeros((2, 1, 1)), [1, 0], {}, "shape"),
    (np.zeros((2, 0)), [1, 0], {}, "shape"),
    ([0.0, 1.0], [1, 0], {"prior": 0.0}, "prior"),
    ([0.0, 1.0], [1, 0], {"prior": 1.0}, "prior"),
    ([0.0, 1.0], [1, 0], {"l2": -1.0}, "l2"),
    ([0.0, 1.0], [1, 0], {"max_iter": 0}, "max_iter"),
])
def test_fit_rejects_bad_input(features, labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit_logistic(features, labels, **kwargs)


# --- LinearCalibration ----------------------------------------------------------------------------------------

def test_calibration_round_trips_through_json():
    cal = fit_logistic(*gaussian_data(8, 0.3, noise_feature=True), prior=0.05)
    d = json.loads(json.dumps(cal.to_dict()))
    back = LinearCalibration.from_dict(d, "cal.json")
    assert back == cal and hash(back) == hash(cal)
    x = np.random.default_rng(0).normal(size=(10, 2))
    np.testing.assert_array_equal(back.llr(x), cal.llr(x))


@pytest.mark.parametrize("d, message", [
    ({"weights": [1.0], "bias": 0.0}, "missing key"),
    ({"weights": [1.0], "bias": 0.0, "prior": 0.5, "scale": 2}, "unknown key"),
    ({"weights": 1.0, "bias": 0.0, "prior": 0.5}, "list of numbers"),
    ({"weights": [], "bias": 0.0, "prior": 0.5}, "list of numbers"),
    ({"weights": ["1.0"], "bias": 0.0, "prior": 0.5}, "list of numbers"),
    ({"weights": [1.0], "bias": True, "prior": 0.5}, "list of numbers"),
    ({"weights": [1.0], "bias": 0.0, "prior": 1.5}, "prior"),
    ({"weights": [float("nan")], "bias": 0.0, "prior": 0.5}, "finite"),
    ([1.0, 0.0, 0.5], "mapping"),
])
def test_from_dict_names_the_file_on_malformed_input(d, message):
    with pytest.raises(ConfigError, match=message) as info:
        LinearCalibration.from_dict(d, "exp/cal.json")
    assert str(info.value).startswith("exp/cal.json: ") and "\n" not in str(info.value)


def test_llr_checks_the_feature_count():
    cal = LinearCalibration((1.0, 2.0), 0.5, 0.5)
    np.testing.assert_array_equal(cal.llr([[1.0, 1.0], [0.0, -1.0]]), [3.5, -1.5])
    with pytest.raises(ValueError, match="3 columns"):
        cal.llr(np.zeros((4, 3)))


# --- QMF ------------------------------------------------------------------------------------------------------

def test_qmf_features_values_and_symmetry():
    scores = [0.7, -0.1]
    enroll_s, test_s, enroll_n, test_n = [2.0, 30.0], [8.0, 5.0], [310.0, 250.0], [290.0, 260.0]
    f = qmf_features(scores, enroll_s, test_s, enroll_n, test_n)
    assert f.shape == (2, len(QMF_COLUMNS)) and f.dtype == np.float64
    np.testing.assert_allclose(f, [[0.7, math.log(2.0), math.log(8.0), 290.0, 310.0],
                                   [-0.1, math.log(5.0), math.log(30.0), 250.0, 260.0]])
    rng = np.random.default_rng(9)
    s, e, t, en, tn = rng.normal(size=100), rng.uniform(1, 20, 100), rng.uniform(1, 20, 100), *rng.uniform(5, 9, (2, 100))
    np.testing.assert_array_equal(qmf_features(s, e, t, en, tn), qmf_features(s, t, e, tn, en))


@pytest.mark.parametrize("args, message", [
    (([0.1], [1.0], [0.0], [1.0], [1.0]), "positive"),
    (([0.1], [1.0, 2.0], [1.0], [1.0], [1.0]), "equally many"),
    (([np.nan], [1.0], [1.0], [1.0], [1.0]), "NaN"),
])
def test_qmf_features_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        qmf_features(*args)


# --- sample_trials --------------------------------------------------------------------------------------------

# interleaved, so that a mix-up between positions and speaker-sorted order shows; "b" has a single utterance
SPEAKERS = np.array(["c", "a", "d", "c", "b", "a", "c", "d", "a", "c"])


def test_sample_trials_labels_balance_and_no_self_trials():
    enroll, test, labels = sample_trials(SPEAKERS, 1001, seed=0)
    assert enroll.shape == test.shape == labels.shape == (1001,)
    assert set(np.unique(labels)) == {0, 1} and labels.sum() == 500
    np.testing.assert_array_equal(labels, (SPEAKERS[enroll] == SPEAKERS[test]).astype(int))
    assert (enroll != test).all()
    assert "b" not in set(SPEAKERS[enroll[labels == 1]])  # one utterance cannot give a target trial
    assert not (labels[:500] == 1).all()  # shuffled, not targets first


def test_sample_trials_is_deterministic_given_the_seed():
    a, b, c = sample_trials(SPEAKERS, 200, seed=3), sample_trials(SPEAKERS, 200, seed=3), sample_trials(SPEAKERS, 200, seed=4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert any((x != z).any() for x, z in zip(a, c))


def test_sample_trials_draws_pairs_uniformly():
    # target: enrollment uniform over the 9 utterances of speakers with >= 2, test uniform over the speaker's
    # other ones; non-target: enrollment uniform over all 10, test uniform over the other speakers' utterances
    n = 200000
    enroll, test, labels = sample_trials(SPEAKERS, n, seed=1)
    counts = {s: int((SPEAKERS == s).sum()) for s in set(SPEAKERS)}
    observed = np.zeros((10, 10))
    np.add.at(observed, (enroll, test), 1)
    for e in range(10):
        for t in range(10):
            same = SPEAKERS[e] == SPEAKERS[t]
            if e == t or (same and counts[SPEAKERS[e]] < 2):
                p = 0.0
            elif same:
                p = 0.5 / 9 / (counts[SPEAKERS[e]] - 1)
            else:
                p = 0.5 / 10 / (10 - counts[SPEAKERS[e]])
            se = math.sqrt(n * p * (1 - p))
            assert abs(observed[e, t] - n * p) <= 5 * se, (e, t, observed[e, t], n * p)


@pytest.mark.parametrize("speakers, n_trials, message", [
    (["a", "a", "a"], 10, "at least 2 speakers"),
    (["a", "b", "c"], 10, "at least 2 utterances"),
    (["a", "a", "b"], 1, "n_trials"),
])
def test_sample_trials_rejects_impossible_requests(speakers, n_trials, message):
    with pytest.raises(ValueError, match=message):
        sample_trials(speakers, n_trials, seed=0)
