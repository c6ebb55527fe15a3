"""Half-space generalisation of linear read-outs (Johnston & Fusi 2023; docs/science.md §4).

For each of ``n_splits`` random unit vectors u in latent space, the samples with u·y > 0 form the
training half and the others the test half (the test half lies outside everything seen in
training). Two read-outs are fitted on the training half and scored on the test half:

* *classifier generalisation*: a linear classifier of sign(v·y), v a random unit vector orthogonal
  to u (so the category boundary crosses both halves), scored by balanced accuracy (chance 0.5);
  the decoder is ``decoding.fit_logistic`` (scikit-learn's liblinear objective, C = 1);
* *regression generalisation*: ridge regression (``ridge``) of every latent, scored by R² on the
  test half averaged over latents (scikit-learn's ``r2_score``; 0 = the test half's mean).

Latents may be continuous or binary (then the halves are sets of conditions: this is CCGP with a
half-space split). Activity is centred and divided by one global RMS scale first (as in
``taskabs.geometry.decoding``: invariant to rotating units, and the same regularisation in every
layer); scikit-learn's StandardScaler of the authors' code would rescale every unit.
"""

from __future__ import annotations

import numpy as np

from taskabs.geometry.decoding import _balanced_accuracy, _one_blas_thread, fit_logistic

__all__ = ["halfspace_splits", "halfspace_generalisation"]


def halfspace_splits(d: int, n_splits: int, *, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(u, v), each (n_splits, d) unit rows with u_s ⊥ v_s: split directions and category directions."""
    if d < 2:
        raise ValueError(f"half-space generalisation needs d >= 2 latents, got {d}")
    u = rng.standard_normal((n_splits, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v = rng.standard_normal((n_splits, d))
    v -= np.sum(v * u, axis=1, keepdims=True) * u
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return u, v


def halfspace_generalisation(
    activity: np.ndarray,
    latents: np.ndarray,
    *,
    n_splits: int,
    rng: np.random.Generator,
    ridge: float = 1.0,
) -> dict[str, float]:
    """Mean over splits of classifier and regression generalisation: {'classifier', 'regression'}.

    activity (N, U), latents (N, d) (continuous or in {−1, +1}). A split whose halves hold fewer
    than two samples each, or whose test categories are all one class, is skipped; NaN if none is
    left.
    """
    x = np.asarray(activity, dtype=np.float64)
    y = np.asarray(latents, dtype=np.float64)
    u, v = halfspace_splits(y.shape[1], n_splits, rng=rng)
    side = y @ u.T > 0  # (N, S): True = training half
    cats = np.where(y @ v.T > 0, 1, -1)  # (N, S)
    usable = (side.sum(0) >= 2) & ((~side).sum(0) >= 2)
    usable &= np.array([len(np.unique(cats[~side[:, s], s])) == 2 for s in range(n_splits)])
    if not usable.any():
        return {"classifier": float("nan"), "regression": float("nan")}
    side, cats = side[:, usable], cats[:, usable]
    x = x - x.mean(0)
    scale = np.sqrt(np.mean(x**2))
    x = x / scale if scale > 0 else x
    with _one_blas_thread():
        coef, intercept = fit_logistic(x, cats, side.astype(np.float64))  # one problem per split
        classifier = _balanced_accuracy(cats, x @ coef.T + intercept, ~side)
        xt = np.concatenate([x, np.ones((len(x), 1))], axis=1)  # (N, U + 1)
        penalty = ridge * np.eye(xt.shape[1])
        penalty[-1, -1] = 0.0  # the intercept is not penalised (scikit-learn's Ridge)
        regression = []
        for s in range(side.shape[1]):
            train = side[:, s]
            w = np.linalg.solve(xt[train].T @ xt[train] + penalty, xt[train].T @ y[train])  # (U + 1, d)
            target = y[~train]
            ss_res = ((target - xt[~train] @ w) ** 2).sum(0)
            ss_tot = ((target - target.mean(0)) ** 2).sum(0)
            r2 = 1.0 - ss_res[ss_tot > 0] / ss_tot[ss_tot > 0]
            regression.append(float(r2.mean()) if r2.size else np.nan)
    return {"classifier": float(np.nanmean(classifier)), "regression": float(np.nanmean(regression))}
