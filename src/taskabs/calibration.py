"""Calibration of confidences (pure numpy): reliability bins, ECE, selective accuracy, temperature.

``confidences`` are (N,) floats in [0, 1] and ``correct`` (N,) bools or 0/1; empty inputs give
NaN (or empty arrays for curves). Temperatures are fitted on validation data by the caller
(the image experiment: on its validation split), never on the examples they are evaluated on.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax


def reliability_bins(confidences, correct, *, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Reliability-diagram statistics over ``n_bins`` equal-width confidence bins.

    Bin b holds confidences in (edges[b], edges[b+1]], edges = linspace(0, 1, n_bins+1);
    confidence 0 goes to bin 0. Returns ``edges`` (n_bins + 1,), ``count``,
    ``confidence`` (mean confidence) and ``accuracy`` (mean correctness), each
    (n_bins,); means of empty bins are NaN.
    """
    conf = np.asarray(confidences, dtype=np.float64).ravel()
    hit = np.asarray(correct, dtype=np.float64).ravel()
    if conf.shape != hit.shape:
        raise ValueError(f"confidences {conf.shape} and correct {hit.shape} differ")
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    if conf.size and (conf.min() < 0 or conf.max() > 1):
        raise ValueError("confidences must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(idx, weights=hit, minlength=n_bins) / count
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": accuracy}


def expected_calibration_error(confidences, correct, *, n_bins: int = 15) -> float:
    """ECE = sum_b (n_b / N) |accuracy_b - confidence_b| over the bins of
    :func:`reliability_bins` (empty bins contribute 0). NaN if N = 0.

    >>> expected_calibration_error([0.9, 0.9, 0.6, 0.6], [1, 0, 1, 1], n_bins=10)
    0.4
    """
    bins = reliability_bins(confidences, correct, n_bins=n_bins)
    total = bins["count"].sum()
    if total == 0:
        return float("nan")
    filled = bins["count"] > 0
    gap = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    return float(np.round((bins["count"][filled] / total * gap).sum(), 12))


def accuracy_coverage_curve(confidences, correct) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Selective prediction: (coverage, accuracy, thresholds), each (K,), K distinct confidences.

    Keeping the examples with ``confidence >= thresholds[k]`` (decreasing) covers a
    fraction ``coverage[k]`` of the data with accuracy ``accuracy[k]``; the last point
    is full coverage. Tied confidences are kept or dropped together. Empty input gives
    empty arrays.

    >>> cov, acc, _ = accuracy_coverage_curve([0.9, 0.8, 0.8, 0.3], [1, 1, 0, 0])
    >>> cov.tolist(), acc.tolist()
    ([0.25, 0.75, 1.0], [1.0, 0.6666666666666666, 0.5])
    """
    conf = np.asarray(confidences, dtype=np.float64).ravel()
    hit = np.asarray(correct, dtype=np.float64).ravel()
    if conf.shape != hit.shape:
        raise ValueError(f"confidences {conf.shape} and correct {hit.shape} differ")
    order = np.argsort(-conf, kind="stable")
    c, h = conf[order], hit[order]
    last = np.r_[c[1:] != c[:-1], True] if c.size else np.zeros(0, dtype=bool)
    kept = np.arange(1, c.size + 1)[last]
    return kept / max(c.size, 1), np.cumsum(h)[last] / kept, c[last]


def accuracy_at_coverage(confidences, correct, coverage: float) -> float:
    """Accuracy of the most confident examples covering at least ``coverage`` of the data."""
    cov, acc, _ = accuracy_coverage_curve(confidences, correct)
    if cov.size == 0:
        return float("nan")
    return float(acc[np.argmax(cov >= coverage - 1e-12)])


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, *, bounds: tuple[float, float] = (1e-3, 1e4)
) -> float:
    """T minimising the mean NLL of ``labels`` under softmax(logits / T): (N, C), (N,) -> float.

    Searched on log T within ``bounds`` (bounded Brent); returns 1.0 if there are no examples.
    """
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    if labels.size == 0:
        return 1.0

    def nll(log_t):
        return -log_softmax(logits / np.exp(log_t), axis=1)[np.arange(labels.size), labels].mean()

    found = minimize_scalar(nll, bounds=tuple(np.log(bounds)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x))
