"""Null models for the geometry metrics (docs/science.md §2: "report each against null models").

* Shuffled conditions: the rows of ``labels`` are permuted across samples, destroying any relation
  between activity and condition while keeping the activity and the condition counts.
  Every metric should then sit at its chance level (PS ~ 0, CCGP ~ 0.5, shattering ~ 0.5).
* Random geometry: every condition mean is replaced by a random point with the same distance
  to the grand mean (isotropic Gaussian direction in the U-dimensional unit space), while each
  sample keeps its deviation from its condition mean.  This keeps the size of the code and the
  noise but not its structure: PS ~ 0 and CCGP near chance, whereas shattering stays high
  (random points in general position are separable) -- the contrast Bernardi et al. draw.

A metric is any ``metric(activity, labels, *, rng) -> float`` (see ``taskabs.geometry.METRICS``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from taskabs.geometry.parallelism import condition_index, condition_means

__all__ = ["shuffle_conditions", "random_geometry_means", "random_geometry", "null_distribution"]

Metric = Callable[..., float]


def shuffle_conditions(labels: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """labels[π] for a uniformly random permutation π of the N samples: (N, d) -> (N, d)."""
    labels = np.asarray(labels)
    return labels[rng.permutation(labels.shape[0])]


def random_geometry_means(means: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """Random condition means with the same norm statistics: (C, U) -> (C, U).

    With grand mean m = mean of the present rows and c_y = r(y) − m,

        r'(y) = m + ‖c_y‖ · z_y / ‖z_y‖,   z_y ~ N(0, I_U) independently,

    so every condition keeps its distance to the grand mean exactly.  Missing (NaN) rows stay
    NaN; a condition at the grand mean stays there.
    """
    means = np.asarray(means, dtype=np.float64)
    present = ~np.isnan(means).any(axis=1)
    out = np.full_like(means, np.nan)
    if not present.any():
        return out
    grand = means[present].mean(axis=0)
    radius = np.linalg.norm(means[present] - grand, axis=1)  # (C',)
    z = rng.normal(size=(int(present.sum()), means.shape[1]))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    out[present] = grand + radius[:, None] * z
    return out


def random_geometry(activity: np.ndarray, labels: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """Sample-level random geometry: activity_i − r(y_i) + r'(y_i), (N, U) -> (N, U).

    r' = ``random_geometry_means(condition_means(activity, labels))``: the condition means are
    randomised and the within-condition deviations kept, so the null's condition means are r'.
    """
    activity = np.asarray(activity, dtype=np.float64)
    means = condition_means(activity, labels)
    cond = condition_index(labels)
    return activity - means[cond] + random_geometry_means(means, rng=rng)[cond]


def null_distribution(
    metric: Metric,
    activity: np.ndarray,
    labels: np.ndarray,
    *,
    null: Literal["shuffle", "geometry"],
    n_draws: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """``n_draws`` values of ``metric`` under a null model, (n_draws,).

    ``null="shuffle"`` evaluates metric(activity, shuffle_conditions(labels)); ``"geometry"``
    evaluates metric(random_geometry(activity, labels), labels).  ``rng`` drives both the null
    draws and the metric's own randomness.  Reduce (mean, quantiles) at the call site.
    """
    if null not in ("shuffle", "geometry"):
        raise ValueError(f"unknown null model {null!r}; expected 'shuffle' or 'geometry'")
    values = np.empty(n_draws)
    for i in range(n_draws):
        if null == "shuffle":
            values[i] = metric(activity, shuffle_conditions(labels, rng=rng), rng=rng)
        else:
            values[i] = metric(random_geometry(activity, labels, rng=rng), labels, rng=rng)
    return values
