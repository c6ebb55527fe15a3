"""XoR through four gated pathways: analytic loss vs GDLN vs ReLU network (Saxe et al. 2022, §3)."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from taskabs.experiments.gdln.runs import (
    ExperimentResult,
    _preset,
    _torch_threads,
    xor_data,
)
from taskabs.gdln.network import (
    GatedDeepLinearNetwork,
    GDLNConfig,
    TwoLayerReLU,
    gradient_descent_step,
)
from taskabs.gdln.reduction import (
    gated_correlations,
    single_pathway_closed_form,
)

log = logging.getLogger(__name__)

__all__ = ["xor_experiment"]


def _xor_gdln(n_hidden: int, init_std: float, generator, dtype) -> GatedDeepLinearNetwork:
    per_path = n_hidden // 4
    nodes = {"x": 2, **{f"h{k}": per_path for k in range(4)}, "y": 1}
    edges = {**{f"in{k}": ("x", f"h{k}") for k in range(4)}, **{f"out{k}": (f"h{k}", "y") for k in range(4)}}
    cfg = GDLNConfig(nodes=nodes, edges=edges, inputs=("x",), outputs=("y",), init_std=init_std)
    return GatedDeepLinearNetwork(cfg, generator=generator, dtype=dtype)


def _first_crossing(t: np.ndarray, curve: np.ndarray, level: float) -> float:
    below = np.nonzero(curve <= level)[0]
    return float(t[below[0]]) if below.size else float("nan")


def xor_experiment(
    *,
    seed: int = 0,
    device: str = "cpu",
    n_threads: int = 1,
    n_hidden: int | None = None,
    init_std: float | None = None,
    lr: float | None = None,
    t_max: float | None = None,
) -> ExperimentResult:
    """XoR through four gated pathways: analytic loss curve vs GDLN simulation vs ReLU network.

    Data: :func:`xor_data` (4 examples, targets ±1). GDLN: input → 4 hidden nodes of n_hidden/4
    units → output; hidden node k is gated on for example k only, so each pathway is a two-layer
    linear network trained on one example: s = |y|‖x‖/4 = √2/4, d = ‖x‖²/4 = 1/2 (from
    :func:`gated_correlations`) and L(t) = ½ (1 − √2 a(t))² with a(t) from
    :func:`single_pathway_closed_form`. Its a0 is the expected strength of the growing mode from
    i.i.d. N(0, σ0²) weights, a0 = n σ0²/2 for a pathway of n units (the growing part of a linear
    two-layer mode is |u0 + w0|²/4). ReLU network: y = W2 ReLU(W1 x), n_hidden units, no biases, the
    same σ0; at small init its units align so that each ends up active on a single example,
    i.e. it becomes this GDLN (``relu_single_example_fraction`` measures it).

    Training: full-batch gradient descent, loss ½ mean ‖y − ŷ‖², learning rate ``lr``, time
    t = lr · step, until ``t_max``.
    """
    p = _preset("xor", dict(n_hidden=n_hidden, init_std=init_std, lr=lr, t_max=t_max))
    started = time.process_time()
    x_np, y_np = xor_data()
    dtype = torch.float64
    x = torch.tensor(x_np, dtype=dtype, device=device)
    y = torch.tensor(y_np, dtype=dtype, device=device)
    steps = int(round(p["t_max"] / p["lr"]))
    t = np.arange(steps + 1) * p["lr"]

    # Theory: one pathway per example; all four have the same s and d.
    syx, sx = gated_correlations(x_np, y_np, np.array([1.0, 0, 0, 0]))
    s = float(np.linalg.svd(syx, compute_uv=False)[0])
    v = x_np[0] / np.linalg.norm(x_np[0])
    d = float(v @ sx @ v)
    per_path = p["n_hidden"] // 4
    a0 = per_path * p["init_std"] ** 2 / 2.0
    a = single_pathway_closed_form(t, s=s, d=d, a0=a0)
    loss_theory = 0.5 * (1.0 - np.linalg.norm(x_np[0]) * a) ** 2

    with _torch_threads(n_threads):
        gen = torch.Generator().manual_seed(seed)
        gdln = _xor_gdln(p["n_hidden"], p["init_std"], gen, dtype).to(device)
        gates = torch.zeros(4, len(gdln.node_names), dtype=dtype, device=device)
        gates[:, gdln.node_index("x")] = 1.0
        gates[:, gdln.node_index("y")] = 1.0
        for k in range(4):
            gates[k, gdln.node_index(f"h{k}")] = 1.0
        relu = TwoLayerReLU(
            2,
            p["n_hidden"],
            1,
            init_std=p["init_std"],
            generator=torch.Generator().manual_seed(seed + 1),
            dtype=dtype,
        )
        relu = relu.to(device)
        loss_gdln = np.empty(steps + 1)
        loss_relu = np.empty(steps + 1)
        for step in range(steps + 1):
            lg = gdln.loss({"x": x}, {"y": y}, gates)
            lrelu = 0.5 * (relu(x) - y).pow(2).sum(dim=1).mean()
            loss_gdln[step], loss_relu[step] = lg.item(), lrelu.item()
            if step == steps:
                break
            (lg + lrelu).backward()  # disjoint parameters: one backward serves both
            gradient_descent_step(gdln.parameters(), p["lr"])
            gradient_descent_step(relu.parameters(), p["lr"])
        with torch.no_grad():
            h = torch.relu(x @ relu.w1.T)  # (4, H)
            # A unit serves one example when that example carries ≥ 99% of its output; exact
            # zeros cannot be asked for, aligned units leave ~1e-17 on the orthogonal examples.
            share = h.max(dim=0).values / h.sum(dim=0).clamp_min(1e-300)
            single = float((share > 0.99).double().mean())

    half = 0.25  # loss halfway between start (0.5) and 0
    summary = {
        "s": s,
        "d": d,
        "a0": a0,
        "n_steps": steps,
        "max_abs_dev_gdln": float(np.abs(loss_gdln - loss_theory).max()),
        "max_abs_dev_relu": float(np.abs(loss_relu - loss_theory).max()),
        "t_half_theory": _first_crossing(t, loss_theory, half),
        "t_half_gdln": _first_crossing(t, loss_gdln, half),
        "t_half_relu": _first_crossing(t, loss_relu, half),
        "final_loss_gdln": float(loss_gdln[-1]),
        "final_loss_relu": float(loss_relu[-1]),
        "relu_single_example_fraction": single,
        "cpu_seconds": time.process_time() - started,
    }
    stride = max(1, steps // 400)
    rows = [
        {
            "t": float(t[i]),
            "step": int(i),
            "loss_theory": float(loss_theory[i]),
            "loss_gdln": float(loss_gdln[i]),
            "loss_relu": float(loss_relu[i]),
        }
        for i in range(0, steps + 1, stride)
    ]
    arrays = {"t": t, "loss_theory": loss_theory, "loss_gdln": loss_gdln, "loss_relu": loss_relu}
    log.info("xor: %s", summary)
    return ExperimentResult(summary=summary, rows=rows, arrays=arrays)
