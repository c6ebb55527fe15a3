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


# ------------------------------------------------------------------ models and the forgetting protocol
import polars as pl  # noqa: E402
import torch  # noqa: E402

from taskabs.claims import NOT_RUN, REPRODUCED  # noqa: E402
from taskabs.experiments.sequence import claims as sequence_claims  # noqa: E402
from taskabs.experiments.sequence.stages import (  # noqa: E402
    block_trials,
    context_windows,
    forgetting_rows,
)
from taskabs.models.sequence import (  # noqa: E402
    ALL_MODELS,
    SequenceModelConfig,
    TaskConditionedLSTM,
    build_model,
    shuffled_blocks,
    task_input,
)

CONFIG = {
    "data": {"means": [[0.2], [0.8]], "sigma": 0.1, "block_min": 3, "block_max": 6},
    "model": {"hidden": 8},
}


def test_shuffled_z_keeps_blocks_and_label_counts_but_permutes_them():
    schedule = torch.tensor([0] * 3 + [1] * 4 + [0] * 5 + [1] * 3 + [0] * 4 + [1] * 6)
    tasks = schedule.expand(3, -1)
    seen = set()
    for seed in range(20):
        shuffled = shuffled_blocks(tasks, torch.Generator().manual_seed(seed))
        assert shuffled.shape == tasks.shape and (shuffled == shuffled[0]).all()
        # constant within every true block
        starts = [0, 3, 7, 12, 15, 19, 25]
        labels = [int(shuffled[0, a]) for a in starts[:-1]]
        for a, b, label in zip(starts, starts[1:], labels):
            assert (shuffled[0, a:b] == label).all()
        assert sorted(labels) == [0, 0, 0, 1, 1, 1]
        seen.add(tuple(labels))
    assert len(seen) > 5  # a permutation, not the true labels
    z = task_input("lstm_shuffled_z", tasks, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(z.sum(-1), torch.ones(tasks.shape))
    # at evaluation (no generator) it gets the true one-hot, like the GBI-LSTM
    assert torch.equal(task_input("lstm_shuffled_z", tasks, 2), task_input("gbi_lstm", tasks, 2))
    with pytest.raises(ValueError):
        shuffled_blocks(torch.stack([schedule, schedule.flip(0)]), torch.Generator())


def test_every_model_builds_and_the_gated_one_uses_fixed_masks_of_z():
    for name in ALL_MODELS:
        model = build_model(CONFIG, name)
        prediction, h = model(torch.rand(4, 5, 1), task_input(name, torch.zeros(4, 5, dtype=torch.long), 2))
        assert prediction.shape == (4, 5, 1) and h.shape == (4, 5, 8)
    gated = TaskConditionedLSTM(SequenceModelConfig(hidden=16, z_mode="gate"))
    assert "gate_mask" in gated.state_dict() and set(gated.gate_mask.unique().tolist()) <= {0.0, 1.0}
    x = torch.rand(2, 4, 1)
    z = torch.eye(2)[[0, 1]]
    _, h = gated(x, z)
    off = gated.gate_mask == 0  # (C, H): a unit masked out for a task is silent under that task
    assert torch.all(h[0][:, off[0]] == 0) and torch.all(h[1][:, off[1]] == 0)
    # the first prediction from a zero state already depends on z (post-step gating)
    first = gated(torch.zeros(2, 1, 1), z)[0][:, 0, 0]
    assert first[0] != first[1]
    with pytest.raises(ValueError):
        SequenceModelConfig(z_mode="film")


def test_block_trials_and_context_windows():
    schedule = np.array([0, 0, 0, 1, 1, 1, 1, 0, 0])
    assert block_trials(schedule, -2) == slice(3, 7)
    assert block_trials(schedule, -1) == slice(7, 9)
    x = np.arange(2 * 7, dtype=np.float32).reshape(2, 7, 1)
    w = context_windows(x, 3)
    assert w.shape == (4, 3, 1) and w[1, 0, 0] == 3 and w[2, 0, 0] == 7  # partial windows dropped
    with pytest.raises(ValueError):
        context_windows(x, 8)


def test_forgetting_rows_of_a_network_that_knows_the_task():
    """A network predicting the z-selected mean has MSE ~ sigma^2 with z given and inferred."""

    class Oracle(torch.nn.Module):
        def loss_per_example(self, x, z):
            means = torch.tensor([0.2, 0.8])
            prediction = (z @ means)[:, None, None]
            return ((prediction - x) ** 2).mean(dim=(1, 2))

    rng = np.random.default_rng(0)
    x = (0.2 + 0.1 * rng.standard_normal((8, 12, 1))).astype(np.float32)
    rows = forgetting_rows(Oracle(), "gbi_lstm", x, 0, 2, [1, 4])
    by = {(r["context"], r["z"]): r["mse"] for r in rows}
    for width in (1, 4):
        assert by[(width, "z_given")] == pytest.approx(0.01, rel=0.5)
        assert by[(width, "z_inferred")] <= by[(width, "z_given")] + 1e-9
    assert by[(4, "inferred_task_accuracy")] == 1.0


def forgetting_table(values: dict[str, float], sd: float = 0.01) -> pl.DataFrame:
    rows = [
        {"model": m, "z": z, "context": 1, "chosen": True, "mean": v, "sd": sd, "n_seeds": 3}
        for m, v in values.items()
        for z in ("z_given", "z_inferred")
    ]
    return pl.DataFrame(rows)


def test_forgetting_claims_read_the_chosen_context_and_skip_missing_models():
    by_id = {c.id: c for c in sequence_claims.CLAIMS}
    table = forgetting_table({"gbi_lstm": 0.05, "lstm": 0.30, "lstm_shuffled_z": 0.31, "gbi_lstm_gated": 0.2})
    for claim_id in (
        "gbi.seq.forgetting_z_inferred",
        "gbi.seq.forgetting_shuffled_z_control",
        "gbi.seq.forgetting_gated",
    ):
        outcome = by_id[claim_id].evaluate({"sequence_forgetting": table})
        assert outcome.verdict == REPRODUCED, claim_id
    # a control that was not trained: not run, not an error
    partial = table.filter(pl.col("model").is_in(["gbi_lstm", "lstm"]))
    outcome = by_id["gbi.seq.forgetting_gated"].evaluate({"sequence_forgetting": partial})
    assert outcome.verdict == NOT_RUN
    setting = by_id["gbi.seq.forgetting"].our_setting({"data": {}, "evaluation": {"context": 1}})
    assert "windows of 1 trial(s)" in setting.protocol and "z given" in setting.protocol
