"""The neural race reduction (Saxe, Sodhani & Lewallen, ICML 2022): closed forms and reduced ODEs.

Pure functions (no I/O, no RNG), per singular mode and vectorised over modes: ``s`` and ``d`` have
shape (A,), mode strengths (A,) or (T, A) over time.  Conventions (loss, correlations, time
t = lr * step) are shared with :mod:`taskabs.gdln.network`; see docs/library.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.integrate import solve_ivp
from scipy.optimize import brentq

__all__ = [
    "gated_correlations",
    "single_pathway_closed_form",
    "single_pathway_rhs",
    "integrate_single_pathway",
    "routing_rhs",
    "integrate_routing",
    "routing_conserved",
    "routing_steady_state",
    "RaceSolution",
    "race_rhs",
    "integrate_race",
    "race_balanced_ratio",
    "race_speed",
]


def gated_correlations(
    x: np.ndarray, y: np.ndarray, gate: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Gated input-output and input-input correlations of one pathway.

    Σyx = (1/N) Σ_n g_n y_n x_nᵀ and Σx = (1/N) Σ_n g_n x_n x_nᵀ, with g_n ∈ {0, 1} the product of
    the gates along the pathway for example n (all ones when ``gate`` is None). The normaliser is
    the total number of examples N, not the number of gated-on ones: that is what the averaged loss
    sees.

    Args:
      x: inputs, shape (N, Dx).  y: targets, shape (N, Dy).  gate: shape (N,) or None.

    Returns:
      (Σyx of shape (Dy, Dx), Σx of shape (Dx, Dx)). With N = 0 both are zero matrices.

    >>> syx, sx = gated_correlations(np.eye(2), np.array([[1.0], [3.0]]), np.array([0, 1]))
    >>> syx.tolist(), sx.tolist()
    ([[0.0, 1.5]], [[0.0, 0.0], [0.0, 0.5]])
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = x.shape[0]
    if n == 0:
        return np.zeros((y.shape[1], x.shape[1])), np.zeros((x.shape[1], x.shape[1]))
    g = np.ones(n) if gate is None else np.asarray(gate, dtype=float)
    xg = x * g[:, None]
    return y.T @ xg / n, x.T @ xg / n


# ---------------------------------------------------------------------------------------------
# One pathway of two layers: the Saxe et al. (2014) logistic solution.
# ---------------------------------------------------------------------------------------------


def single_pathway_closed_form(
    t: np.ndarray,
    *,
    s: np.ndarray | float,
    d: np.ndarray | float,
    a0: np.ndarray | float,
    tau: float = 1.0,
) -> np.ndarray:
    """Mode strength a(t) of a two-layer pathway from balanced, aligned init.

    a(t) = (s/d) / (1 − (1 − s/(d·a0)) e^{−2 s t/τ}),

    the solution of τ da/dt = 2 a (s − d a), a(0) = a0, where a = w2·w1 is the product of the two
    layers' strengths for one mode and the init is balanced (w1 = w2 = √a0). Sigmoidal rise from
    a0 to s/d, with a transition time ≈ τ ln(s/(d a0)) / (2s): larger s learns faster.

    Args:
      t: times, any shape.  s, d: singular value of Σyx and eigenvalue of Σx (> 0) of the mode,
        scalars or arrays broadcasting against ``t``.  a0: initial strength (> 0).  tau: time const.

    Returns:
      a(t), broadcast shape of the inputs. Degenerate case: s = 0 has no fixed point above 0 and the
      logistic form does not apply; it returns a0 / (1 + 2 d a0 t/τ), the exact solution then.

    >>> float(single_pathway_closed_form(0.0, s=2.0, d=1.0, a0=1e-3))
    0.001
    >>> round(float(single_pathway_closed_form(50.0, s=2.0, d=1.0, a0=1e-3)), 6)
    2.0
    """
    t = np.asarray(t, dtype=float)
    s, d, a0 = (np.asarray(v, dtype=float) for v in (s, d, a0))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        logistic = (s / d) / (1.0 - (1.0 - s / (d * a0)) * np.exp(-2.0 * s * t / tau))
        no_signal = a0 / (1.0 + 2.0 * d * a0 * t / tau)
    return np.where(s == 0, no_signal, logistic)


def single_pathway_rhs(t: float, a: np.ndarray, s: np.ndarray, d: np.ndarray, tau: float = 1.0):
    """Right-hand side τ da/dt = 2 a (s − d a) of the balanced two-layer pathway, per mode."""
    return 2.0 * a * (s - d * a) / tau


def integrate_single_pathway(
    t_eval: np.ndarray, *, s, d, a0, tau: float = 1.0, rtol: float = 1e-9, atol: float = 1e-12
) -> np.ndarray:
    """Numerical solution of :func:`single_pathway_rhs` with solve_ivp (a slow oracle for tests).

    Returns an array of shape (T, A) for A modes (scalars give A = 1).
    """
    s, d, a0 = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (s, d, a0))
    s, d, a0 = np.broadcast_arrays(s, d, a0)
    t_eval = np.asarray(t_eval, dtype=float)
    sol = solve_ivp(
        single_pathway_rhs,
        (0.0, float(t_eval[-1])),
        a0,
        t_eval=t_eval,
        args=(s, d, tau),
        method="LSODA",
        rtol=rtol,
        atol=atol,
    )
    if not sol.success:
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    return sol.y.T


# ---------------------------------------------------------------------------------------------
# Routing: M input domains, one shared hidden layer, M output domains, K outputs per input.
# ---------------------------------------------------------------------------------------------


def routing_rhs(t: float, y: np.ndarray, s: np.ndarray, d: np.ndarray, m: int, tau: float = 1.0):
    """Reduced routing ODE for state y = concat(B1, B2, B3), each of shape (A,).

    τ dB1/dt = (1/M) B3 B2 [S − B3 B2 B1 D]   (an encoder serves K of the M·K trained routes)
    τ dB2/dt =       B3 B1 [S − B3 B2 B1 D]   (the shared layer serves all of them)
    τ dB3/dt = (1/M) B2 B1 [S − B3 B2 B1 D]   (a decoder serves K routes: balanced design)

    K cancels; it only sets which routes are trained, not the speed of a trained route.
    """
    b1, b2, b3 = np.split(y, 3)
    err = s - b3 * b2 * b1 * d
    return np.concatenate([b3 * b2 * err / m, b3 * b1 * err, b2 * b1 * err / m]) / tau


def integrate_routing(
    t_eval: np.ndarray,
    *,
    s,
    d,
    m: int,
    b0,
    tau: float = 1.0,
    rtol: float = 1e-9,
    atol: float = 1e-12,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integrate :func:`routing_rhs` from B1 = B2 = B3 = b0 (per mode) with solve_ivp.

    Args:
      t_eval: increasing times from 0, shape (T,).  s, d: per-mode S and D, shape (A,) or scalars.
      m: number of domains M.  b0: initial strength of every layer, scalar or (A,), or a tuple
        (b1, b2, b3) of such for unequal starts.

    Returns:
      (B1, B2, B3), each of shape (T, A).
    """
    s, d = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (s, d))
    s, d = np.broadcast_arrays(s, d)
    starts = b0 if isinstance(b0, tuple) else (b0, b0, b0)
    y0 = np.concatenate([np.broadcast_to(np.asarray(b, dtype=float), s.shape) for b in starts])
    t_eval = np.asarray(t_eval, dtype=float)
    sol = solve_ivp(
        routing_rhs,
        (0.0, float(t_eval[-1])),
        y0,
        t_eval=t_eval,
        args=(s, d, m, tau),
        method="LSODA",
        rtol=rtol,
        atol=atol,
    )
    if not sol.success:
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    b1, b2, b3 = np.split(sol.y.T, 3, axis=1)
    return b1, b2, b3


