"""The speaker-level bootstrap (hp.evaluation.bootstrap) against a naive one that re-forms each resample's trial list
from speaker copies, one by one, and scores it with hp.evaluation.metrics; the intervals it puts in
hp.evaluation.scoring's metrics."""
import itertools

import numpy as np
import pandas as pd
import pytest

from hp.evaluation import metrics
from hp.evaluation.bootstrap import MIN_SPOOFS_FOR_INTERVAL, Bootstrap, paired, replicates, speaker_index
from hp.evaluation.metrics import CM_COSTS, SV_COSTS
from hp.evaluation.scoring import cm_breakdown, cm_metrics, sv_metrics

COSTS = {"min_dcf_0.01": (0.01, 1.0, 1.0), "min_dcf_0.05": (0.05, 1.0, 1.0)}


def sv_set(speakers: int = 6, utterances: int = 3, seed: int = 0):
    """Every pair of test utterances as a trial; target scores shifted up, with ties (scores rounded)."""
    rng = np.random.default_rng(seed)
    utts = [(s, u) for s in range(speakers) for u in range(utterances)]
    pairs = list(itertools.combinations(range(len(utts)), 2))
    enroll = np.array([utts[i][0] for i, _ in pairs])
    test = np.array([utts[j][0] for _, j in pairs])
    labels = (enroll == test).astype(int)
    scores = np.round(rng.normal(size=len(pairs)) + 1.5 * labels, 1)
    return enroll, test, labels, scores


def naive_sv(enroll, test, labels, scores, drawn) -> tuple[np.ndarray, np.ndarray]:
    """One resample's trial list, built as the bootstrap defines it: each drawn speaker a copy of its own; a copy's
    target trials once; for every ordered pair of copies of different speakers, the non-target trials between them
    (each original trial has one enroll and one test side, so each (copy of enroll, copy of test) pair takes it)."""
    s, y = [], []
    copies = list(enumerate(drawn))
    for _, spk in copies:
        keep = (enroll == spk) & (test == spk)
        s.append(scores[keep]), y.append(labels[keep])
    for (i, a), (j, b) in itertools.product(copies, copies):
        if i != j and a != b:
            keep = (enroll == a) & (test == b)
            s.append(scores[keep]), y.append(labels[keep])
    return np.concatenate(s), np.concatenate(y)


def test_weighted_replicates_equal_a_naive_bootstrap_that_copies_speakers():
    enroll, test, labels, scores = sv_set()
    boot = Bootstrap(resamples=40, seed=3)
    n, a, b = speaker_index(enroll, test)
    counts = boot.counts(n)
    reps = replicates(scores, labels, counts, a, b, COSTS)
    rng = np.random.default_rng(3)
    draws = rng.integers(0, n, size=(40, n))  # Bootstrap.counts' draws, in order
    for r in range(40):
        s, y = naive_sv(enroll, test, labels, scores, draws[r])
        assert np.bincount(draws[r], minlength=n).tolist() == counts[r].tolist()
        if y.all() or not y.any():
            assert np.isnan(reps["eer"][r])
            continue
        assert reps["eer"][r] == pytest.approx(metrics.eer(s, y), abs=1e-12)
        for name, cost in COSTS.items():
            assert reps[name][r] == pytest.approx(metrics.min_dcf(s, y, *cost), abs=1e-12)


def test_cm_utterances_are_weighted_by_their_speakers_draws():
    rng = np.random.default_rng(1)
    speakers = np.repeat(np.arange(8), 6)
    labels = np.tile([1, 1, 0, 0, 0, 0], 8)
    scores = rng.normal(size=len(labels)) + labels
    n, a, b = speaker_index(speakers)
    assert n == 8 and (b == -1).all()
    boot = Bootstrap(resamples=30, seed=0)
    counts = boot.counts(n)
    reps = replicates(scores, labels, counts, a, b, {"min_dcf": (0.05, 1.0, 10.0)})
    for r in range(30):
        take = np.repeat(np.arange(len(labels)), counts[r][a])
        s, y = scores[take], labels[take]
        assert reps["eer"][r] == pytest.approx(metrics.eer(s, y), abs=1e-12)
        assert reps["min_dcf"][r] == pytest.approx(metrics.min_dcf(s, y, 0.05, 1.0, 10.0), abs=1e-12)


def test_every_resample_draws_the_test_sets_size_and_a_seed_repeats_them():
    boot = Bootstrap(resamples=1000, seed=7)
    counts = boot.counts(40)
    assert counts.shape == (1000, 40) and (counts.sum(1) == 40).all()
    assert (Bootstrap(1000, 7).counts(40) == counts).all() and not (Bootstrap(1000, 8).counts(40) == counts).all()
    # each speaker is drawn 1 time per resample on average
    assert counts.mean() == pytest.approx(1.0) and abs(counts.mean(0) - 1).max() < 0.15


