"""Gated deep linear networks: closed forms, reduced ODEs against simulation, gating semantics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from taskabs.claims import VERDICTS
from taskabs.experiments.gdln import race, routing, xor, zero_shot
from taskabs.experiments.gdln import runs as ex
from taskabs.gdln.network import (
    GatedDeepLinearNetwork,
    GDLNConfig,
    RoutingConfig,
    RoutingNetwork,
    cyclic_routes,
    gradient_descent_step,
)
from taskabs.gdln.reduction import (
    gated_correlations,
    integrate_race,
    integrate_routing,
    integrate_single_pathway,
    race_balanced_ratio,
    race_speed,
    routing_conserved,
    routing_steady_state,
    single_pathway_closed_form,
)

ROOT = Path(__file__).resolve().parents[3]
# The smoke sizes of every experiment: config/smoke.yaml over the schema defaults (= runs.DEFAULTS).
SMOKE = {
    name: {k: tuple(v) if isinstance(v, list) else v for k, v in (ex.DEFAULTS[name] | sizes).items()}
    for name, sizes in yaml.safe_load((ROOT / "config/smoke.yaml").read_text())["gdln"].items()
}


def test_schema_defaults_are_the_runs_defaults():
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    gdln = schema["properties"]["gdln"]["properties"]
    assert "scale" not in gdln
    for name, defaults in ex.DEFAULTS.items():
        got = {k: v["default"] for k, v in gdln[name]["properties"].items()}
        assert got == {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()}, name


DT = torch.float64


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These networks are tiny: intra-op threads only add overhead (and stall on a busy machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ------------------------------------------------------------------ closed form and ODEs


@pytest.mark.parametrize(
    "s,d,a0", [(1.0, 1.0, 1e-3), (2.5, 0.4, 1e-5), (0.3, 2.0, 0.5), (1.0, 1.0, 3.0)]
)  # last one: starts above s/d, decays
def test_closed_form_matches_numerical_integration(s, d, a0):
    t = np.linspace(0.0, 30.0, 301)
    numeric = integrate_single_pathway(t, s=s, d=d, a0=a0)[:, 0]
    closed = single_pathway_closed_form(t, s=s, d=d, a0=a0)
    np.testing.assert_allclose(closed, numeric, rtol=1e-6, atol=1e-12)
    assert closed[-1] == pytest.approx(s / d, rel=1e-6)


def test_closed_form_without_signal_decays_as_the_ode_does():
    t = np.linspace(0.0, 10.0, 11)
    numeric = integrate_single_pathway(t, s=0.0, d=0.7, a0=0.2)[:, 0]
    np.testing.assert_allclose(single_pathway_closed_form(t, s=0.0, d=0.7, a0=0.2), numeric, rtol=1e-6)


def test_larger_singular_value_learns_first():
    t = np.linspace(0, 20, 2001)
    a = single_pathway_closed_form(t[:, None], s=np.array([2.0, 1.0]), d=1.0, a0=1e-4)
    half = [t[np.argmax(a[:, k] > 0.5 * s)] for k, s in enumerate([2.0, 1.0])]
    assert half[0] < half[1]


def test_two_layer_gradient_descent_follows_closed_form():
    """A balanced, aligned two-layer linear net trained by small-step GD tracks a(t)."""
    x = np.diag([1.0, 0.5]) * np.sqrt(2)  # two examples, whitened-ish
    y = np.array([[2.0], [0.0]])
    syx, sx = gated_correlations(x, y)
    u, s, vt = np.linalg.svd(syx)
    d = float(vt[0] @ sx @ vt[0])
    a0, lr, steps = 1e-3, 0.01, 1500
    w1 = torch.tensor(np.sqrt(a0) * vt[:1], requires_grad=True)  # (1, 2)
    w2 = torch.tensor(np.sqrt(a0) * u[:, :1], requires_grad=True)  # (1, 1)
    xt, yt = torch.tensor(x), torch.tensor(y)
    for _ in range(steps):
        loss = 0.5 * (xt @ w1.T @ w2.T - yt).pow(2).sum(1).mean()
        loss.backward()
        gradient_descent_step([w1, w2], lr)
    a_sim = float((w2 @ w1 @ torch.tensor(vt[0])).detach().squeeze())
    a_theory = float(single_pathway_closed_form(steps * lr, s=s[0], d=d, a0=a0))
    assert a_sim == pytest.approx(a_theory, rel=0.03)


def test_gated_correlations_count_all_examples():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = np.array([[1.0], [2.0], [3.0]])
    syx, sx = gated_correlations(x, y, np.array([1, 0, 1]))
    np.testing.assert_allclose(syx, [[4 / 3, 1.0]])
    np.testing.assert_allclose(sx, [[2 / 3, 1 / 3], [1 / 3, 1 / 3]])


def test_routing_conserved_quantities_stay_constant():
    s, d, m = np.array([3.0, 1.2]), np.array([0.25, 0.5]), 5
    t = np.linspace(0, 40, 401)
    starts = (np.array([0.3, 0.05]), np.array([0.1, 0.2]), np.array([0.02, 0.4]))
    b1, b2, b3 = integrate_routing(t, s=s, d=d, m=m, b0=starts)
    c1, c2 = routing_conserved(b1, b2, b3, m=m)
    np.testing.assert_allclose(c1, np.broadcast_to(c1[0], c1.shape), atol=1e-7)
    np.testing.assert_allclose(c2, np.broadcast_to(c2[0], c2.shape), atol=1e-7)
    assert np.all(b1[-1] * b2[-1] * b3[-1] * d == pytest.approx(s, rel=1e-5))  # learned


def test_routing_steady_state_is_where_the_ode_goes_and_b2_is_sqrt_m_b1():
    s, d, m, b0 = np.array([3.4, 1.6, 0.75]), np.full(3, 0.25), 7, 0.05
    b1, b2, b3 = integrate_routing(np.linspace(0, 300, 31), s=s, d=d, m=m, b0=b0)
    f1, f2, f3 = routing_steady_state(s=s, d=d, m=m, b0=b0)
    np.testing.assert_allclose(b1[-1], f1, rtol=1e-5)
    np.testing.assert_allclose(b2[-1], f2, rtol=1e-5)
    np.testing.assert_allclose(b3[-1], f3, rtol=1e-5)
    np.testing.assert_allclose(f2 / f1, np.sqrt(m), rtol=5e-3)  # small init: B2 = √M·B1


def test_race_with_one_pathway_is_the_routing_ode():
    m, s, d = 4, 2.0, 0.5
    t = np.linspace(0, 30, 61)
    race = integrate_race(t, usage=[[1 / m, 1.0, 1 / m]], s=s, d=d, b0=0.1)
    b1, b2, b3 = integrate_routing(t, s=s, d=d, m=m, b0=0.1)
    np.testing.assert_allclose(race.strengths[0], np.hstack([b1, b2, b3]), rtol=1e-5, atol=1e-9)


def test_race_most_shared_pathway_wins_with_fourth_root_balance():
    p = 9  # P = M² routes, M = 3
    usage = [[1 / 3, 1.0, 1 / 3], [1 / p] * 3]
    sol = integrate_race(np.linspace(0, 200, 201), usage=usage, s=1.0, d=0.25, b0=0.05)
    shared, separate = sol.composite(0)[-1], sol.composite(1)[-1]
    assert shared + separate == pytest.approx(4.0, rel=1e-5)
    assert shared > 0.95 * 4.0
    ratio = sol.strengths[0][-1, 1] / sol.strengths[0][-1, 0]
    assert ratio == pytest.approx(p**0.25, rel=0.01) == race_balanced_ratio(1, 1 / 3)
    assert race_speed(usage[0]) > race_speed(usage[1])


# ------------------------------------------------------------------ gating semantics


def _two_path_net(generator_seed=0):
    cfg = GDLNConfig(
        nodes={"x": 3, "a": 4, "b": 2, "y": 2},
        edges={"xa": ("x", "a"), "ay": ("a", "y"), "xb": ("x", "b"), "by": ("b", "y")},
        inputs=("x",),
        outputs=("y",),
        init_std=0.5,
    )
    return GatedDeepLinearNetwork(cfg, generator=torch.Generator().manual_seed(generator_seed), dtype=DT)


def test_two_paths_sum():
    net = _two_path_net()
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=DT)
    w = net.weights
    expected = x @ (w["ay"] @ w["xa"] + w["by"] @ w["xb"]).T
    torch.testing.assert_close(net({"x": x})["y"], expected)


@pytest.mark.parametrize("gate", ["edge", "node"])
def test_gated_off_part_contributes_nothing_and_gets_zero_gradient(gate):
    net = _two_path_net()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(6, 3, generator=gen, dtype=DT)
    y = torch.randn(6, 2, generator=gen, dtype=DT)
    node_gates = torch.ones(6, 4, dtype=DT)
    edge_gates = torch.ones(6, 4, dtype=DT)
    if gate == "edge":
        edge_gates[:, net.edge_index("xb")] = 0.0
    else:
        node_gates[:, net.node_index("b")] = 0.0
    out = net({"x": x}, node_gates, edge_gates)["y"]
    torch.testing.assert_close(out, x @ (net.weights["ay"] @ net.weights["xa"]).T)
    net.loss({"x": x}, {"y": y}, node_gates, edge_gates).backward()
    if gate == "edge":
        assert torch.all(net.weights["xb"].grad == 0)
        # by still sees nothing: the node it reads from is silent
        assert torch.all(net.weights["by"].grad == 0)
    else:
        assert torch.all(net.weights["xb"].grad == 0) and torch.all(net.weights["by"].grad == 0)
    assert net.weights["xa"].grad.abs().sum() > 0


def test_per_example_gates_gradient_is_sum_over_gated_on_examples():
    """An edge gated per example gets the gradient of its gated-on examples only."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(8, 3, generator=gen, dtype=DT)
    y = torch.randn(8, 2, generator=gen, dtype=DT)
    on = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0], dtype=DT)
    edge_gates = torch.ones(8, 4, dtype=DT)
    net = _two_path_net()
    edge_gates[:, net.edge_index("xb")] = on
    net.loss({"x": x}, {"y": y}, None, edge_gates).backward()
    g_gated = net.weights["xb"].grad.clone()

    ref = _two_path_net()  # same init; examples gated off contribute the loss of path a alone
    keep = on.bool()
    out_a = x @ (ref.weights["ay"] @ ref.weights["xa"]).T
    out = out_a.clone()
    out[keep] = out[keep] + x[keep] @ (ref.weights["by"] @ ref.weights["xb"]).T
    (0.5 * (y - out).pow(2).sum(1).mean()).backward()
    torch.testing.assert_close(g_gated, ref.weights["xb"].grad)


