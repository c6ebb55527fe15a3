"""Linear-decoding geometry metrics: CCGP and shattering dimensionality (docs/science.md §2).

Shapes and condition order follow ``taskabs.geometry.parallelism``.  Every metric uses one decoder,
L2-regularised logistic regression as scikit-learn's ``LogisticRegression(C=1, solver="liblinear")``
(``fit_logistic``; another through ``decoder=``), and returns a balanced held-out accuracy (chance
0.5), or NaN where the metric is undefined.  The decoder, the invariances and the degenerate cases
are described in docs/library.md.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import sklearn
from threadpoolctl import ThreadpoolController

from taskabs.geometry.parallelism import all_conditions, condition_index

__all__ = [
    "fit_logistic",
    "ccgp_splits",
    "ccgp_scores",
    "ccgp",
    "balanced_dichotomies",
    "train_test_split_by_condition",
    "shattering_accuracies",
    "shattering_dimensionality",
]

DecoderFactory = Callable[[], "sklearn.base.ClassifierMixin"]
_THREADPOOLS: ThreadpoolController | None = None  # found once: inspecting the loaded BLAS costs ~1 ms


def _one_blas_thread():
    """Context limiting BLAS to one thread: many tiny solves gain nothing from threads, and
    parallel pipeline jobs would oversubscribe the cores (a 30 ms fit became 1.6 s)."""
    global _THREADPOOLS
    if _THREADPOOLS is None:
        _THREADPOOLS = ThreadpoolController()
    return _THREADPOOLS.limit(limits=1, user_api="blas")


def fit_logistic(
    x: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    C: float = 1.0,
    tol: float = 1e-7,
    max_iter: int = 100,
) -> tuple[np.ndarray, np.ndarray]:
    """K L2 logistic regressions on shared inputs, solved together by damped Newton steps.

    Minimises, for every problem k,  ½‖w_k‖² + ½b_k² + C Σ_i s_ik log(1 + exp(−t_ik (w_k·x_i + b_k)))
    (scikit-learn ``LogisticRegression(C=C, solver="liblinear")``; weights s_ik = 0 drop sample i
    from problem k, which is how CCGP's different training sets share one x).

    The weight vector lies in the span of the samples, w = X̃ᵀa with X̃ = [x, 1], so Newton runs
    in the N-dimensional sample space when N <= U + 1 (kernel K = X̃X̃ᵀ, step
    Δa = −(I + C·S·D·K)⁻¹(a + C·s⊙g)) and in the (U + 1)-dimensional weight space otherwise.
    Each step is halved until the objective decreases (at most 30 times).

    Args:
      x: (N, U) inputs.  targets: (N, K) in {−1, +1}.  weights: (N, K) non-negative, default 1.
    Returns:
      coef (K, U) and intercept (K,).
    """
    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    n, u = x.shape
    s = np.ones_like(t) if weights is None else np.asarray(weights, dtype=np.float64)
    xt = np.concatenate([x, np.ones((n, 1))], axis=1)  # (N, p), p = U + 1
    kernel = n <= xt.shape[1]
    gram = xt @ xt.T if kernel else None  # (N, N)
    k_problems = t.shape[1]
    # Parameters: a (K, N) in sample space, or w (K, p) in weight space.
    theta = np.zeros((k_problems, n if kernel else xt.shape[1]))

    def margins(th: np.ndarray) -> np.ndarray:  # (K, N) decision values w_k·x̃_i
        return th @ gram if kernel else th @ xt.T

    def objective(th: np.ndarray, f: np.ndarray) -> np.ndarray:  # (K,)
        penalty = np.einsum("kn,kn->k", th, f) if kernel else np.einsum("kp,kp->k", th, th)
        return 0.5 * penalty + C * np.sum(s.T * np.logaddexp(0.0, -t.T * f), axis=1)

    f = margins(theta)
    obj = objective(theta, f)
    eye = np.eye(theta.shape[1])
    for _ in range(max_iter):
        p = 0.5 * (1.0 + np.tanh(-0.5 * t.T * f))  # σ(−t f), numerically stable: (K, N)
        g = -t.T * p * s.T  # d loss / d f: (K, N)
        curv = s.T * p * (1.0 - p)  # (K, N)
        if kernel:
            lhs = eye + C * curv[:, :, None] * gram[None]  # (K, N, N)
            step = -np.linalg.solve(lhs, (theta + C * g)[:, :, None])[:, :, 0]
        else:
            lhs = eye + C * (xt.T[None] * curv[:, None, :]) @ xt  # (K, p, p) = I + C X̃ᵀ D X̃
            grad = theta + C * g @ xt  # (K, p)
            step = -np.linalg.solve(lhs, grad[:, :, None])[:, :, 0]
        scale = np.ones(k_problems)
        for _ in range(30):  # backtracking, per problem
            cand = theta + scale[:, None] * step
            f_cand = margins(cand)
            obj_cand = objective(cand, f_cand)
            worse = obj_cand > obj + 1e-12 * np.abs(obj)
            if not worse.any():
                break
            scale[worse] *= 0.5
        change = np.max(np.abs(f_cand - f))
        theta, f, obj = cand, f_cand, obj_cand
        if change < tol:
            break
    w = theta @ xt if kernel else theta  # (K, p)
    return w[:, :u], w[:, u]


def _prepare(activity: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonically ordered, centred and globally scaled activity, its labels and condition ids."""
    activity = np.asarray(activity, dtype=np.float64)
    labels = np.asarray(labels)
    cond = condition_index(labels)
    if activity.ndim != 2 or activity.shape[0] != cond.shape[0]:
        raise ValueError(f"activity must be (N, U) with N={cond.shape[0]}, got {activity.shape}")
    centred = activity - activity.mean(axis=0)
    # Key invariant to unit permutation, translation and scale: the sorted values of the centred
    # row (then the row itself, for exact ties).
    key = np.concatenate([np.sort(centred, axis=1), centred], axis=1)  # (N, 2U)
    order = np.lexsort(key.T[::-1])
    labels, cond, centred = labels[order], cond[order], centred[order]
    scale = np.sqrt(np.mean(centred**2))
    return (centred / scale if scale > 0 else centred), labels.astype(np.int64), cond


def _balanced_accuracy(targets: np.ndarray, decision: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Balanced accuracy of sign(decision) per problem; all arrays (N, K), test a bool mask -> (K,).

    Mean over the classes present among a problem's test samples of the fraction correct."""
    correct = np.where(decision > 0, 1, -1) == targets
    accs = []
    for cls in (-1, 1):
        members = test & (targets == cls)
        n = members.sum(axis=0)
        accs.append(np.where(n > 0, (correct & members).sum(axis=0) / np.maximum(n, 1), np.nan))
    return np.nanmean(np.stack(accs), axis=0)


def _decode(
    x: np.ndarray, targets: np.ndarray, train: np.ndarray, test: np.ndarray, decoder: DecoderFactory | None
) -> np.ndarray:
    """Held-out balanced accuracy of K decoders: x (N, U); targets, train, test (N, K) -> (K,)."""
    if decoder is None:
        used = train.any(axis=1)  # samples no problem trains on only enlarge the solve
        with _one_blas_thread():
            coef, intercept = fit_logistic(x[used], targets[used], train[used].astype(np.float64))
        decision = x @ coef.T + intercept  # (N, K)
    else:
        decision = np.zeros(targets.shape)
        # Inputs are validated above; skipping scikit-learn's per-call checks halves the cost.
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            for k in range(targets.shape[1]):
                model = decoder().fit(x[train[:, k]], targets[train[:, k], k])
                decision[:, k] = np.where(model.predict(x) == 1, 1.0, -1.0)
    return _balanced_accuracy(targets, decision, test)


def ccgp_splits(d: int, scheme: Literal["leave_one_out", "half"] = "leave_one_out") -> list[np.ndarray]:
    """Held-out context sets for CCGP: a list of (2**(d-1),) bool masks over contexts α.

    Contexts are the assignments α of the d − 1 other latents, in ``all_conditions(d - 1)`` order.

    * ``"leave_one_out"``: each context held out in turn (2**(d−1) splits); train on the rest.
    * ``"half"`` (Johnston & Fusi 2023): for each other latent j and value s, hold out all
      contexts with y_j = s (2(d − 1) splits): train on one half of the other latent's values.

    >>> [m.astype(int).tolist() for m in ccgp_splits(2, "half")]
    [[1, 0], [0, 1]]
    """
    if d < 2:
        return []
    ctx = all_conditions(d - 1)  # (2**(d-1), d-1)
    if scheme == "leave_one_out":
        return [np.arange(len(ctx)) == a for a in range(len(ctx))]
    if scheme == "half":
        return [ctx[:, j] == s for j in range(d - 1) for s in (-1, 1)]
    raise ValueError(f"unknown CCGP scheme {scheme!r}; expected 'leave_one_out' or 'half'")


def ccgp_scores(
    activity: np.ndarray,
    labels: np.ndarray,
    *,
    scheme: Literal["leave_one_out", "half"] = "leave_one_out",
    max_splits: int | None = None,
    rng: np.random.Generator | None = None,
    decoder: DecoderFactory | None = None,
) -> np.ndarray:
    """Cross-condition generalisation performance of each latent, (d,).

    For latent k and a held-out set H of contexts α (values of the other latents, see
    ``ccgp_splits``), a decoder of y_k is trained on the samples whose context is not in H and
    tested on those whose context is in H:

        CCGP_k = mean_H  balanced_accuracy(decoder trained on α ∉ H, tested on α ∈ H).

    Chance 0.5; a factorised (abstract) code gives 1.  If a latent has more than ``max_splits``
    splits, ``max_splits`` of them are drawn without replacement from ``rng`` (then required).
    ``decoder=None`` uses ``fit_logistic``; otherwise a scikit-learn classifier factory.
    """
    x, y, cond = _prepare(activity, labels)
    n, d = y.shape
    present = (np.bincount(cond, minlength=2**d) > 0).reshape((2,) * d)
    owner, targets, train, test = [], [], [], []  # one column per (latent, split) problem
    for k in range(d):
        splits = ccgp_splits(d, scheme)
        if max_splits is not None and len(splits) > max_splits:
            if rng is None:
                raise ValueError(f"{len(splits)} CCGP splits exceed max_splits={max_splits}: pass rng")
            splits = [splits[i] for i in np.sort(rng.choice(len(splits), max_splits, replace=False))]
        if not splits:
            continue
        ctx = condition_index(np.delete(y, k, axis=1))  # (N,) context of each sample
        complete = (np.take(present, 0, axis=k) & np.take(present, 1, axis=k)).reshape(-1)  # (2**(d-1),)
        for held in splits:
            test_ctx, train_ctx = held & complete, ~held & complete
            if test_ctx.any() and train_ctx.any():
                owner.append(k)
                targets.append(y[:, k])
                train.append(train_ctx[ctx])
                test.append(test_ctx[ctx])
    out = np.full(d, np.nan)
    if not owner:
        return out
    acc = _decode(x, np.stack(targets, 1), np.stack(train, 1), np.stack(test, 1), decoder)  # (K,)
    owner = np.array(owner)
    for k in np.unique(owner):
        out[k] = acc[owner == k].mean()
    return out


def ccgp(
    activity: np.ndarray, labels: np.ndarray, *, rng: np.random.Generator | None = None, **kwargs
) -> float:
    """CCGP = mean_k CCGP_k (NaN latents ignored); options as in ``ccgp_scores``.

    >>> y = all_conditions(2).repeat(3, axis=0)                # 4 conditions x 3 samples
    >>> x = y + 0.1 * np.random.default_rng(0).normal(size=y.shape)  # a factorised code
    >>> ccgp(x, y)
    1.0
    """
    scores = ccgp_scores(activity, labels, rng=rng, **kwargs)
    return float(np.nanmean(scores)) if np.any(~np.isnan(scores)) else float("nan")


def balanced_dichotomies(
    n_items: int, *, max_dichotomies: int | None = None, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Balanced dichotomies of n items, each unordered split listed once: (K, n) bool.

    A dichotomy is a side of size floor(n/2); for even n the side containing item 0 is used, so
    there are K = C(n, n/2) / 2 of them (n odd: C(n, (n−1)/2)).  If K > ``max_dichotomies``,
    ``max_dichotomies`` distinct ones are drawn uniformly at random with ``rng`` (then required)
    instead of enumerating (2**5 = 32 conditions already have 3 * 10**8 dichotomies).

    >>> balanced_dichotomies(4).astype(int).tolist()
    [[1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1]]
    """
    if n_items < 2:
        return np.zeros((0, max(n_items, 0)), dtype=bool)
    half = n_items // 2
    even = n_items % 2 == 0
    total = math.comb(n_items, half) // (2 if even else 1)
    if max_dichotomies is None or total <= max_dichotomies:
        first = range(1, n_items) if even else range(n_items)
        combos = itertools.combinations(first, half - 1 if even else half)
        rows = []
        for c in combos:
            row = np.zeros(n_items, dtype=bool)
            row[list(c)] = True
            row[0] |= even
            rows.append(row)
        return np.array(rows)
    if rng is None:
        raise ValueError(f"{total} dichotomies exceed max_dichotomies={max_dichotomies}: pass rng")
    seen: dict[bytes, np.ndarray] = {}
    while len(seen) < max_dichotomies:
        row = np.zeros(n_items, dtype=bool)
        row[rng.permutation(n_items)[:half]] = True
        if even and not row[0]:
            row = ~row
        seen.setdefault(row.tobytes(), row)
    return np.array(list(seen.values()))


def train_test_split_by_condition(
    cond: np.ndarray, *, test_fraction: float = 0.5, rng: np.random.Generator
) -> np.ndarray:
    """(N,) bool test mask: in every condition with n_c >= 2 samples, round(test_fraction * n_c)
    of them (clipped to [1, n_c − 1]) are drawn at random for testing; rarer conditions get none."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rank = np.empty(len(cond), dtype=np.int64)
    rank[rng.permutation(len(cond))] = np.arange(len(cond))  # a random priority per sample
    test = np.zeros(len(cond), dtype=bool)
    for c in np.unique(cond):
        members = np.flatnonzero(cond == c)
        if len(members) < 2:
            continue
        n_test = int(np.clip(round(test_fraction * len(members)), 1, len(members) - 1))
        test[members[np.argsort(rank[members])[:n_test]]] = True
    return test


def shattering_accuracies(
    activity: np.ndarray,
    labels: np.ndarray,
    *,
    rng: np.random.Generator,
    max_dichotomies: int | None = 64,
    test_fraction: float = 0.5,
    decoder: DecoderFactory | None = None,
) -> np.ndarray:
    """Held-out balanced accuracy of a linear decoder for each balanced dichotomy, (K,).

    One random train/test split of the samples of every condition (``test_fraction`` held out,
    drawn from ``rng``) is shared by all dichotomies; dichotomies are those of
    ``balanced_dichotomies`` over the usable conditions (all 35 for d = 3; a random subset of
    ``max_dichotomies`` when there are more).  ``decoder`` as in ``ccgp_scores``.
    """
    x, y, cond = _prepare(activity, labels)
    counts = np.bincount(cond, minlength=2 ** y.shape[1])
    usable = np.flatnonzero(counts >= 2)  # conditions that can be both trained and tested
    if len(usable) < 2:
        return np.array([np.nan])
    keep = np.isin(cond, usable)
    x, cond = x[keep], np.searchsorted(usable, cond[keep])  # conditions renumbered 0..C'-1
    test = train_test_split_by_condition(cond, test_fraction=test_fraction, rng=rng)
    sides = balanced_dichotomies(len(usable), max_dichotomies=max_dichotomies, rng=rng)  # (K, C')
    targets = np.where(sides.T[cond], 1, -1)  # (N, K)
    k = sides.shape[0]
    return _decode(x, targets, np.repeat(~test[:, None], k, 1), np.repeat(test[:, None], k, 1), decoder)


def shattering_dimensionality(
    activity: np.ndarray,
    labels: np.ndarray,
    *,
    rng: np.random.Generator,
    threshold: float | None = None,
    **kwargs,
) -> float:
    """Shattering dimensionality: the mean of ``shattering_accuracies`` (``threshold=None``), or
    the fraction of dichotomies decoded with accuracy >= ``threshold``.  Chance 0.5 (mean)."""
    acc = shattering_accuracies(activity, labels, rng=rng, **kwargs)
    if np.isnan(acc).all():
        return float("nan")
    return float(acc.mean() if threshold is None else np.mean(acc >= threshold))