def test_intervals_cover_the_estimate_and_narrow_with_more_speakers():
    boot = Bootstrap(resamples=1000, seed=0)
    widths = []
    for speakers in (8, 40):
        enroll, test, labels, scores = sv_set(speakers, utterances=4, seed=speakers)
        point = {"eer": metrics.eer(scores, labels), "min_dcf_0.01": metrics.min_dcf(scores, labels, 0.01)}
        out, reps = boot.intervals(point, scores, labels, {"min_dcf_0.01": COSTS["min_dcf_0.01"]}, enroll, test)
        assert set(out) == {"eer", "min_dcf_0.01", "eer_ci95", "min_dcf_0.01_ci95"} and len(reps["eer"]) == 1000
        lo, hi = out["eer_ci95"]["lo"], out["eer_ci95"]["hi"]
        assert lo <= point["eer"] <= hi
        widths.append(hi - lo)
    assert widths[1] < 0.6 * widths[0]  # ~ 1 / sqrt(5) of it


def test_a_resample_of_one_speaker_is_left_out():
    """Two SV speakers: a resample that draws one of them twice has no non-target trial (copies of one speaker form
    none), so no EER: its replicate is NaN and the interval is that of the others."""
    enroll, test, labels, scores = sv_set(speakers=2)
    boot = Bootstrap(resamples=50, seed=0)
    n, a, b = speaker_index(enroll, test)
    counts = boot.counts(n)
    reps = replicates(scores, labels, counts, a, b, COSTS)
    one = (counts == 2).any(axis=1)
    assert one.any() and (~one).any()
    assert np.isnan(reps["eer"][one]).all() and not np.isnan(reps["eer"][~one]).any()
    assert boot.interval(reps["eer"]) == boot.interval(reps["eer"][~one])
    assert boot.interval(np.full(5, np.nan)) is None


@pytest.mark.parametrize("kwargs", [{"resamples": 0}, {"resamples": 1.5}, {"confidence": 1.0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        Bootstrap(**kwargs)


def test_scoring_puts_an_interval_beside_each_error_rate():
    """hp.evaluation.scoring's SV and CM metrics carry the intervals of Bootstrap.intervals; a CM attack with fewer than
    MIN_SPOOFS_FOR_INTERVAL spoofs, and a codec, carry none."""
    boot = Bootstrap(resamples=200, seed=1)
    enroll, test, labels, scores = sv_set(speakers=8)
    sv = sv_metrics(scores, labels, (enroll, test), boot)
    direct, _ = boot.intervals({}, scores, labels, SV_COSTS, enroll, test)
    assert {k: sv[k] for k in direct} == direct and set(direct) == {"eer_ci95", "min_dcf_0.01_ci95",
                                                                    "min_dcf_0.05_ci95"}
    rng = np.random.default_rng(0)
    many, few = MIN_SPOOFS_FOR_INTERVAL, MIN_SPOOFS_FOR_INTERVAL - 1
    rows = pd.DataFrame({"label": ["bonafide"] * 40 + ["spoof"] * (many + few),
                         "attack": ["bonafide"] * 40 + ["A17"] * many + ["A18"] * few,
                         "speaker": rng.integers(0, 10, 40 + many + few).astype(str), "codec": "-"})
    bona = (rows["label"] == "bonafide").to_numpy()
    llrs = rng.normal(np.where(bona, 1.0, -1.0))
    out = cm_breakdown(rows, llrs, bootstrap=boot)
    keep = bona | (rows["attack"] == "A17").to_numpy()
    direct, _ = boot.intervals({}, llrs[keep], bona[keep], CM_COSTS, rows["speaker"].to_numpy()[keep])
    assert {k: out["attacks"]["A17"][k] for k in direct} == direct and set(direct) == {"eer_ci95", "min_dcf_ci95"}
    assert not any(k.endswith("_ci95") for k in out["attacks"]["A18"]) and "eer" in out["attacks"]["A18"]
    assert not any(k.endswith("_ci95") for k in out["codecs"]["-"])
    whole = cm_metrics(llrs, bona, rows["speaker"].to_numpy(), boot)
    lo, hi = whole["eer_ci95"]["lo"], whole["eer_ci95"]["hi"]
    assert lo <= whole["eer"] <= hi


def test_a_paired_difference_is_the_difference_of_the_same_resamples():
    """Two systems on one trial list: the difference's interval is that of per-resample differences (checked by the
    naive bootstrap), and a system against itself differs by exactly 0."""
    enroll, test, labels, scores = sv_set(speakers=8, seed=2)
    other = scores + np.random.default_rng(5).normal(scale=0.5, size=len(scores))
    boot = Bootstrap(resamples=60, seed=4)
    out = paired(boot, other, scores, labels, COSTS, enroll, test)
    assert out["eer"] == pytest.approx(metrics.eer(other, labels) - metrics.eer(scores, labels))
    draws = np.random.default_rng(4).integers(0, 8, size=(60, 8))
    diffs = []
    for r in range(60):
        s, y = naive_sv(enroll, test, labels, other, draws[r])
        s0, _ = naive_sv(enroll, test, labels, scores, draws[r])
        diffs.append(metrics.eer(s, y) - metrics.eer(s0, y))
    assert out["eer_ci95"] == pytest.approx(boot.interval(np.array(diffs)), abs=1e-12)
    same = paired(boot, scores, scores, labels, COSTS, enroll, test)
    zero = {"lo": 0.0, "hi": 0.0}
    assert same["eer"] == 0 and same["eer_ci95"] == zero and same["min_dcf_0.01_ci95"] == zero
