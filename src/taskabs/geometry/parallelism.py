"""Condition means and the Parallelism Score (docs/science.md §2).

Conventions of the whole ``geometry`` package: ``activity`` (N, U), ``labels`` (N, d) in {-1, +1},
2**d conditions in ``itertools.product((-1, 1), repeat=d)`` order (latent 0 is the most
significant bit), ``means`` (2**d, U) with a NaN row for a condition without samples.  The rules
for degenerate cases (collapsed codes, missing conditions, d = 1) are in docs/library.md.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = [
    "all_conditions",
    "condition_index",
    "condition_means",
    "coding_vectors",
    "cosine_matrix",
    "mean_pairwise_cosine",
    "parallelism_scores",
    "parallelism_score",
    "parallelism_score_of_samples",
    "dichotomy_parallelism_score",
    "latent_dichotomy",
]

# Exhaustive pairing search up to sides of 8 conditions (8! = 40320 pairings, d <= 4).
MAX_EXHAUSTIVE_PAIRINGS = math.factorial(8)


def all_conditions(d: int) -> np.ndarray:
    """All 2**d latent vectors, (2**d, d) int in {-1, +1}, in ``itertools.product`` order.

    >>> all_conditions(2).tolist()
    [[-1, -1], [-1, 1], [1, -1], [1, 1]]
    """
    if d < 1:
        raise ValueError(f"need d >= 1 latents, got d={d}")
    c = np.arange(2**d)[:, None]
    bits = (c >> np.arange(d - 1, -1, -1)[None, :]) & 1  # (2**d, d)
    return (2 * bits - 1).astype(np.int64)


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] < 1:
        raise ValueError(f"labels must be (N, d) with d >= 1, got shape {labels.shape}")
    if not np.all((labels == 1) | (labels == -1)):
        raise ValueError("labels must contain only -1 and +1")
    return labels.astype(np.int64)


def condition_index(labels: np.ndarray) -> np.ndarray:
    """Index in ``all_conditions(d)`` of each sample's condition: (N, d) -> (N,) int.

    >>> condition_index(np.array([[-1, -1], [1, -1], [1, 1]])).tolist()
    [0, 2, 3]
    """
    labels = _check_labels(labels)
    d = labels.shape[1]
    bits = (labels + 1) // 2  # (N, d) in {0, 1}
    return bits @ (1 << np.arange(d - 1, -1, -1))


def condition_means(activity: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Condition-averaged activity r(y) = mean_{i: y_i = y} activity_i, shape (2**d, U).

    Rows of conditions without samples are NaN (missing).

    >>> condition_means(np.array([[1.0], [3.0], [5.0]]), np.array([[-1], [-1], [1]])).ravel().tolist()
    [2.0, 5.0]
    """
    activity = np.asarray(activity, dtype=np.float64)
    idx = condition_index(labels)
    if activity.ndim != 2 or activity.shape[0] != idx.shape[0]:
        raise ValueError(f"activity must be (N, U) with N={idx.shape[0]}, got {activity.shape}")
    n_cond = 2 ** np.asarray(labels).shape[1]
    sums = np.zeros((n_cond, activity.shape[1]))
    np.add.at(sums, idx, activity)
    counts = np.bincount(idx, minlength=n_cond).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]  # 0/0 -> NaN marks missing conditions


def _n_latents(means: np.ndarray) -> int:
    n_cond = means.shape[0]
    d = int(round(math.log2(n_cond))) if n_cond > 0 else -1
    if means.ndim != 2 or d < 1 or 2**d != n_cond:
        raise ValueError(f"means must be (2**d, U) with d >= 1, got shape {means.shape}")
    return d


def coding_vectors(means: np.ndarray, k: int) -> np.ndarray:
    """Coding vectors of latent k: Δr(k; α) = r(y_k=+1, α) − r(y_k=−1, α), (2**(d−1), U).

    Row j is the context α = ``all_conditions(d - 1)[j]`` (the other latents in order).
    Rows touching a missing condition are NaN.
    """
    means = np.asarray(means, dtype=np.float64)
    d = _n_latents(means)
    if not 0 <= k < d:
        raise ValueError(f"latent k={k} out of range for d={d}")
    # Reshape so that axis k is latent k: (2, ..., 2, U); index 0 is y_k=-1, index 1 is y_k=+1.
    cube = means.reshape((2,) * d + (means.shape[1],))
    delta = np.take(cube, 1, axis=k) - np.take(cube, 0, axis=k)  # (2,)*(d-1) + (U,)
    return delta.reshape(2 ** (d - 1), means.shape[1])


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarities, (M, U) -> (M, M); zero-norm vectors have cosine 0 with all."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1)
    safe = np.where(norms > 0, norms, 1.0)
    unit = vectors / safe[:, None] * (norms > 0)[:, None]
    return unit @ unit.T