def routing_conserved(b1: np.ndarray, b2: np.ndarray, b3: np.ndarray, *, m: int):
    """Conserved quantities of the routing ODE: (B2² − M·B1², B3² − B1²), elementwise.

    From the ODE, d(B2²)/dt = M · d(B1²)/dt = M · d(B3²)/dt, so both are constant along any
    trajectory. From a small start they are ≈ 0, hence B2 ≈ √M·B1 and B3 ≈ B1 at all later times.
    """
    b1, b2, b3 = (np.asarray(v, dtype=float) for v in (b1, b2, b3))
    return b2**2 - m * b1**2, b3**2 - b1**2


def routing_steady_state(*, s, d, m: int, b0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed point reached from B1 = B2 = B3 = b0: B3·B2·B1 = S/D on the conserved surfaces.

    Solves B1 · √(M·B1² + c1) · √(B1² + c2) = S/D for B1 (c1, c2 from :func:`routing_conserved` at
    the start), per mode, by bracketing (brentq). As b0 → 0: B1 = B3 = (S/(D√M))^{1/3}, B2 = √M·B1.
    Degenerate case: S ≤ 0 has no positive fixed point; NaN is returned for that mode.
    """
    s, d = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (s, d))
    s, d = np.broadcast_arrays(s, d)
    b0 = np.broadcast_to(np.asarray(b0, dtype=float), s.shape)
    out = np.full((3, s.size), np.nan)
    for k, (sk, dk, bk) in enumerate(zip(s.ravel(), d.ravel(), b0.ravel())):
        if sk <= 0:
            continue
        c1, c2 = routing_conserved(bk, bk, bk, m=m)
        lo = np.sqrt(max(0.0, -c1 / m, -c2)) + 1e-15  # B2, B3 must stay real

        def gap(b1, target=sk / dk):
            return b1 * np.sqrt(m * b1**2 + c1) * np.sqrt(b1**2 + c2) - target

        hi = max(1.0, lo)
        while gap(hi) < 0:
            hi *= 2.0
        b1 = brentq(gap, lo, hi, xtol=1e-14, rtol=1e-12)
        out[:, k] = b1, np.sqrt(m * b1**2 + c1), np.sqrt(b1**2 + c2)
    return out[0].reshape(s.shape), out[1].reshape(s.shape), out[2].reshape(s.shape)


# ---------------------------------------------------------------------------------------------
# The race: several pathways, each a chain of layers, all feeding the same output mode.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RaceSolution:
    """Mode strengths of each pathway over time: ``strengths[k]`` has shape (T, L_k) (one mode)."""

    t: np.ndarray
    strengths: list[np.ndarray]

    def composite(self, k: int) -> np.ndarray:
        """Product of pathway k's layer strengths, shape (T,): its contribution to the output."""
        return np.prod(self.strengths[k], axis=1)


def race_rhs(
    t: float, y: np.ndarray, usage: Sequence[np.ndarray], s: float, d: float, tau: float = 1.0
) -> np.ndarray:
    """Reduced race ODE for one mode; y concatenates every pathway's layer strengths.

    P symmetric tasks (routes), each served by one copy of every pathway. Layer ℓ of pathway k is a
    weight matrix shared by a fraction c_kℓ = usage[k][ℓ] of the tasks (1: used by all; 1/P: one
    task only). By symmetry every copy has the same strength B_kℓ and

      A_k = Π_ℓ B_kℓ,   E = S − D Σ_k A_k,   τ dB_kℓ/dt = c_kℓ (A_k / B_kℓ) E.

    Within a pathway B_kℓ²/c_kℓ − B_km²/c_km is conserved, so from a small start the strengths are
    balanced as B_kℓ ∝ √c_kℓ (see :func:`race_balanced_ratio`); across pathways the more shared one
    grows faster (see :func:`race_speed`) and takes the output: the most-shared pathway wins.
    """
    sizes = [len(u) for u in usage]
    blocks = np.split(y, np.cumsum(sizes)[:-1])
    composites = [np.prod(b) for b in blocks]
    err = s - d * sum(composites)
    out = []
    for b, c in zip(blocks, usage):
        # A_k / B_kℓ without dividing (B may start at exactly 0 for an absent pathway).
        others = np.array([np.prod(np.delete(b, i)) for i in range(len(b))])
        out.append(np.asarray(c, dtype=float) * others * err)
    return np.concatenate(out) / tau


def integrate_race(
    t_eval: np.ndarray,
    *,
    usage: Sequence[Sequence[float]],
    s: float,
    d: float,
    b0: float | Sequence[Sequence[float]],
    tau: float = 1.0,
    rtol: float = 1e-9,
    atol: float = 1e-12,
) -> RaceSolution:
    """Integrate :func:`race_rhs` with solve_ivp.

    Args:
      t_eval: increasing times from 0.  usage: per pathway, per layer usage fractions c_kℓ ∈ (0, 1].
      s, d: the mode's S and D (every task has the same).  b0: one start for every layer, or per
        pathway per layer starts.
    """
    usage = [np.asarray(u, dtype=float) for u in usage]
    if np.isscalar(b0):
        starts = [np.full(len(u), float(b0)) for u in usage]
    else:
        starts = [np.asarray(b, dtype=float) for b in b0]
    t_eval = np.asarray(t_eval, dtype=float)
    sol = solve_ivp(
        race_rhs,
        (0.0, float(t_eval[-1])),
        np.concatenate(starts),
        t_eval=t_eval,
        args=(usage, s, d, tau),
        method="LSODA",
        rtol=rtol,
        atol=atol,
    )
    if not sol.success:
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    blocks = np.split(sol.y.T, np.cumsum([len(u) for u in usage])[:-1], axis=1)
    return RaceSolution(t=t_eval, strengths=list(blocks))


def race_balanced_ratio(c_num: float, c_den: float) -> float:
    """Steady-state ratio B_num/B_den = √(c_num/c_den) of two layers of one pathway (small init).

    Routing with all M×M routes trained (P = M² tasks): the shared block serves every task (c = 1),
    an encoder serves M = √P of them (c = 1/√P), so B2/B1 = P^{1/4} (= √M).

    >>> race_balanced_ratio(1.0, 1 / 4) ** 4
    16.0
    """
    return float(np.sqrt(c_num / c_den))


def race_speed(usage: Sequence[float]) -> float:
    """Effective learning speed of a balanced pathway: the geometric mean (Π_ℓ c_ℓ)^{1/L}.

    With balanced strengths, d ln A/dt = L · E · A^{1−2/L} · (Π_ℓ c_ℓ)^{1/L}: among pathways of the
    same depth, the one with the larger geometric-mean usage wins the race.

    >>> round(race_speed([0.5, 1.0, 0.5]), 4)
    0.63
    """
    c = np.asarray(usage, dtype=float)
    return float(np.exp(np.mean(np.log(c))))
