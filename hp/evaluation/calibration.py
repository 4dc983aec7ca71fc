"""Score calibration: prior-weighted linear logistic regression (as in BOSARIS/FoCal) mapping scores, or a few
quality features (QMF, for SV), to natural-log likelihood ratios; hp.evaluation.metrics.cllr judges the result.

Labels as in hp.evaluation.metrics (whose input checks apply): 1 = target / bona fide, 0 = non-target / spoof.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from hp.errors import ConfigError
from hp.evaluation.metrics import check_finite, check_labels

# Column order of qmf_features(); a QMF calibration's weights follow it.
QMF_COLUMNS = ("score", "log_min_seconds", "log_max_seconds", "min_norm", "max_norm")

# Newton stops once half the Newton decrement (an estimate of objective - optimum) falls below this. The
# objective is O(1) (about ln 2 at the start), so this is near float64 resolution; Newton converges
# quadratically, so reaching it costs one or two steps more than a loose tolerance.
_TOL = 1e-14


def _as_matrix(features, what: str = "features") -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"{what} must be [N] or [N, F] with F >= 1, got shape {x.shape}")
    return x


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)  # log(1 + e^x) without overflow


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


@dataclass(frozen=True)
class LinearCalibration:
    """llr = weights . features + bias (natural log); `prior` is the training prior, kept as a record only."""

    weights: tuple[float, ...]
    bias: float
    prior: float

    def __post_init__(self) -> None:
        # coerce (a list would make the frozen dataclass unhashable) and validate once, for every constructor
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        object.__setattr__(self, "bias", float(self.bias))
        object.__setattr__(self, "prior", float(self.prior))
        if not self.weights:
            raise ValueError("a calibration needs at least one weight")
        if not all(math.isfinite(v) for v in (*self.weights, self.bias)):
            raise ValueError(f"calibration weights and bias must be finite, got {self.weights} and {self.bias}")
        if not 0 < self.prior < 1:
            raise ValueError(f"calibration prior must be in (0, 1), got {self.prior}")

    def llr(self, features) -> np.ndarray:
        """Calibrated LLRs [N] of features [N, F] (or [N] when F = 1)."""
        x = _as_matrix(features)
        if x.shape[1] != len(self.weights):
            raise ValueError(f"features have {x.shape[1]} columns, the calibration {len(self.weights)} weights")
        return x @ np.asarray(self.weights) + self.bias

    def to_dict(self) -> dict:
        return {"weights": list(self.weights), "bias": self.bias, "prior": self.prior}

    @classmethod
    def from_dict(cls, d: dict, source: str = "calibration.json") -> LinearCalibration:
        """Read to_dict()'s output; `source` names the file in errors."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a mapping, got {type(d).__name__}")
        keys = {"weights", "bias", "prior"}
        if set(d) != keys:
            missing, unknown = sorted(keys - set(d)), sorted(set(d) - keys)
            raise ConfigError(f"{source}: calibration " + "; ".join(
                part for part in (missing and f"missing key(s) {', '.join(missing)}",
                                  unknown and f"unknown key(s) {', '.join(unknown)}") if part))
        weights = d["weights"]
        numbers = [*weights, d["bias"], d["prior"]] if isinstance(weights, list) and weights else []
        # bool is an int subclass, and float() would take numeric strings: only real JSON numbers pass
        if not numbers or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
            raise ConfigError(f"{source}: calibration weights must be a non-empty list of numbers and bias, prior "
                              f"numbers, got weights={weights!r}, bias={d['bias']!r}, prior={d['prior']!r}")
        try:
            return cls(tuple(weights), d["bias"], d["prior"])
        except ValueError as e:
            raise ConfigError(f"{source}: {e}") from None


def fit_logistic(features, labels, prior: float = 0.5, l2: float = 1e-6, max_iter: int = 100) -> LinearCalibration:
    """Prior-weighted linear logistic regression: the (w, b) minimising

        prior * mean_targets softplus(-(w.x + b + logit(prior)))
        + (1 - prior) * mean_nontargets softplus(w.x + b + logit(prior)) + l2 / 2 * |w|^2,

    so that w.x + b is a natural-log LLR: the per-class means remove the training data's class proportions, and
    the logit(prior) offset keeps the prior out of the LLR; the prior only picks the operating points the fit
    favours when a line cannot be exact. `l2` acts on w in the features' own units, not on b, and keeps w finite
    on separable data. features [N, F] or [N] (F = 1), labels 0/1. Warns (RuntimeWarning) if Newton's method
    has not converged after `max_iter` steps.
    """
    x = _as_matrix(features)
    y = check_labels(labels, x.shape[0], "feature rows")
    check_finite(x, "features")
    if not 0 < prior < 1:
        raise ValueError(f"prior must be in (0, 1), got {prior}")
    if not (l2 >= 0 and math.isfinite(l2)):
        raise ValueError(f"l2 must be a finite number >= 0, got {l2}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")

    # Standardise so that the Hessian is well conditioned whatever the features' offsets and scales (a score
    # near 0.5 beside log durations near 2 and norms near 300). A constant column keeps scale 1: its weight is
    # then only held by the penalty, as the bias absorbs it.
    mean, scale = x.mean(0), x.std(0)
    scale[scale == 0] = 1.0
    a = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])  # the last parameter is the bias
    # penalty on w = v / scale in the standardised parameters v, none on the bias
    penalty = np.append(l2 / scale**2, 0.0)
    sign = np.where(y, 1.0, -1.0)
    # per-trial weights: each class's mean, weighted by its prior
    c = np.where(y, prior / y.sum(), (1 - prior) / (~y).sum())
    offset = math.log(prior / (1 - prior))

    def objective(theta: np.ndarray) -> float:
        return float(c @ _softplus(-sign * (a @ theta + offset)) + 0.5 * penalty @ theta**2)

    theta = np.zeros(a.shape[1])  # v = 0, bias 0 is the exact optimum without features: a sound start
    value = objective(theta)
    converged = False
    for _ in range(max_iter):
        s = a @ theta + offset
        grad = a.T @ (-c * sign * _sigmoid(-sign * s)) + penalty * theta
        hess = (a.T * (c * _sigmoid(s) * _sigmoid(-s))) @ a + np.diag(penalty)
        # lstsq rather than solve: with l2 = 0 a constant column leaves the Hessian singular
        step = -np.linalg.lstsq(hess, grad, rcond=None)[0]
        decrement = float(-grad @ step)
        if decrement <= 2 * _TOL:
            theta, converged = theta + step, True  # quadratic phase: the full step only sharpens the optimum
            break
        t = 1.0
        while True:  # backtracking (Armijo) line search: plain Newton can overshoot on flat, near-separable data
            new = objective(theta + t * step)
            if new <= value - 1e-4 * t * decrement:
                break
            t *= 0.5
            if t < 1e-12:
                break
        if t < 1e-12:
            # no decrease found: the objective is flat to float64 resolution; fine if Newton says it is near
            converged = decrement < 1e-8
            break
        theta, value = theta + t * step, new
    if not converged:
        warnings.warn(f"fit_logistic: Newton's method did not converge in {max_iter} steps", RuntimeWarning,
                      stacklevel=2)

    v, bias = theta[:-1], theta[-1]
    w = v / scale
    return LinearCalibration(tuple(w.tolist()), float(bias - w @ mean), float(prior))