def test_gated_off_output_node_has_no_loss():
    cfg = GDLNConfig(
        nodes={"x": 2, "y1": 1, "y2": 1},
        edges={"e1": ("x", "y1"), "e2": ("x", "y2")},
        inputs=("x",),
        outputs=("y1", "y2"),
        init_std=1.0,
    )
    net = GatedDeepLinearNetwork(cfg, generator=torch.Generator().manual_seed(0), dtype=DT)
    x = torch.ones(2, 2, dtype=DT)
    targets = {"y1": torch.full((2, 1), 5.0, dtype=DT), "y2": torch.full((2, 1), -7.0, dtype=DT)}
    gates = torch.ones(2, 3, dtype=DT)
    gates[:, net.node_index("y2")] = 0.0
    loss = net.loss({"x": x}, targets, gates)
    expected = 0.5 * (targets["y1"] - x @ net.weights["e1"].T).pow(2).mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert torch.all(net.weights["e2"].grad == 0)


def test_cycle_is_rejected():
    with pytest.raises(ValueError, match="cycle"):
        GatedDeepLinearNetwork(
            GDLNConfig(
                nodes={"x": 1, "a": 1, "b": 1},
                edges={"1": ("x", "a"), "2": ("a", "b"), "3": ("b", "a")},
                inputs=("x",),
                outputs=("b",),
            )
        )