def mean_pairwise_cosine(vectors: np.ndarray) -> float:
    """Mean over unordered pairs i < j of cos(v_i, v_j) for the non-NaN rows of (M, U) vectors.

    NaN if fewer than two valid rows.

    >>> mean_pairwise_cosine(np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]))  # (1/√2 + 0 + 0) / 3
    0.2357022603955158
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    valid = vectors[~np.isnan(vectors).any(axis=1)]
    m = valid.shape[0]
    if m < 2:
        return float("nan")
    cos = cosine_matrix(valid)
    iu = np.triu_indices(m, k=1)
    return float(cos[iu].mean())


def parallelism_scores(means: np.ndarray) -> np.ndarray:
    """Per-latent Parallelism Score PS_k, (2**d, U) -> (d,).

    PS_k = mean over pairs α ≠ α' of cos(Δr(k; α), Δr(k; α')), the 2**(d−1) coding vectors of
    ``coding_vectors``.  1 = the latent is coded by one direction in every context.
    """
    d = _n_latents(np.asarray(means))
    return np.array([mean_pairwise_cosine(coding_vectors(means, k)) for k in range(d)])


def parallelism_score(means: np.ndarray) -> float:
    """PS = mean_k PS_k (NaN latents ignored; NaN if all are NaN, e.g. d = 1).

    >>> means = np.array([[0.0, 0], [0, 1], [1, 0], [1, 1]])  # a factorised square
    >>> parallelism_score(means)
    1.0
    """
    ps = parallelism_scores(means)
    return float(np.nanmean(ps)) if np.any(~np.isnan(ps)) else float("nan")


def parallelism_score_of_samples(activity: np.ndarray, labels: np.ndarray, *, rng=None) -> float:
    """PS of ``condition_means(activity, labels)``; ``rng`` is unused (uniform metric signature)."""
    del rng
    return parallelism_score(condition_means(activity, labels))


def latent_dichotomy(d: int, k: int) -> np.ndarray:
    """The dichotomy "y_k = +1" as a (2**d,) bool mask over conditions."""
    return all_conditions(d)[:, k] == 1


def _pairing_scores(gram: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """Mean pairwise cosine of each pairing.  gram: (m*m, m*m) cosines of the unit vectors
    u[i, l] = unit(r(A_i) - r(B_l)) flattened as i*m + l; perms: (P, m) -> (P,)."""
    m = perms.shape[1]
    flat = np.arange(m)[None, :] * m + perms  # (P, m)
    cos = gram[flat[:, :, None], flat[:, None, :]]  # (P, m, m)
    iu = np.triu_indices(m, k=1)
    return cos[:, iu[0], iu[1]].mean(axis=1)


def dichotomy_parallelism_score(
    means: np.ndarray,
    side: np.ndarray,
    *,
    max_pairings: int = MAX_EXHAUSTIVE_PAIRINGS,
    n_restarts: int = 20,
    rng: np.random.Generator | None = None,
) -> float:
    """Bernardi et al. (2020) PS of a balanced dichotomy of the conditions.

    With A = conditions where ``side`` is True and B the rest (|A| = |B| = m), each one-to-one
    pairing π: A -> B gives coding vectors v_i = r(A_i) − r(B_π(i)), and

        PS(A|B) = max_π  mean_{i<j} cos(v_i, v_j).

    The max is exhaustive over all m! pairings when m! <= ``max_pairings`` (default 8!, i.e.
    d <= 4 for 2**d conditions).  Beyond that it is approximated from below: ``n_restarts``
    random pairings drawn from ``rng``, each improved by greedy pairwise swaps until no swap
    raises the score; the best local maximum is returned (``rng`` is then required).

    For ``side = latent_dichotomy(d, k)`` the pairing that matches contexts gives PS_k, so the
    result is >= PS_k.  Zero-norm v_i have cosine 0 (module rule).  NaN if any condition is
    missing or m < 2.

    Args:
      means: (2**d, U) condition means (any (C, U) with C even works).
      side: (C,) bool, exactly C/2 True.
    """
    means = np.asarray(means, dtype=np.float64)
    side = np.asarray(side, dtype=bool)
    if means.ndim != 2 or side.shape != (means.shape[0],):
        raise ValueError(f"side must be ({means.shape[0]},) bool, got shape {side.shape}")
    m = int(side.sum())
    if 2 * m != side.size:
        raise ValueError(f"dichotomy must be balanced, got {m} vs {side.size - m} conditions")
    if m < 2 or np.isnan(means).any():
        return float("nan")
    a, b = means[side], means[~side]  # (m, U) each
    diffs = (a[:, None, :] - b[None, :, :]).reshape(m * m, -1)  # (m*m, U): v for A_i paired with B_l
    gram = cosine_matrix(diffs)  # (m*m, m*m)

    if math.factorial(m) <= max_pairings:
        perms = np.array(list(itertools.permutations(range(m))))  # (m!, m)
        best = -np.inf
        for chunk in np.array_split(perms, max(1, len(perms) // 4096)):  # bounded memory
            best = max(best, float(_pairing_scores(gram, chunk).max()))
        return best

    if rng is None:
        raise ValueError(f"{m}! pairings exceed max_pairings={max_pairings}: pass rng for the search")
    best = -np.inf
    swaps = np.array(list(itertools.combinations(range(m), 2)))  # (S, 2)
    for _ in range(n_restarts):
        perm = rng.permutation(m)
        score = float(_pairing_scores(gram, perm[None])[0])
        while True:  # steepest-ascent over all pairwise swaps
            cand = np.repeat(perm[None], len(swaps), axis=0)  # (S, m)
            rows = np.arange(len(swaps))
            cand[rows, swaps[:, 0]], cand[rows, swaps[:, 1]] = perm[swaps[:, 1]], perm[swaps[:, 0]]
            scores = _pairing_scores(gram, cand)
            j = int(scores.argmax())
            if scores[j] <= score + 1e-12:
                break
            perm, score = cand[j], float(scores[j])
        best = max(best, score)
    return best
