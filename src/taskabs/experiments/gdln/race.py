"""The race between a shared pathway and separate ones on P = M² routes: B2/B1 = P^{1/4} in the
shared pathway, which wins the race (Saxe et al. 2022, §3)."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from taskabs.experiments.gdln.runs import (
    ExperimentResult,
    _deviation,
    _modes,
    _orthonormal,
    _preset,
    _project_chain,
    _torch_threads,
    hierarchical_items,
)
from taskabs.gdln.network import (
    GatedDeepLinearNetwork,
    GDLNConfig,
    gradient_descent_step,
)
from taskabs.gdln.reduction import (
    integrate_race,
    race_balanced_ratio,
    race_speed,
)

log = logging.getLogger(__name__)

__all__ = ["race_experiment"]


def _race_graph(m: int, n_hidden: int, n_sep: int, d_in: int, d_out: int, init_std: float):
    """GDLN: a shared pathway (enc_i → mid → dec_j) and a separate 3-layer pathway per route."""
    routes = [(i, j) for i in range(m) for j in range(m)]
    nodes = {**{f"in{i}": d_in for i in range(m)}, "s1": n_hidden, "s2": n_hidden}
    edges = {
        **{f"enc{i}": (f"in{i}", "s1") for i in range(m)},
        "mid": ("s1", "s2"),
        **{f"dec{j}": ("s2", f"out{j}") for j in range(m)},
    }
    for i, j in routes:
        nodes[f"p{i}_{j}a"] = n_sep
        nodes[f"p{i}_{j}b"] = n_sep
        edges[f"sep{i}_{j}_1"] = (f"in{i}", f"p{i}_{j}a")
        edges[f"sep{i}_{j}_2"] = (f"p{i}_{j}a", f"p{i}_{j}b")
        edges[f"sep{i}_{j}_3"] = (f"p{i}_{j}b", f"out{j}")
    nodes.update({f"out{j}": d_out for j in range(m)})
    cfg = GDLNConfig(
        nodes=nodes,
        edges=edges,
        inputs=tuple(f"in{i}" for i in range(m)),
        outputs=tuple(f"out{j}" for j in range(m)),
        init_std=init_std,
    )
    return cfg, routes


def race_experiment(
    *,
    seed: int = 0,
    device: str = "cpu",
    n_threads: int = 1,
    n_domains: int | None = None,
    n_hidden: int | None = None,
    n_hidden_separate: int | None = None,
    b0: float | None = None,
    lr: float | None = None,
    t_max: float | None = None,
) -> ExperimentResult:
    """The race between a shared pathway and separate ones, on the general GDLN.

    Setting (our construction, documented): M input and M output domains, all P = M² routes
    trained, every domain holding :func:`hierarchical_items`. Two kinds of pathway reach each
    route's output: the shared one (encoder i → one shared middle layer → decoder j; usage
    fractions 1/M, 1, 1/M = P^{-1/2}, 1, P^{-1/2}) and a separate 3-layer pathway of its own
    (usage 1/P in every layer). Gates switch on input i, output j, the shared nodes and that
    route's separate nodes. Reduced dynamics: :func:`integrate_race`. Predictions: inside the
    shared pathway B2/B1 → √(1/(1/M)) = P^{1/4} (:func:`race_balanced_ratio`); across pathways the
    shared one is faster (:func:`race_speed`) and ends up carrying almost all of the output.

    Init: every pathway aligned with the data's singular vectors at strength b0 per layer.
    Full-batch gradient descent, ½‖y − ŷ‖² averaged over routes and items, time t = lr · step.
    """
    p = _preset(
        "race",
        dict(
            n_domains=n_domains,
            n_hidden=n_hidden,
            n_hidden_separate=n_hidden_separate,
            b0=b0,
            lr=lr,
            t_max=t_max,
        ),
    )
    started = time.process_time()
    m = p["n_domains"]
    n_routes = m * m
    x_np, y_np = hierarchical_items()
    u_np, s, vt_np, d = _modes(x_np, y_np)
    n_items, n_modes = x_np.shape[0], len(s)
    dtype = torch.float64
    cfg, routes = _race_graph(
        m, p["n_hidden"], p["n_hidden_separate"], x_np.shape[1], y_np.shape[1], init_std=0.0
    )
    steps = int(round(p["t_max"] / p["lr"]))
    stride = max(1, steps // 400)
    b = p["b0"]

    with _torch_threads(n_threads):
        gen = torch.Generator().manual_seed(seed)
        net = GatedDeepLinearNetwork(cfg, generator=gen, dtype=dtype).to(device)
        u = torch.tensor(u_np, dtype=dtype, device=device)
        vt = torch.tensor(vt_np, dtype=dtype, device=device)
        w = net.weights

        def align(first: list[str], mid: str, last: list[str], width: int) -> None:
            r1 = _orthonormal(width, n_modes, gen, dtype).to(device)
            r2 = _orthonormal(width, n_modes, gen, dtype).to(device)
            with torch.no_grad():
                for e in first:
                    w[e].copy_((r1 * b) @ vt)
                w[mid].copy_((r2 * b) @ r1.T)
                for e in last:
                    w[e].copy_((u * b) @ r2.T)

        align([f"enc{i}" for i in range(m)], "mid", [f"dec{j}" for j in range(m)], p["n_hidden"])
        for i, j in routes:
            align([f"sep{i}_{j}_1"], f"sep{i}_{j}_2", [f"sep{i}_{j}_3"], p["n_hidden_separate"])

        # Examples: every (route, item) pair; gates pick the route's domains and separate pathway.
        n = n_routes * n_items
        xs = torch.tensor(x_np, dtype=dtype, device=device).repeat(n_routes, 1)  # (N, D)
        ys = torch.tensor(y_np, dtype=dtype, device=device).repeat(n_routes, 1)  # (N, C)
        node_gates = torch.zeros(n, len(net.node_names), dtype=dtype, device=device)
        edge_gates = torch.zeros(n, len(net.edge_names), dtype=dtype, device=device)
        for r, (i, j) in enumerate(routes):
            rows_r = slice(r * n_items, (r + 1) * n_items)
            for v in (f"in{i}", "s1", "s2", f"p{i}_{j}a", f"p{i}_{j}b", f"out{j}"):
                node_gates[rows_r, net.node_index(v)] = 1.0
            for e in (f"enc{i}", "mid", f"dec{j}", *(f"sep{i}_{j}_{q}" for q in (1, 2, 3))):
                edge_gates[rows_r, net.edge_index(e)] = 1.0
        inputs = {f"in{i}": xs for i in range(m)}
        targets = {f"out{j}": ys for j in range(m)}

        def project():
            shared = _project_chain(
                torch.stack([w[f"enc{i}"] for i in range(m)]),
                w["mid"],
                torch.stack([w[f"dec{j}"] for j in range(m)]),
                u,
                vt,
            )
            sep = [
                _project_chain(w[f"sep{i}_{j}_1"][None], w[f"sep{i}_{j}_2"], w[f"sep{i}_{j}_3"][None], u, vt)
                for i, j in routes
            ]
            return shared, tuple(np.mean([sp[layer] for sp in sep], axis=0) for layer in range(3))

        times, tracks = [], []
        for step in range(steps + 1):
            if step % stride == 0 or step == steps:
                times.append(step * p["lr"])
                tracks.append(project())
            if step == steps:
                break
            net.loss(inputs, targets, node_gates, edge_gates).backward()
            gradient_descent_step(net.parameters(), p["lr"])

    t = np.asarray(times)
    shared_sim = [np.stack([tr[0][layer] for tr in tracks]) for layer in range(3)]  # (T, A)
    sep_sim = [np.stack([tr[1][layer] for tr in tracks]) for layer in range(3)]
    usage = [[1.0 / m, 1.0, 1.0 / m], [1.0 / n_routes] * 3]
    ode_shared = np.empty((3, len(t), n_modes))
    ode_sep = np.empty((3, len(t), n_modes))
    for a in range(n_modes):
        sol = integrate_race(t, usage=usage, s=float(s[a]), d=float(d[a]), b0=b)
        ode_shared[:, :, a] = sol.strengths[0].T
        ode_sep[:, :, a] = sol.strengths[1].T
    devs = [_deviation(shared_sim[layer], ode_shared[layer]) for layer in range(3)]
    devs += [_deviation(sep_sim[layer], ode_sep[layer]) for layer in range(3)]
    ratio = shared_sim[1][-1] / shared_sim[0][-1]
    predicted = race_balanced_ratio(1.0, 1.0 / m)  # = P^{1/4}
    shared_out = np.prod([x[-1] for x in shared_sim], axis=0)
    sep_out = np.prod([x[-1] for x in sep_sim], axis=0)
    summary = {
        "n_domains": m,
        "n_routes": n_routes,
        "n_steps": steps,
        "p_quarter": float(n_routes**0.25),
        "ratio_b2_b1_min": float(ratio.min()),
        "ratio_b2_b1_max": float(ratio.max()),
        "ratio_rel_err": float(np.abs(ratio / predicted - 1).max()),
        "ode_ratio_rel_err": float(np.abs(ode_shared[1][-1] / ode_shared[0][-1] / predicted - 1).max()),
        "shared_output_fraction_min": float((shared_out / (shared_out + sep_out)).min()),
        "speed_shared": race_speed(usage[0]),
        "speed_separate": race_speed(usage[1]),
        "max_rel_dev": max(dv[0] for dv in devs),
        "max_pointwise_rel_dev": max(dv[1] for dv in devs),
        "cpu_seconds": time.process_time() - started,
    }
    rows = [
        {
            "t": float(t[i]),
            "mode": a,
            "s": float(s[a]),
            **{f"shared_B{layer + 1}_sim": float(shared_sim[layer][i, a]) for layer in range(3)},
            **{f"shared_B{layer + 1}_ode": float(ode_shared[layer][i, a]) for layer in range(3)},
            "separate_A_sim": float(np.prod([x[i, a] for x in sep_sim])),
            "separate_A_ode": float(np.prod(ode_sep[:, i, a])),
        }
        for i in range(len(t))
        for a in range(n_modes)
    ]
    arrays = {
        "t": t,
        "s": s,
        "d": d,
        **{f"shared_B{layer + 1}_sim": shared_sim[layer] for layer in range(3)},
        **{f"shared_B{layer + 1}_ode": ode_shared[layer] for layer in range(3)},
        **{f"separate_B{layer + 1}_sim": sep_sim[layer] for layer in range(3)},
        **{f"separate_B{layer + 1}_ode": ode_sep[layer] for layer in range(3)},
    }
    log.info("race: %s", summary)
    return ExperimentResult(summary=summary, rows=rows, arrays=arrays)