def test_cyclic_routes_are_balanced():
    r = cyclic_routes(7, 4)
    assert r.sum().item() == 28
    assert torch.all(r.sum(0) == 4) and torch.all(r.sum(1) == 4)


# ------------------------------------------------------------------ routing: graph, fast net, ODE


def _routing_gdln(m, n_hidden, d_in, d_out):
    nodes = {
        **{f"in{i}": d_in for i in range(m)},
        "h1": n_hidden,
        "h2": n_hidden,
        **{f"out{j}": d_out for j in range(m)},
    }
    edges = {
        **{f"enc{i}": (f"in{i}", "h1") for i in range(m)},
        "mid": ("h1", "h2"),
        **{f"dec{j}": ("h2", f"out{j}") for j in range(m)},
    }
    cfg = GDLNConfig(
        nodes=nodes,
        edges=edges,
        inputs=tuple(f"in{i}" for i in range(m)),
        outputs=tuple(f"out{j}" for j in range(m)),
        init_std=0.0,
    )
    return GatedDeepLinearNetwork(cfg, dtype=DT)


def _routing_batch(net, routes, x, y):
    m = routes.shape[0]
    pairs = [(i, j) for i in range(m) for j in range(m) if routes[i, j]]
    n = len(pairs) * x.shape[0]
    gates = torch.zeros(n, len(net.node_names), dtype=DT)
    for r, (i, j) in enumerate(pairs):
        for v in (f"in{i}", "h1", "h2", f"out{j}"):
            gates[r * x.shape[0] : (r + 1) * x.shape[0], net.node_index(v)] = 1.0
    xs, ys = x.repeat(len(pairs), 1), y.repeat(len(pairs), 1)
    return ({f"in{i}": xs for i in range(m)}, {f"out{j}": ys for j in range(m)}, gates)


