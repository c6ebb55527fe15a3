"""Representation geometry: how abstractly a population codes binary latents (docs/science.md §2).

* ``parallelism``: condition means, Parallelism Score (per latent and for any dichotomy).
* ``decoding``: CCGP and shattering dimensionality with linear decoders.
* ``nulls``: shuffled-condition and random-geometry null models.

``METRICS`` maps a name to a metric with the uniform signature
``metric(activity (N, U), labels (N, d) in {-1, +1}, *, rng) -> float``, which is what
``nulls.null_distribution`` and the invariance tests iterate over.
"""

from __future__ import annotations

from collections.abc import Callable

from taskabs.geometry.decoding import (
    balanced_dichotomies,
    ccgp,
    ccgp_scores,
    ccgp_splits,
    shattering_accuracies,
    shattering_dimensionality,
)
from taskabs.geometry.nulls import (
    null_distribution,
    random_geometry,
    random_geometry_means,
    shuffle_conditions,
)
from taskabs.geometry.parallelism import (
    all_conditions,
    coding_vectors,
    condition_index,
    condition_means,
    dichotomy_parallelism_score,
    latent_dichotomy,
    parallelism_score,
    parallelism_score_of_samples,
    parallelism_scores,
)

METRICS: dict[str, Callable[..., float]] = {
    "ps": parallelism_score_of_samples,
    "ccgp": ccgp,
    "shattering": shattering_dimensionality,
}

__all__ = [
    "METRICS",
    "all_conditions",
    "balanced_dichotomies",
    "ccgp",
    "ccgp_scores",
    "ccgp_splits",
    "coding_vectors",
    "condition_index",
    "condition_means",
    "dichotomy_parallelism_score",
    "latent_dichotomy",
    "null_distribution",
    "parallelism_score",
    "parallelism_score_of_samples",
    "parallelism_scores",
    "random_geometry",
    "random_geometry_means",
    "shattering_accuracies",
    "shattering_dimensionality",
    "shuffle_conditions",
]
