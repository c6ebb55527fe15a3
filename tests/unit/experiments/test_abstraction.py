"""Tests for taskabs.experiments.geometry.network: the claim's direction on tiny fast networks,
determinism, input validation, and the hand-written training machinery against torch's own."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from taskabs.experiments.geometry.network import (
    ACTIVATIONS,
    MLP,
    FlatAdam,
    NetworkSpec,
    backprop,
    make_dataset,
    make_embedding,
    make_targets,
    parity_features,
    task_loss,
    train_and_measure,
)
from taskabs.geometry import all_conditions, ccgp, parallelism_score_of_samples


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors: extra intra-op threads only contend (20x slower on a busy 2-core machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# Small enough for ~0.1 s per network, large enough for the claim to show.
TINY = NetworkSpec(width=32, input_dim=32, steps=300, n_null_ps=3, n_null_decoding=1)


def by_layer(rows: list[dict]) -> dict[str, dict]:
    return {row["layer"]: row for row in rows if row["layer"] != "during_training"}


def same_rows(a: list[dict], b: list[dict]) -> bool:
    """Row-by-row equality that treats NaN == NaN."""
    if len(a) != len(b):
        return False
    for ra, rb in zip(a, b):
        if ra.keys() != rb.keys():
            return False
        for k in ra:
            va, vb = ra[k], rb[k]
            both_nan = isinstance(va, float) and isinstance(vb, float) and math.isnan(va) and math.isnan(vb)
            if not (both_nan or va == vb):
                return False
    return True


# --------------------------------------------------------------------------- the claim
@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_training_on_latents_makes_last_hidden_layer_abstract(activation, depth):
    layers = by_layer(train_and_measure(dataclasses.replace(TINY, activation=activation, depth=depth)))
    inp, untrained, trained = layers["input"], layers["untrained"], layers["trained"]
    assert trained["task_accuracy"] == 1.0
    assert trained["ps"] > max(inp["ps"], untrained["ps"]) + 0.5
    assert trained["ccgp"] >= 0.95 and trained["ccgp"] > max(inp["ccgp"], untrained["ccgp"]) + 0.2
    # ...and both well above what the nulls give for the same layer.
    assert (
        trained["ps"] > trained["ps_null_shuffle"] + 0.5 and trained["ps"] > trained["ps_null_geometry"] + 0.5
    )


def test_random_hyperplane_tasks_abstraction_grows_with_p():
    def mean_ccgp(p):
        return np.mean(
            [
                by_layer(
                    train_and_measure(dataclasses.replace(TINY, task="random", n_tasks=p, depth=2, seed=s))
                )["trained"]["ccgp"]
                for s in range(2)
            ]
        )

    assert mean_ccgp(16) > mean_ccgp(2) + 0.1 > mean_ccgp(1) + 0.2


def test_default_input_is_not_abstract():
    spec = NetworkSpec()
    gen = torch.Generator().manual_seed(0)
    x, y = make_dataset(spec, make_embedding(spec, generator=gen), generator=gen)
    x, y = x.double().numpy(), y.numpy().astype(int)
    assert abs(parallelism_score_of_samples(x, y)) < 0.1 and ccgp(x, y) < 0.7
    # input_mixing = 0 is docs/science.md's ReLU(A y + b): partly abstract already.
    spec0 = dataclasses.replace(spec, input_mixing=0.0)
    x0, _ = make_dataset(
        spec0, make_embedding(spec0, generator=torch.Generator().manual_seed(0)), generator=gen
    )
    assert parallelism_score_of_samples(x0.double().numpy(), y) > 0.3


# --------------------------------------------------------------------------- determinism and rows
def test_same_seed_gives_identical_rows_and_other_seed_differs():
    spec = dataclasses.replace(TINY, activation="tanh", steps=100)
    a = train_and_measure(spec, eval_steps=(0, 50, 100))
    assert same_rows(a, train_and_measure(spec, eval_steps=(0, 50, 100)))
    assert not same_rows(a, train_and_measure(dataclasses.replace(spec, seed=1), eval_steps=(0, 50, 100)))


def test_rows_schema_and_trajectory():
    spec = dataclasses.replace(TINY, steps=60)
    rows = train_and_measure(spec, eval_steps=(60, 0, 30))
    assert [r["layer"] for r in rows] == ["input", "untrained", "trained"] + ["during_training"] * 3
    assert [r["step"] for r in rows] == [0, 0, 60, 0, 30, 60]
    assert all(r.keys() == rows[0].keys() for r in rows)
    assert all(r["activation"] == spec.activation and r["seed"] == spec.seed for r in rows)  # spec fields
    trained, last = rows[2], rows[-1]
    assert last["ps"] == trained["ps"] and last["train_loss"] == trained["train_loss"]
    assert math.isnan(last["ccgp"]) and math.isnan(rows[0]["task_loss"])
    assert rows[3]["train_loss"] > last["train_loss"]  # training reduced the loss


# --------------------------------------------------------------------------- validation
def test_unknown_activation_is_named():
    with pytest.raises(ValueError, match="swish"):
        NetworkSpec(activation="swish")


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("task", "xor", "xor"),
        ("loss", "hinge", "hinge"),
        ("depth", 0, "depth"),
        ("n_per_condition", 1, "n_per_condition"),
        ("decay_warmup", 1.5, "decay_warmup"),
    ],
)
def test_invalid_spec_fields(field, value, match):
    with pytest.raises(ValueError, match=match):
        NetworkSpec(**{field: value})


def test_eval_steps_out_of_range():
    with pytest.raises(ValueError, match="eval_steps"):
        train_and_measure(dataclasses.replace(TINY, steps=10), eval_steps=(11,))


# --------------------------------------------------------------------------- data and tasks
def test_parity_features_are_orthogonal_over_conditions():
    phi = parity_features(torch.as_tensor(all_conditions(3), dtype=torch.float64), mixing=1.0)  # (8, 7)
    torch.testing.assert_close(phi.T @ phi, 8.0 * torch.eye(7, dtype=torch.float64))
    torch.testing.assert_close(parity_features(torch.ones(2, 1), mixing=1.0), torch.ones(2, 1))  # d = 1


def test_targets():
    gen = torch.Generator().manual_seed(0)
    latent = make_targets(NetworkSpec(d=4), generator=gen)
    torch.testing.assert_close(latent, torch.as_tensor(all_conditions(4), dtype=torch.float32))
    random = make_targets(NetworkSpec(d=4, task="random", n_tasks=7), generator=gen)
    assert random.shape == (16, 7) and set(random.unique().tolist()) <= {-1.0, 1.0}


# --------------------------------------------------------------------------- training machinery
@pytest.mark.parametrize("loss", ["mse", "bce"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_backprop_matches_autograd(activation, loss):
    spec = NetworkSpec(activation=activation, depth=2, width=16, input_dim=12, task="random", n_tasks=5)
    gen = torch.Generator().manual_seed(0)
    x, _ = make_dataset(spec, make_embedding(spec, generator=gen), generator=gen)
    targets = make_targets(spec, generator=gen).repeat_interleave(spec.n_per_condition, 0)
    model = MLP(spec, generator=gen).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=torch.float64))  # nonzero biases too
    out, _ = model(x.double())
    expected_value = (
        F.mse_loss(out, targets.double(), reduction="sum")
        if loss == "mse"
        else F.softplus(-targets * out).sum()
    )
    expected_value = expected_value / (x.shape[0] * spec.d)
    expected_value.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad.zero_()
    value = backprop(model, x.double(), targets.double(), loss=loss, d=spec.d)
    torch.testing.assert_close(value, expected_value.detach())
    for p, g in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, g)


def test_task_loss_closed_form():
    out = torch.tensor([[0.5, -2.0]])
    t = torch.tensor([[1.0, 1.0]])
    value, grad = task_loss(out, t, kind="mse", d=2)
    assert value.item() == pytest.approx((0.25 + 9.0) / 2)
    value, _ = task_loss(out, t, kind="bce", d=2)
    assert value.item() == pytest.approx((math.log1p(math.exp(-0.5)) + math.log1p(math.exp(2.0))) / 2)


def test_flat_adam_matches_torch_adam():
    spec = NetworkSpec(depth=2, width=16, input_dim=12)
    gen = torch.Generator().manual_seed(0)
    x, y = make_dataset(spec, make_embedding(spec, generator=gen), generator=gen)
    ref, ours = (
        MLP(spec, generator=torch.Generator().manual_seed(1)),
        MLP(spec, generator=torch.Generator().manual_seed(1)),
    )
    opt_ref = torch.optim.Adam(ref.parameters(), lr=1e-2, weight_decay=0.05)
    opt = FlatAdam(ours.parameters(), lr=1e-2)
    for _ in range(20):
        opt_ref.zero_grad()
        F.mse_loss(ref(x)[0], y).backward()
        opt_ref.step()
        F.mse_loss(ours(x)[0], y).backward()  # autograd accumulates into the flat buffer's views
        opt.step(0.05)
    for a, b in zip(ref.parameters(), ours.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------- Johnston & Fusi's protocol
def test_multitask_tasks_copies_and_rows():
    from taskabs.experiments.geometry.multitask import (
        MultitaskSpec,
        latent_copies,
        make_tasks,
        train_multitask,
    )

    spec = MultitaskSpec(n_tasks=6, steps=40, width=24, input_dim=24, n_splits=3)
    w, c = make_tasks(spec, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(w.norm(dim=1), torch.ones(6))
    eye = torch.eye(5)[:3]
    assert latent_copies(MultitaskSpec(n_tasks=3), eye, torch.zeros(3)) == 3  # tasks = latents
    assert latent_copies(MultitaskSpec(n_tasks=3, latents="continuous"), eye, torch.zeros(3)) == 3
    rows = train_multitask(spec)
    assert [r["layer"] for r in rows] == ["input", "untrained", "trained"]
    assert all(r["task"] == "multitask" and r["latents"] == "binary" and r["d"] == 5 for r in rows)
    assert 0.0 <= rows[-1]["train_accuracy"] <= 1.0 and 0 <= rows[0]["latent_copies"] <= 6
    assert rows == train_multitask(spec)  # deterministic given the seed
    cont = train_multitask(
        MultitaskSpec(
            latents="continuous", n_tasks=2, steps=20, width=16, input_dim=16, n_samples=64, n_splits=2
        )
    )
    assert np.isfinite(cont[-1]["classifier_gen"])
    with pytest.raises(ValueError, match="latents"):
        MultitaskSpec(latents="ternary")