def test_routing_network_is_the_gated_graph():
    """Same weights: RoutingNetwork's loss and gradients equal the general GDLN with route gates."""
    m, h = 3, 5
    x_np, y_np = ex.hierarchical_items()
    x, y = torch.tensor(x_np, dtype=DT), torch.tensor(y_np, dtype=DT)
    routes = cyclic_routes(m, 2)
    fast = RoutingNetwork(
        RoutingConfig(m, 4, h, 7, init_gain=0.7), generator=torch.Generator().manual_seed(0), dtype=DT
    )
    graph = _routing_gdln(m, h, 4, 7)
    with torch.no_grad():
        for i in range(m):
            graph.weights[f"enc{i}"].copy_(fast.encoders[i])
            graph.weights[f"dec{i}"].copy_(fast.decoders[i])
        graph.weights["mid"].copy_(fast.shared)
    inputs, targets, gates = _routing_batch(graph, routes, x, y)
    lg = graph.loss(inputs, targets, gates)
    lf = fast.loss(x, y, routes)
    torch.testing.assert_close(lg, lf)
    lg.backward()
    lf.backward()
    torch.testing.assert_close(graph.weights["mid"].grad, fast.shared.grad)
    for i in range(m):
        torch.testing.assert_close(graph.weights[f"enc{i}"].grad, fast.encoders.grad[i])
        torch.testing.assert_close(graph.weights[f"dec{i}"].grad, fast.decoders.grad[i])


