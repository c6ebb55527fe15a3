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

GBI gradient scores (docs/science.md §4). z lives on the simplex, so the part of g along the
all-ones direction (its mean) is a direction z never moves in; the informative part is the
*centred* gradient g - mean(g), which is the gradient with respect to the softmax logits of z at 0
(times C). A loss summed over pixels also makes |g| grow with the reconstruction error, i.e. with
how badly the input fits at all, so a score built on g's size ranks by likelihood, not by what z
explains. The ``centred`` scores below are therefore scale-free: :func:`gradient_peak_score` and
:func:`centred_gradient_entropy_score` only see the direction of the centred gradient (unchanged
when the loss is multiplied by a constant c > 0 or shifted along all-ones), and
:func:`relative_gradient_norm_score` divides its size by the loss at z0 (unchanged under L -> cL).
The uncentred :func:`gradient_norm_score`, :func:`gradient_max_score`, :func:`gradient_mean_score`
and :func:`gradient_entropy_score` are kept as plain functions; they are neither centred nor
scale-free.

No-network floors: :func:`ink_deviation_score`, :func:`bernoulli_pixel_nll`,
:func:`gaussian_pixel_nll` need only the input and training-set statistics.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp, softmax
from scipy.stats import rankdata

__all__ = [
    "auroc",
    "bernoulli_pixel_nll",
    "centred_gradient",
    "centred_gradient_entropy_score",
    "centred_unit_gradient",
    "gaussian_pixel_nll",
    "gradient_peak_score",
    "ink_deviation_score",
    "relative_gradient_norm_score",
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


# ------------------------------------------------------------ centred, scale-free GBI scores
def centred_gradient(g) -> np.ndarray:
    """g - mean_c(g): (B, C) -> (B, C). The gradient w.r.t. softmax logits at 0, times C."""
    g = np.asarray(g, dtype=np.float64)
    return g - g.mean(axis=-1, keepdims=True)


def centred_unit_gradient(g) -> np.ndarray:
    """The centred gradient divided by its norm: (B, C) -> (B, C), rows of unit norm (0 if g is flat)."""
    gc = centred_gradient(g)
    norm = np.linalg.norm(gc, axis=-1, keepdims=True)
    return np.divide(gc, norm, out=np.zeros_like(gc), where=norm > 0)


def gradient_peak_score(g) -> np.ndarray:
    """max_c(-u_c), u the centred unit gradient: (B, C) -> (B,), a confidence (larger = in-distribution).

    How much one class stands out among the directions z can move in: sqrt((C-1)/C) when a single
    class lowers the loss and every other raises it equally, down to 1/sqrt(C(C-1)) when every class
    but one lowers it equally, 0 for a flat gradient. Invariant to L -> cL (c > 0) and to g -> g + a.
    """
    return np.max(-centred_unit_gradient(g), axis=-1)


def centred_gradient_entropy_score(g, *, temperature: float = 1.0) -> np.ndarray:
    """Entropy (nats) of softmax(-u / temperature), u the centred unit gradient: (B, C) -> (B,).

    Scale-free like :func:`gradient_peak_score`; the temperature is fitted on validation labels.
    """
    return softmax_entropy(-centred_unit_gradient(g) / temperature)


def relative_gradient_norm_score(g, loss_at_z0) -> np.ndarray:
    """||g - mean(g)|| / L(z0): (B, C), (B,) -> (B,), a confidence (larger = in-distribution).

    How much of the loss z can move, relative to the loss itself; invariant to L -> cL. It divides
    by the loss, so it mixes the likelihood into the score (documented as such).
    """
    gc = centred_gradient(g)
    loss = np.asarray(loss_at_z0, dtype=np.float64)
    return np.linalg.norm(gc, axis=-1) / np.maximum(np.abs(loss), 1e-12)


# --------------------------------------------------------------------- no-network floors
def ink_deviation_score(x, reference_ink: float) -> np.ndarray:
    """| ||x||_1 - reference_ink |: (B, D) -> (B,), larger = more OOD.

    Total ink of the network's input against the training set's mean total ink; two-sided, so no
    direction is chosen after seeing which OOD set carries more ink.
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return np.abs(np.abs(x).sum(axis=1) - float(reference_ink))


def bernoulli_pixel_nll(x, mean_image, *, eps: float = 1e-4) -> np.ndarray:
    """Summed BCE of pixels x in [0, 1] under independent Bernoulli pixels p = mean_image: (B,)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    p = np.clip(np.asarray(mean_image, dtype=np.float64).ravel(), eps, 1 - eps)
    return -(x * np.log(p) + (1 - x) * np.log1p(-p)).sum(axis=1)


def gaussian_pixel_nll(x, mean_image, variance, *, min_variance: float = 1e-3) -> np.ndarray:
    """Summed NLL (nats) of x under independent Gaussian pixels N(mean_image, variance): (B,)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    mu = np.asarray(mean_image, dtype=np.float64).ravel()
    var = np.maximum(np.asarray(variance, dtype=np.float64).ravel(), min_variance)
    return 0.5 * (((x - mu) ** 2) / var + np.log(2 * np.pi * var)).sum(axis=1)