def qmf_features(scores, enroll_seconds, test_seconds, enroll_norms, test_norms) -> np.ndarray:
    """QMF features [N, 5] of SV trials, columns QMF_COLUMNS: score, log of the shorter and of the longer
    duration (seconds), smaller and larger embedding norm. Symmetric in enrollment/test, as trials are."""
    cols = [np.asarray(v, dtype=np.float64).ravel()
            for v in (scores, enroll_seconds, test_seconds, enroll_norms, test_norms)]
    names = ("scores", "enroll_seconds", "test_seconds", "enroll_norms", "test_norms")
    if cols[0].size == 0 or any(v.size != cols[0].size for v in cols):
        raise ValueError("qmf_features needs equally many values of each input, got "
                         + ", ".join(f"{n} {v.size}" for n, v in zip(names, cols)))
    for n, v in zip(names, cols):
        check_finite(v, n)
    score, e_sec, t_sec, e_norm, t_norm = cols
    if (e_sec <= 0).any() or (t_sec <= 0).any():
        raise ValueError("durations must be positive seconds")
    return np.stack([score, np.log(np.minimum(e_sec, t_sec)), np.log(np.maximum(e_sec, t_sec)),
                     np.minimum(e_norm, t_norm), np.maximum(e_norm, t_norm)], axis=1)


def sample_trials(speakers, n_trials: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(enroll_idx, test_idx, labels) of `n_trials` random trials among utterances with speaker ids `speakers`.

    n_trials // 2 are target trials (two distinct utterances of one speaker; the enrollment utterance is drawn
    uniformly among those of speakers with >= 2 utterances), the rest non-target (enrollment uniform over all
    utterances, test uniform over the other speakers' ones), in shuffled order. Drawn with replacement, so a
    trial may repeat; never a self-trial. Deterministic given `seed`.
    """
    speakers = np.asarray(speakers).ravel()
    if n_trials < 2:
        raise ValueError(f"n_trials must be >= 2 to hold both classes, got {n_trials}")
    codes, inverse, counts = np.unique(speakers, return_inverse=True, return_counts=True)
    if len(codes) < 2:
        raise ValueError(f"need at least 2 speakers for non-target trials, got {len(codes)}")
    if counts.max() < 2:
        raise ValueError("need a speaker with at least 2 utterances for target trials; every speaker has one")
    # Utterances grouped by speaker: a speaker's utterances are order[start : start + count], so "another
    # utterance of the same speaker" and "an utterance of another speaker" are each one uniform integer, shifted
    # past the excluded ones; exact, with no rejection loop.
    order = np.argsort(inverse, kind="stable")
    start = np.concatenate(([0], np.cumsum(counts)[:-1]))
    position = np.empty(len(speakers), dtype=np.int64)
    position[order] = np.arange(len(speakers))  # each utterance's place in `order`
    rng = np.random.default_rng(seed)
    n_target = n_trials // 2
    n_non = n_trials - n_target

    eligible = np.flatnonzero(counts[inverse] >= 2)
    enroll_t = eligible[rng.integers(0, len(eligible), n_target)]
    spk = inverse[enroll_t]
    k = rng.integers(0, counts[spk] - 1)  # one of the speaker's other count - 1 utterances
    k += k >= position[enroll_t] - start[spk]
    test_t = order[start[spk] + k]

    enroll_n = rng.integers(0, len(speakers), n_non)
    spk = inverse[enroll_n]
    k = rng.integers(0, len(speakers) - counts[spk])  # one of the utterances outside the speaker's block
    k += np.where(k >= start[spk], counts[spk], 0)
    test_n = order[k]

    enroll = np.concatenate([enroll_t, enroll_n])
    test = np.concatenate([test_t, test_n])
    labels = np.concatenate([np.ones(n_target, dtype=np.int64), np.zeros(n_non, dtype=np.int64)])
    shuffle = rng.permutation(n_trials)
    return enroll[shuffle], test[shuffle], labels[shuffle]
