"""Toy sequences with latent tasks (docs/science.md §1) and their exact Bayesian posterior.

Generative process (documented choice): a stream of *blocks*; each block draws a task k (different
from the previous block's) and a length uniform on [block_min, block_max]; within a block,
observations are x_t ~ N(mu_k, sigma^2 I) in D dimensions.  Block lengths make this a hidden
semi-Markov model, so the exact filtering posterior p(k_t | x_{1:t}) is computed by a forward pass
over (task, run length) states: see :func:`exact_posterior`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp


@dataclass(frozen=True)
class SequenceSpec:
    means: tuple[tuple[float, ...], ...]  # (K, D) task means mu_k
    sigma: float = 0.1
    block_min: int = 25
    block_max: int = 50

    @property
    def n_tasks(self) -> int:
        return len(self.means)

    @property
    def dim(self) -> int:
        return len(self.means[0])

    def __post_init__(self) -> None:
        if self.n_tasks < 2:
            raise ValueError(f"need at least 2 task means, got {self.n_tasks}")
        if len({len(m) for m in self.means}) != 1:
            raise ValueError("all task means must have the same dimension")
        if not (0 < self.block_min <= self.block_max):
            raise ValueError(f"need 0 < block_min <= block_max, got {self.block_min}, {self.block_max}")
        if self.sigma <= 0:
            raise ValueError(f"sigma must be positive, got {self.sigma}")


def sample_schedule(spec: SequenceSpec, length: int, rng: np.random.Generator) -> np.ndarray:
    """Task index per trial, shape (length,): blocks of uniform length, each a new task."""
    tasks = np.empty(length, dtype=np.int64)
    t, task = 0, int(rng.integers(spec.n_tasks))
    while t < length:
        n = int(rng.integers(spec.block_min, spec.block_max + 1))
        tasks[t : t + n] = task
        t += n
        task = (task + 1 + int(rng.integers(spec.n_tasks - 1))) % spec.n_tasks
    return tasks


def sample_observations(spec: SequenceSpec, tasks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """x_t ~ N(mu_{tasks_t}, sigma^2 I); shape tasks.shape + (D,), float32."""
    means = np.asarray(spec.means, dtype=np.float64)
    x = means[tasks] + spec.sigma * rng.standard_normal(tasks.shape + (spec.dim,))
    return x.astype(np.float32)


def sample_streams(
    spec: SequenceSpec, n_streams: int, length: int, rng: np.random.Generator, *, shared_schedule: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Streams of trials: (tasks (S, T), x (S, T, D)).

    ``shared_schedule=True`` gives every stream the same block schedule (a blocked curriculum: the
    whole batch sees one task at a time, which is what makes forgetting measurable).
    """
    if shared_schedule:
        tasks = np.broadcast_to(sample_schedule(spec, length, rng), (n_streams, length)).copy()
    else:
        tasks = np.stack([sample_schedule(spec, length, rng) for _ in range(n_streams)])
    return tasks, sample_observations(spec, tasks, rng)


def log_likelihoods(spec: SequenceSpec, x: np.ndarray) -> np.ndarray:
    """log N(x_t; mu_k, sigma^2 I) for every task: x (..., D) -> (..., K)."""
    means = np.asarray(spec.means, dtype=np.float64)
    diff = np.asarray(x, dtype=np.float64)[..., None, :] - means  # (..., K, D)
    sq = np.sum(diff**2, axis=-1)
    return -0.5 * sq / spec.sigma**2 - spec.dim * np.log(np.sqrt(2 * np.pi) * spec.sigma)


def exact_posterior(spec: SequenceSpec, x: np.ndarray) -> np.ndarray:
    """Exact filtering posterior log p(k_t | x_{1:t}) of the generative process.

    x: (T, D) one stream, or (S, T, D) several.  Returns log-probabilities (T, K) or (S, T, K).

    Forward recursion over states (k, r), r = trials elapsed in the current block (1..block_max).
    With duration d ~ U{block_min..block_max}, the hazard h(r) = P(d = r | d >= r) ends a block after
    r trials; the next block's task is uniform over the K-1 other tasks.  The stream starts a block
    at t = 1 with a uniform task, matching :func:`sample_schedule`.
    """
    x = np.asarray(x)
    single = x.ndim == 2
    x = x[None] if single else x
    K, R = spec.n_tasks, spec.block_max
    r = np.arange(1, R + 1)
    n_lengths = spec.block_max - spec.block_min + 1
    survival = np.minimum((spec.block_max - r + 1) / n_lengths, 1.0)  # P(d >= r), > 0 for r <= R
    hazard = np.where(r >= spec.block_min, 1.0 / n_lengths, 0.0) / survival
    with np.errstate(divide="ignore"):
        log_h, log_stay = np.log(hazard), np.log1p(-hazard)
        # log P(next block in task j | a block of task k ended): uniform over the K-1 other tasks
        log_switch = np.where(np.eye(K, dtype=bool), -np.inf, -np.log(K - 1))  # (K_next, K_prev)

    loglik = log_likelihoods(spec, x)  # (S, T, K)
    out = np.empty_like(loglik)
    log_alpha = np.full((len(x), K, R), -np.inf)  # log p(k_t, r_t | x_{1:t}) per stream
    log_alpha[:, :, 0] = -np.log(K) + loglik[:, 0]
    for t in range(x.shape[1]):
        if t > 0:
            ended = logsumexp(log_alpha + log_h, axis=2)  # (S, K)
            new = np.full_like(log_alpha, -np.inf)
            new[:, :, 1:] = log_alpha[:, :, :-1] + log_stay[:-1]
            new[:, :, 0] = logsumexp(ended[:, None, :] + log_switch, axis=2)
            log_alpha = new + loglik[:, t, :, None]
        log_alpha -= logsumexp(log_alpha, axis=(1, 2), keepdims=True)
        out[:, t] = logsumexp(log_alpha, axis=2)
    return out[0] if single else out


def window_posterior(spec: SequenceSpec, windows: np.ndarray) -> np.ndarray:
    """log p(k | window) assuming one task over the window and a uniform prior.

    windows: (N, W, D) -> (N, K).  This is the posterior that GBI over a window with one shared z
    approximates, as opposed to the exact filter, which also knows block statistics.
    """
    ll = log_likelihoods(spec, windows).sum(axis=1)  # (N, K)
    return ll - logsumexp(ll, axis=1, keepdims=True)