def test_reduced_routing_ode_tracks_simulated_gdln():
    """Aligned small init, small-step GD on the general GDLN: mode strengths follow the ODE."""
    m, k, h, b0, lr, t_max = 3, 2, 6, 0.2, 0.01, 25.0
    x_np, y_np = ex.hierarchical_items()
    syx, sx = gated_correlations(x_np, y_np)
    u_np, s, vt_np = np.linalg.svd(syx, full_matrices=False)
    d = np.einsum("ad,de,ae->a", vt_np, sx, vt_np)
    net = _routing_gdln(m, h, 4, 7)
    gen = torch.Generator().manual_seed(0)
    r1 = torch.linalg.qr(torch.randn(h, 4, generator=gen, dtype=DT))[0]
    r2 = torch.linalg.qr(torch.randn(h, 4, generator=gen, dtype=DT))[0]
    u, vt = torch.tensor(u_np), torch.tensor(vt_np)
    with torch.no_grad():
        for i in range(m):
            net.weights[f"enc{i}"].copy_((r1 * b0) @ vt)
            net.weights[f"dec{i}"].copy_((u * b0) @ r2.T)
        net.weights["mid"].copy_((r2 * b0) @ r1.T)
    inputs, targets, gates = _routing_batch(net, cyclic_routes(m, k), torch.tensor(x_np), torch.tensor(y_np))
    steps = int(t_max / lr)
    checkpoints = {steps // 4, steps // 2, 3 * steps // 4, steps}
    t_rec, b_rec = [], []
    for step in range(steps + 1):
        if step in checkpoints:
            with torch.no_grad():
                b1 = (net.weights["enc0"] @ vt.T).norm(dim=0).numpy()  # (A,)
                b3 = (net.weights["dec1"].T @ u).norm(dim=0).numpy()
                comp = torch.einsum(
                    "ca,ch,hk,kd,ad->a", u, net.weights["dec1"], net.weights["mid"], net.weights["enc0"], vt
                ).numpy()
            t_rec.append(step * lr)
            b_rec.append((b1, comp / (b1 * b3), b3))
        if step == steps:
            break
        net.loss(inputs, targets, gates).backward()
        gradient_descent_step(net.parameters(), lr)
    ode = integrate_routing(np.array([0.0, *t_rec]), s=s, d=d, m=m, b0=b0)
    for layer in range(3):
        sim = np.stack([b[layer] for b in b_rec])
        ref = ode[layer][1:]
        assert np.max(np.abs(sim - ref) / np.abs(ode[layer]).max(axis=0)) < 0.03
    assert b_rec[-1][1] / b_rec[-1][0] == pytest.approx(np.full(4, np.sqrt(m)), rel=0.02)


# ------------------------------------------------------------------ data


def test_permin_permout_domains_permute_pixels_and_labels():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 16)).astype(float)
    labels = rng.integers(0, 10, size=20)
    x, lab, pix, perm = ex.permin_permout_domains(images, labels, n_domains=3, rng=np.random.default_rng(1))
    assert x.shape == (3, 20, 16) and lab.shape == (3, 20)
    for i in range(3):
        np.testing.assert_allclose(x[i][:, np.argsort(pix[i])], x[0][:, np.argsort(pix[0])])
        np.testing.assert_array_equal(lab[i], perm[i][labels])
    assert x[0].mean(axis=0) == pytest.approx(np.zeros(16), abs=1e-12)
    assert (x[0] ** 2).sum(axis=1).mean() / 16 == pytest.approx(1.0)


def test_mnist_subset_is_the_bundled_one():
    x, y = ex.load_mnist_subset()
    assert x.shape == (5000, 784) and x.min() >= 0 and x.max() <= 255
    np.testing.assert_array_equal(np.bincount(y), np.full(10, 500))


# ------------------------------------------------------------------ tiny runs of every experiment


def test_xor_smoke_matches_theory_and_is_deterministic():
    a = xor.xor_experiment(**SMOKE["xor"], seed=3)
    b = xor.xor_experiment(**SMOKE["xor"], seed=3)
    np.testing.assert_array_equal(a.arrays["loss_relu"], b.arrays["loss_relu"])
    assert a.summary["final_loss_gdln"] < 1e-4 and a.summary["final_loss_relu"] < 1e-4
    assert a.summary["max_abs_dev_gdln"] < 0.15
    assert a.arrays["loss_theory"][0] == pytest.approx(0.5, abs=1e-3)


def test_routing_smoke_follows_ode_and_generalises():
    r = routing.routing_experiment(**SMOKE["routing"])
    assert r.summary["max_rel_dev"] < 0.1
    assert r.summary["ratio_rel_err"] < 0.02
    assert r.summary["untrained_route_max_sq_err"] < 1e-10
    assert r.summary["random_init_untrained_rel_err"] < 0.05
    assert {"t", "mode", "B1_sim", "B1_ode"} <= set(r.rows[0])


