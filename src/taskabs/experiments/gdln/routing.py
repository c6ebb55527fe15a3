"""Toy routing (M = 7, K = 4): singular-value trajectories against the reduced ODE, steady state
B2/B1 = √M, zero error on untrained routes (Saxe et al. 2022, §3)."""

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
    RoutingConfig,
    RoutingNetwork,
    cyclic_routes,
    gradient_descent_step,
)
from taskabs.gdln.reduction import (
    integrate_routing,
    routing_conserved,
    routing_steady_state,
)

log = logging.getLogger(__name__)

__all__ = ["routing_experiment"]


def routing_experiment(
    *,
    seed: int = 0,
    device: str = "cpu",
    n_threads: int = 1,
    n_domains: int | None = None,
    k: int | None = None,
    n_hidden: int | None = None,
    b0: float | None = None,
    lr: float | None = None,
    t_max: float | None = None,
    random_init_gain: float | None = None,
    random_init_lr: float | None = None,
    random_init_t_max: float | None = None,
) -> ExperimentResult:
    """Toy routing: the trained network's mode strengths against the reduced routing ODE.

    Data: :func:`hierarchical_items` in every domain. Network: :class:`RoutingNetwork` with M
    input and M output domains, input i trained with outputs i..i+K−1 (mod M)
    (:func:`cyclic_routes`), widths n_hidden. Full-batch gradient descent on ½‖y − ŷ‖² averaged
    over trained routes and items, learning rate ``lr``, time t = lr · step.

    Tracked run: weights start aligned with the data's singular vectors, every layer's strength at
    b0 (W1 = R1 b0 Vᵀ, W2 = R2 b0 R1ᵀ, W3 = U b0 R2ᵀ, R random orthonormal): the reduction is exact
    and the only gap to :func:`integrate_routing` is the O(lr) discretisation. Reported:
    ``max_rel_dev`` = max over layers, modes, t of |B_sim − B_ode| / max_t |B_ode|
    (``max_pointwise_rel_dev`` divides by |B_ode(t)| instead), the final B2/B1 against √M
    (``ratio_rel_err``) and against the exact conserved-quantity fixed point
    (:func:`routing_steady_state`), and the error on untrained routes.

    Random-init run (the paper's setting): orthogonal init of gain ``random_init_gain`` and
    learning rate ``random_init_lr``; reports the mean squared output error on trained and on
    untrained routes relative to the mean squared target (``random_init_untrained_rel_err``).
    """
    p = _preset(
        "routing",
        dict(
            n_domains=n_domains,
            k=k,
            n_hidden=n_hidden,
            b0=b0,
            lr=lr,
            t_max=t_max,
            random_init_gain=random_init_gain,
            random_init_lr=random_init_lr,
            random_init_t_max=random_init_t_max,
        ),
    )
    started = time.process_time()
    m = p["n_domains"]
    x_np, y_np = hierarchical_items()
    u_np, s, vt_np, d = _modes(x_np, y_np)
    dtype = torch.float64
    x = torch.tensor(x_np, dtype=dtype, device=device)
    y = torch.tensor(y_np, dtype=dtype, device=device)
    u = torch.tensor(u_np, dtype=dtype, device=device)
    vt = torch.tensor(vt_np, dtype=dtype, device=device)
    routes = cyclic_routes(m, p["k"]).to(device)
    cfg = RoutingConfig(n_domains=m, in_dim=x.shape[1], hidden_dim=p["n_hidden"], out_dim=y.shape[1])
    steps = int(round(p["t_max"] / p["lr"]))
    stride = max(1, steps // 400)

    with _torch_threads(n_threads):
        gen = torch.Generator().manual_seed(seed)
        net = RoutingNetwork(cfg, generator=gen, dtype=dtype).to(device)
        r1 = _orthonormal(p["n_hidden"], len(s), gen, dtype).to(device)
        r2 = _orthonormal(p["n_hidden"], len(s), gen, dtype).to(device)
        with torch.no_grad():
            net.encoders.copy_(((r1 * p["b0"]) @ vt).expand_as(net.encoders))
            net.shared.copy_((r2 * p["b0"]) @ r1.T)
            net.decoders.copy_(((u * p["b0"]) @ r2.T).expand_as(net.decoders))
        times, tracks = [], []
        for step in range(steps + 1):
            if step % stride == 0 or step == steps:
                times.append(step * p["lr"])
                tracks.append(_project_chain(net.encoders, net.shared, net.decoders, u, vt))
            if step == steps:
                break
            net.loss(x, y, routes).backward()
            gradient_descent_step(net.parameters(), p["lr"])
        with torch.no_grad():
            err = 0.5 * (net(x) - y).pow(2).sum(-1).mean(-1)  # (M, M)
        untrained_aligned = float(err[~routes].max()) if (~routes).any() else float("nan")

        # The paper's setting: random orthogonal init, no alignment imposed.
        rcfg = RoutingConfig(
            n_domains=m,
            in_dim=x.shape[1],
            hidden_dim=p["n_hidden"],
            out_dim=y.shape[1],
            init_gain=p["random_init_gain"],
            init="orthogonal",
        )
        rnet = RoutingNetwork(rcfg, generator=torch.Generator().manual_seed(seed + 1), dtype=dtype).to(device)
        for _ in range(int(round(p["random_init_t_max"] / p["random_init_lr"]))):
            rnet.loss(x, y, routes).backward()
            gradient_descent_step(rnet.parameters(), p["random_init_lr"])
        with torch.no_grad():
            rerr = (rnet(x) - y).pow(2).sum(-1).mean(-1)  # (M, M)
            scale_y = float(y.pow(2).sum(-1).mean())
        r_proj = _project_chain(rnet.encoders, rnet.shared, rnet.decoders, u, vt)

    t = np.asarray(times)
    sim = [np.stack([tr[layer] for tr in tracks]) for layer in range(3)]  # each (T, A)
    ode = integrate_routing(t, s=s, d=d, m=m, b0=p["b0"])
    devs = [_deviation(sim[layer], ode[layer]) for layer in range(3)]
    ratio = sim[1][-1] / sim[0][-1]
    fixed = routing_steady_state(s=s, d=d, m=m, b0=p["b0"])
    c1_sim, c2_sim = routing_conserved(*sim, m=m)
    summary = {
        "n_domains": m,
        "k": p["k"],
        "n_steps": steps,
        "max_rel_dev": max(dv[0] for dv in devs),
        "max_pointwise_rel_dev": max(dv[1] for dv in devs),
        "ratio_b2_b1_min": float(ratio.min()),
        "ratio_b2_b1_max": float(ratio.max()),
        "sqrt_m": float(np.sqrt(m)),
        "ratio_rel_err": float(np.abs(ratio / np.sqrt(m) - 1).max()),
        "ratio_rel_err_vs_fixed_point": float(np.abs(ratio / (fixed[1] / fixed[0]) - 1).max()),
        "final_composite_rel_err": float(np.abs(sim[0][-1] * sim[1][-1] * sim[2][-1] * d / s - 1).max()),
        "b3_b1_rel_err": float(np.abs(sim[2][-1] / sim[0][-1] - 1).max()),
        "conserved_drift": float(max(np.ptp(c1_sim, axis=0).max(), np.ptp(c2_sim, axis=0).max())),
        "untrained_route_max_sq_err": untrained_aligned,
        "random_init_trained_rel_err": float(rerr[routes].mean()) / scale_y,
        "random_init_untrained_rel_err": (
            float(rerr[~routes].mean()) / scale_y if (~routes).any() else float("nan")
        ),
        "random_init_ratio_b2_b1_mean": float(np.mean(r_proj[1] / r_proj[0])),
        "cpu_seconds": time.process_time() - started,
    }
    rows = [
        {
            "t": float(t[i]),
            "mode": a,
            "s": float(s[a]),
            "d": float(d[a]),
            **{f"B{layer + 1}_sim": float(sim[layer][i, a]) for layer in range(3)},
            **{f"B{layer + 1}_ode": float(ode[layer][i, a]) for layer in range(3)},
        }
        for i in range(len(t))
        for a in range(len(s))
    ]
    arrays = {
        "t": t,
        "s": s,
        "d": d,
        **{f"B{layer + 1}_sim": sim[layer] for layer in range(3)},
        **{f"B{layer + 1}_ode": ode[layer] for layer in range(3)},
        "route_sq_err_random_init": rerr.cpu().numpy(),
        "routes": routes.cpu().numpy(),
    }
    log.info("routing: %s", summary)
    return ExperimentResult(summary=summary, rows=rows, arrays=arrays)
