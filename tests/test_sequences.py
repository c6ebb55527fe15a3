import itertools

import numpy as np
import pytest
from scipy.special import logsumexp

from taskabs.data.sequences import (
    SequenceSpec,
    exact_posterior,
    log_likelihoods,
    sample_schedule,
    window_posterior,
)


def brute_force_posterior(spec: SequenceSpec, x: np.ndarray) -> np.ndarray:
    """log p(k_t | x_{1:t}) by enumerating every task schedule of length t (tiny cases only)."""
    K, T = spec.n_tasks, len(x)
    lengths = range(spec.block_min, spec.block_max + 1)
    p_len = 1.0 / len(lengths)
    loglik = log_likelihoods(spec, x)
    out = np.empty((T, K))
    for t in range(1, T + 1):
        joint = np.full(K, -np.inf)
        # a schedule: first task, then block lengths; the last block may be unfinished at t
        for n_blocks in range(1, t + 1):
            for blocks in itertools.product(lengths, repeat=n_blocks):
                if sum(blocks[:-1]) >= t or sum(blocks) < t:
                    continue
                for tasks in itertools.product(range(K), repeat=n_blocks):
                    if any(a == b for a, b in zip(tasks, tasks[1:])):
                        continue
                    # P(lengths of finished blocks) * P(last block lasts at least its elapsed part)
                    elapsed_last = t - sum(blocks[:-1])
                    if blocks[-1] != min(lengths, key=lambda d: (d < elapsed_last, d)):
                        continue  # count the unfinished last block once, by P(d >= elapsed)
                    logp = (
                        np.log(p_len) * (n_blocks - 1)
                        + np.log(sum(p_len for d in lengths if d >= elapsed_last))
                        - np.log(K)
                        - np.log(K - 1) * (n_blocks - 1)
                    )
                    schedule = np.repeat(tasks, blocks)[:t]
                    logp += loglik[np.arange(t), schedule].sum()
                    joint[schedule[-1]] = np.logaddexp(joint[schedule[-1]], logp)
        out[t - 1] = joint - logsumexp(joint)
    return out


@pytest.mark.parametrize("K", [2, 3])
def test_exact_posterior_matches_enumeration(K):
    spec = SequenceSpec(means=tuple((0.3 * k,) for k in range(K)), sigma=0.4, block_min=1, block_max=3)
    x = np.random.default_rng(K).normal(0.3, 0.4, size=(6, 1))
    np.testing.assert_allclose(exact_posterior(spec, x), brute_force_posterior(spec, x), atol=1e-9)


def test_exact_posterior_batched_equals_per_stream():
    spec = SequenceSpec(means=((0.2,), (0.8,), (0.5,)), block_min=3, block_max=6)
    x = np.random.default_rng(0).normal(0.5, 0.3, size=(4, 30, 1))
    batched = exact_posterior(spec, x)
    for s in range(4):
        np.testing.assert_allclose(batched[s], exact_posterior(spec, x[s]))
    np.testing.assert_allclose(np.exp(batched).sum(-1), 1.0)


def test_schedule_respects_block_lengths_and_switches():
    spec = SequenceSpec(means=((0.2,), (0.8,), (1.0,)), block_min=25, block_max=50)
    tasks = sample_schedule(spec, 5000, np.random.default_rng(1))
    change = np.flatnonzero(np.diff(tasks)) + 1
    lengths = np.diff(change)  # complete blocks only
    assert lengths.min() >= 25 and lengths.max() <= 50
    assert np.all(tasks[change] != tasks[change - 1])


def test_window_posterior_is_normalised_and_prefers_the_true_task():
    spec = SequenceSpec(means=((0.2,), (0.8,)))
    rng = np.random.default_rng(0)
    windows = np.concatenate([rng.normal(0.2, 0.1, (50, 8, 1)), rng.normal(0.8, 0.1, (50, 8, 1))])
    logp = window_posterior(spec, windows)
    np.testing.assert_allclose(np.exp(logp).sum(1), 1.0)
    assert (logp.argmax(1) == np.repeat([0, 1], 50)).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(means=((0.2,),)),
        dict(means=((0.2,), (0.8,)), sigma=0),
        dict(means=((0.2,), (0.8,)), block_min=10, block_max=5),
    ],
)
def test_invalid_spec_is_rejected(kwargs):
    with pytest.raises(ValueError):
        SequenceSpec(**kwargs)
