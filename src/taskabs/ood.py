"""Out-of-distribution detection and uncertainty metrics (pure numpy functions).

Conventions: ``scores`` are (N,) floats where *larger means more likely positive*;
``is_positive`` is (N,) bool. For OOD detection, pass OOD as the positive class
with a score that grows with "OOD-ness" (negate confidence-like scores such as
max-softmax). Curves and summaries depend only on the ranking of the scores (ties
handled as stated), so they are invariant to the order of the samples and to any
strictly increasing transform of the scores.

Degenerate rule: when one of the two classes is empty, the quantities that need
both (AUROC, FPR at TPR, ROC curve rates) are NaN. Calibration is in :mod:`taskabs.calibration`.

Score functions map a GBI gradient matrix ``g = dL/dz`` of shape (B, C), or
classifier logits (B, C), to a per-example score (B,).
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp, softmax
from scipy.stats import rankdata

__all__ = [
    "auroc",
    "energy_score",
    "fpr_at_tpr",
    "gradient_entropy_score",
    "gradient_max_score",
    "gradient_mean_score",
    "gradient_norm_score",
    "max_softmax_score",
    "roc_curve",
    "softmax_entropy",
]


def _binary(scores, is_positive) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    is_positive = np.asarray(is_positive, dtype=bool).ravel()
    if scores.shape != is_positive.shape:
        raise ValueError(f"scores {scores.shape} and is_positive {is_positive.shape} differ")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return scores, is_positive


# ------------------------------------------------------------------- ranking metrics
def auroc(scores, is_positive) -> float:
    """Area under the ROC curve = P(score_pos > score_neg) + 0.5 P(score_pos = score_neg).

    Computed from average ranks (Mann-Whitney U): with n1 positives, n0 negatives
    and R1 the sum of the positives' ranks among all N (ties get their mean rank),
    AUROC = (R1 - n1 (n1 + 1) / 2) / (n1 n0). O(N log N). NaN if n1 or n0 is 0.

    >>> auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
    0.75
    """
    scores, is_positive = _binary(scores, is_positive)
    n1 = int(is_positive.sum())
    n0 = is_positive.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(scores, method="average")
    return float((ranks[is_positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def roc_curve(scores, is_positive) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points (fpr, tpr, thresholds), each (K + 1,), K = number of distinct scores.

    Point k classifies ``score >= thresholds[k]`` as positive; thresholds are the
    distinct scores in decreasing order, preceded by +inf (the (0, 0) point), so the
    curve runs from (0, 0) to (1, 1). Tied scores move together (a diagonal segment),
    which is what makes the trapezoidal area equal :func:`auroc`.

    >>> fpr, tpr, thr = roc_curve([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
    >>> fpr.tolist(), tpr.tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    scores, is_positive = _binary(scores, is_positive)
    order = np.argsort(-scores, kind="stable")
    s, pos = scores[order], is_positive[order]
    last_of_group = np.r_[s[1:] != s[:-1], True] if s.size else np.zeros(0, dtype=bool)
    tp = np.cumsum(pos)[last_of_group]
    fp = np.cumsum(~pos)[last_of_group]
    n1, n0 = int(is_positive.sum()), int((~is_positive).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.r_[0.0, tp / n1] if n1 else np.full(tp.size + 1, np.nan)
        fpr = np.r_[0.0, fp / n0] if n0 else np.full(fp.size + 1, np.nan)
    return fpr, tpr, np.r_[np.inf, s[last_of_group]]


def fpr_at_tpr(scores, is_positive, *, tpr: float = 0.95) -> float:
    """False-positive rate at the highest threshold whose true-positive rate is >= ``tpr``.

    Thresholds are the observed scores (``score >= t`` is positive). With ties at
    the threshold, all tied negatives count as false positives (no interpolation).
    The OOD literature's FPR95 (Liang et al. 2018; Liu et al. 2020) takes the
    *in-distribution* class as positive with a confidence score: the fraction of
    OOD inputs accepted when 95% of in-distribution inputs are. NaN if a class is
    empty.

    >>> fpr_at_tpr([1, 2, 3, 4, 5], [False, True, False, True, True], tpr=0.9)
    0.5
    """
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    fpr, tprs, _ = roc_curve(scores, is_positive)
    if np.isnan(tprs).any() or np.isnan(fpr).any():
        return float("nan")
    # small tolerance so 19/20 counts as reaching 0.95 despite rounding
    k = int(np.argmax(tprs >= tpr - 1e-12))
    return float(fpr[k])


# ------------------------------------------------------------------- scores
def gradient_norm_score(g) -> np.ndarray:
    """||g||_2 per example: (B, C) -> (B,). Large when the loss is steep in z."""
    return np.linalg.norm(np.asarray(g, dtype=np.float64), axis=-1)


def gradient_max_score(g) -> np.ndarray:
    """max_c (-g_c): (B, C) -> (B,). The steepest loss decrease any single class offers;
    one-step GBI predicts that class."""
    return np.max(-np.asarray(g, dtype=np.float64), axis=-1)


def gradient_mean_score(g) -> np.ndarray:
    """mean_c g_c: (B, C) -> (B,). (1/C) times the derivative of the loss along the
    all-ones direction of z, i.e. of turning every task input up at once; near 0 when
    the input fits some task, positive when extra task drive only hurts the fit.
    """
    return np.mean(np.asarray(g, dtype=np.float64), axis=-1)


def gradient_entropy_score(g, *, temperature: float = 1.0) -> np.ndarray:
    """Entropy (nats) of softmax(-g / temperature): (B, C) -> (B,), in [0, log C].

    Treats -g as log-likelihoods over tasks; high entropy = no class stands out.
    """
    return softmax_entropy(-np.asarray(g, dtype=np.float64) / temperature)


def softmax_entropy(logits) -> np.ndarray:
    """Entropy (nats) of softmax(logits) along the last axis: (B, C) -> (B,)."""
    logits = np.asarray(logits, dtype=np.float64)
    log_p = logits - logsumexp(logits, axis=-1, keepdims=True)
    return -np.sum(np.exp(log_p) * log_p, axis=-1)


def max_softmax_score(logits) -> np.ndarray:
    """Max softmax probability (Hendrycks & Gimpel 2017): (B, C) -> (B,), in [1/C, 1].

    A confidence: larger = more in-distribution.
    """
    return np.max(softmax(np.asarray(logits, dtype=np.float64), axis=-1), axis=-1)


def energy_score(logits, *, temperature: float = 1.0) -> np.ndarray:
    """Free energy E(x) = -T logsumexp(logits / T) (Liu et al. 2020): (B, C) -> (B,).

    Lower energy = more in-distribution, so E itself grows with OOD-ness.
    """
    logits = np.asarray(logits, dtype=np.float64)
    return -temperature * logsumexp(logits / temperature, axis=-1)
