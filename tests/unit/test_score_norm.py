"""AS-norm and SV scoring post-processing against naive per-trial loops."""
import numpy as np
import pytest

from hp.evaluation.score_norm import as_norm, cohort_statistics, score_trials, speaker_cohort, trial_scores


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _naive_asnorm(emb, enroll, test, cohort, top_n):
    out = []
    for e, t in zip(enroll, test):
        s = _cos(emb[e], emb[t])
        sides = []
        for u in (e, t):
            top = np.sort([_cos(emb[u], c) for c in cohort])[::-1][:top_n]
            sides.append((s - top.mean()) / top.std())
        out.append(0.5 * sum(sides))
    return np.array(out)


def test_as_norm_matches_a_naive_loop():
    rng = np.random.default_rng(0)
    emb, cohort = rng.normal(size=(30, 16)), rng.normal(size=(50, 16))
    enroll, test = rng.integers(0, 30, 200), rng.integers(0, 30, 200)
    mu, sd = cohort_statistics(emb, cohort, top_n=7, chunk=8)  # several chunks
    fast = as_norm(trial_scores(emb, enroll, test), (mu[enroll], sd[enroll]), (mu[test], sd[test]))
    # float32 cosines (|error| ~1e-7) divided by top-N stds of ~0.1: 1e-5 is ample, and far below real changes
    np.testing.assert_allclose(fast, _naive_asnorm(emb, enroll, test, cohort, 7), atol=1e-5)


def test_cohort_is_per_speaker_mean_of_normalised_embeddings():
    emb = np.array([[3.0, 0.0], [0.0, 1.0], [0.0, 5.0]])
    cohort = speaker_cohort(emb, ["b", "a", "b"])
    np.testing.assert_allclose(cohort, [[0.0, 1.0], [0.5, 0.5]])  # sorted speakers: a, b


def test_cohort_statistics_checks_top_n():
    emb = np.ones((2, 3))
    with pytest.raises(ValueError, match="top_n 5 exceeds the cohort's 4"):
        cohort_statistics(emb, np.ones((4, 3)), 5)
    with pytest.raises(ValueError, match="top_n must be >= 1"):
        cohort_statistics(emb, np.ones((4, 3)), 0)


def test_score_trials_mean_subtraction_and_small_cohorts():
    rng = np.random.default_rng(1)
    test_emb, train_emb = rng.normal(size=(6, 4)) + 5.0, rng.normal(size=(12, 4)) + 5.0
    speakers = np.repeat(["s1", "s2", "s3"], 4)
    enroll, test = np.array([0, 1, 2]), np.array([3, 4, 5])
    plain = score_trials(test_emb, enroll, test, train_emb, speakers, mean_subtraction=False, top_n=None)
    assert set(plain) == {"raw"}
    np.testing.assert_allclose(plain["raw"], [_cos(test_emb[e], test_emb[t]) for e, t in zip(enroll, test)],
                               atol=1e-6)
    centred = score_trials(test_emb, enroll, test, train_emb, speakers, top_n=300)  # 3 speakers: all of them
    mean = train_emb.mean(0)
    np.testing.assert_allclose(centred["raw"], [_cos(test_emb[e] - mean, test_emb[t] - mean)
                                                for e, t in zip(enroll, test)], atol=1e-6)
    cohort = speaker_cohort(train_emb - mean, speakers)
    np.testing.assert_allclose(centred["asnorm"], _naive_asnorm(test_emb - mean, enroll, test, cohort, 3),
                               atol=1e-5)


def test_training_trials_leave_their_own_speaker_out_of_the_cohort():
    """QMF calibrates on trials among training utterances: each side's statistics must skip its own speaker."""
    rng = np.random.default_rng(2)
    speakers = np.repeat(["s0", "s1", "s2", "s3", "s4"], 4)
    train = rng.normal(size=(20, 8)) + np.repeat(rng.normal(size=(5, 8)) * 2, 4, axis=0)
    enroll, test = rng.integers(0, 20, 60), rng.integers(0, 20, 60)
    got = score_trials(train, enroll, test, train, speakers, mean_subtraction=False, top_n=3, speakers=speakers)
    cohort = speaker_cohort(train, speakers)  # rows in sorted speaker order s0..s4
    expected = []
    for e, t in zip(enroll, test):
        s, sides = _cos(train[e], train[t]), []
        for u in (e, t):
            others = [c for k, c in enumerate(cohort) if k != int(speakers[u][1])]
            top = np.sort([_cos(train[u], c) for c in others])[::-1][:3]
            sides.append((s - top.mean()) / top.std())
        expected.append(0.5 * sum(sides))
    np.testing.assert_allclose(got["asnorm"], expected, atol=1e-5)
    plain = score_trials(train, enroll, test, train, speakers, mean_subtraction=False, top_n=3)
    assert np.abs(plain["asnorm"] - got["asnorm"]).max() > 0.1  # the own speaker does sit in the top 3