def test_race_smoke_shared_pathway_wins():
    r = race.race_experiment(**SMOKE["race"])
    assert r.summary["shared_output_fraction_min"] > 0.9
    assert r.summary["ratio_rel_err"] < 0.02
    assert r.summary["max_rel_dev"] < 0.25


def test_zero_shot_smoke_on_synthetic_digits():
    rng = np.random.default_rng(0)
    protos = rng.normal(size=(10, 64)) * 60 + 128
    labels = np.repeat(np.arange(10), 40)
    images = np.clip(protos[labels] + rng.normal(size=(400, 64)) * 20, 0, 255)
    kw = SMOKE["zero_shot"] | dict(data=(images, labels), pool=1, n_train=300, n_test=100)
    a = zero_shot.zero_shot_experiment(**kw)
    b = zero_shot.zero_shot_experiment(**kw)
    assert a.rows == [{**r, "cpu_seconds": a.rows[i]["cpu_seconds"]} for i, r in enumerate(b.rows)]
    assert {(r["draw"], r["k"], r["gain"]) for r in a.rows} == {
        (d, k, g) for d in (0, 1) for k, g in ((1, 0.1), (2, 0.1), (2, 10.0))
    }
    for r in a.rows:
        assert 0.0 <= r["trained_acc"] <= 1.0 and 0.0 <= r["untrained_acc"] <= 1.0
        assert r["n_steps"] <= 60 and (r["reached_fit"] or r["n_steps"] == 60)
    assert a.arrays["draw0_k2_gain0.1_route_acc"].shape == (3, 3)
    checks = zero_shot.zero_shot_checks(a.rows)
    assert checks["init_verdict"] in VERDICTS and checks["routes_verdict"] in VERDICTS
    if checks["trained_acc_mismatch"] > zero_shot.MATCH:  # unmatched fits are never compared
        assert checks["init_verdict"] == "inconclusive"


def test_route_masks_have_k_outputs_per_input():
    gen = torch.Generator().manual_seed(0)
    for mode in zero_shot.ROUTE_MODES:
        mask = zero_shot.route_mask(10, 3, mode, generator=gen)
        assert mask.shape == (10, 10) and mask.sum() == 30
        assert mode == "random_total" or (mask.sum(1) == 3).all()
    cyclic = zero_shot.route_mask(10, 1, "cyclic", generator=gen)
    assert (cyclic == torch.eye(10, dtype=torch.bool)).all()
    draws = {tuple(zero_shot.route_mask(10, 1, "random", generator=gen).flatten().tolist()) for _ in range(3)}
    assert len(draws) == 3  # different draws
    with pytest.raises(ValueError, match="route_mode"):
        zero_shot.route_mask(3, 1, "diagonal", generator=gen)


def test_simulate_and_plot_stages_at_smoke_sizes(tmp_path):
    import polars as pl

    from taskabs.experiments.gdln import stages
    from taskabs.pipeline.jobs import Job

    config = {"seed": 0, **{name: dict(sizes) for name, sizes in SMOKE.items()}}
    files = {}
    for name in stages.RUNNERS:
        out = {
            k: tmp_path / f"{name}_{k}.{e}"
            for k, e in (("rows", "parquet"), ("arrays", "npz"), ("summary", "json"))
        }
        stages.simulate(
            Job(rule="simulate_gdln", input={}, output=out, config=config, wildcards={"experiment": name})
        )
        files |= {f"{name}_{k}": v for k, v in out.items()}
    figures = {k: tmp_path / f"{k}.png" for k in ("xor", "routing", "race", "zero_shot")}
    stages.plot(
        Job(rule="plot_gdln", input=files, output={"checks": tmp_path / "checks.csv", **figures}, config={})
    )
    checks = pl.read_csv(tmp_path / "checks.csv")
    assert checks["claim_id"].to_list() == [c[0] for c in stages.CHECKS]
    assert set(checks["verdict"]) <= set(VERDICTS)
    zs = checks.filter(pl.col("claim_id") == "race.zero_shot.init").row(0, named=True)
    assert "gain 0.1: trained" in zs["details"]  # both accuracies are shown
    assert all(p.stat().st_size > 10_000 for p in figures.values())
