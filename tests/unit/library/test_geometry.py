"""Tests for taskabs.geometry: closed forms, hand-computed cases, slow reference oracles, a registry
of metrics run through every invariance they claim, and null models."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from taskabs.geometry import (
    METRICS,
    all_conditions,
    balanced_dichotomies,
    ccgp,
    ccgp_scores,
    ccgp_splits,
    coding_vectors,
    condition_index,
    condition_means,
    dichotomy_parallelism_score,
    latent_dichotomy,
    null_distribution,
    parallelism_score,
    parallelism_scores,
    random_geometry,
    random_geometry_means,
    shattering_accuracies,
    shattering_dimensionality,
    shuffle_conditions,
)
from taskabs.geometry.decoding import fit_logistic, train_test_split_by_condition


# --------------------------------------------------------------------------- representations
def samples(d: int, n: int) -> np.ndarray:
    """Labels of n samples per condition, grouped by condition: (2**d * n, d)."""
    return all_conditions(d).repeat(n, axis=0)


def factorised(d=3, units=20, n=6, noise=0.05, seed=0):
    """A linear (perfectly abstract) code r(y) = M y plus isotropic noise."""
    rng = np.random.default_rng(seed)
    y = samples(d, n)
    return y @ rng.normal(size=(d, units)) + noise * rng.normal(size=(len(y), units)), y


def random_points(d=3, units=20, n=6, noise=0.05, seed=0):
    """Every condition at an independent Gaussian point (no latent structure)."""
    rng = np.random.default_rng(seed)
    y = samples(d, n)
    means = rng.normal(size=(2**d, units))
    return means[condition_index(y)] + noise * rng.normal(size=(len(y), units)), y


def generic(d=3, units=20, n=6, seed=0):
    """Half abstract, half random, noisy: every metric strictly between its extremes."""
    xf, y = factorised(d, units, n, noise=0.0, seed=seed)
    xr, _ = random_points(d, units, n, noise=0.0, seed=seed + 1)
    rng = np.random.default_rng(seed + 2)
    return xf + 3.0 * xr + 1.5 * rng.normal(size=xf.shape), y


# --------------------------------------------------------------------------- slow oracles
def condition_means_ref(x, y):
    d = y.shape[1]
    rows = []
    for cond in itertools.product((-1, 1), repeat=d):
        members = [i for i in range(len(y)) if tuple(y[i]) == cond]
        rows.append(np.mean(x[members], axis=0) if members else np.full(x.shape[1], np.nan))
    return np.array(rows)


def cosine_ref(u, v):
    nu, nv = math.sqrt(sum(a * a for a in u)), math.sqrt(sum(b * b for b in v))
    return 0.0 if nu == 0 or nv == 0 else sum(a * b for a, b in zip(u, v)) / (nu * nv)


def ps_ref(means, d):
    """PS_k by explicit loops over contexts α and pairs of contexts."""
    conds = [tuple(c) for c in itertools.product((-1, 1), repeat=d)]
    r = {c: means[i] for i, c in enumerate(conds)}
    out = []
    for k in range(d):
        vecs = []
        for alpha in itertools.product((-1, 1), repeat=d - 1):
            plus, minus = list(alpha), list(alpha)
            plus.insert(k, 1)
            minus.insert(k, -1)
            v = r[tuple(plus)] - r[tuple(minus)]
            if not np.isnan(v).any():
                vecs.append(v)
        pairs = list(itertools.combinations(vecs, 2))
        out.append(np.mean([cosine_ref(a, b) for a, b in pairs]) if pairs else np.nan)
    return np.array(out)


def bernardi_ref(means, side):
    a = [means[i] for i in range(len(side)) if side[i]]
    b = [means[i] for i in range(len(side)) if not side[i]]
    best = -np.inf
    for perm in itertools.permutations(range(len(b))):
        vecs = [a[i] - b[perm[i]] for i in range(len(a))]
        best = max(best, np.mean([cosine_ref(u, v) for u, v in itertools.combinations(vecs, 2)]))
    return best


def prepared_ref(x):
    """The decoders' documented preprocessing: centring, canonical sample order, one global scale."""
    centred = x - x.mean(axis=0)
    order = sorted(range(len(x)), key=lambda i: (tuple(np.sort(centred[i])), tuple(centred[i])))
    return order, centred / np.sqrt(np.mean(centred**2))


def sklearn_accuracy(x_tr, t_tr, x_te, t_te):
    model = LogisticRegression(C=1.0, solver="liblinear", tol=1e-10, max_iter=10_000).fit(x_tr, t_tr)
    return balanced_accuracy_score(t_te, model.predict(x_te))


def ccgp_ref(x, y):
    """Leave-one-context-out CCGP with scikit-learn, one fit per (latent, context)."""
    order, z = prepared_ref(x)
    z, y = z[order], y[order]
    d = y.shape[1]
    out = []
    for k in range(d):
        others = [tuple(np.delete(row, k)) for row in y]
        accs = []
        for alpha in itertools.product((-1, 1), repeat=d - 1):
            te = np.array([o == alpha for o in others])
            accs.append(sklearn_accuracy(z[~te], y[~te, k], z[te], y[te, k]))
        out.append(np.mean(accs))
    return np.array(out)


def shattering_ref(x, y, seed):
    """Every balanced dichotomy, scikit-learn per dichotomy, the documented random split."""
    order, z = prepared_ref(x)
    z, y = z[order], y[order]
    cond = np.array([int("".join("1" if v > 0 else "0" for v in row), 2) for row in y])
    rank = np.empty(len(y), dtype=int)
    rank[np.random.default_rng(seed).permutation(len(y))] = np.arange(len(y))
    test = np.zeros(len(y), dtype=bool)
    for c in set(cond.tolist()):
        members = sorted(np.flatnonzero(cond == c), key=lambda i: rank[i])
        test[members[: int(np.clip(round(0.5 * len(members)), 1, len(members) - 1))]] = True
    n_cond = 2 ** y.shape[1]
    accs = []
    for side in itertools.combinations(range(n_cond), n_cond // 2):
        if 0 not in side:
            continue  # each unordered dichotomy once: the side holding condition 0
        t = np.where(np.isin(cond, side), 1, -1)
        accs.append(sklearn_accuracy(z[~test], t[~test], z[test], t[test]))
    return np.array(accs)


# --------------------------------------------------------------------------- condition means
def test_all_conditions_order_and_index_roundtrip():
    conds = all_conditions(3)
    assert conds.tolist() == [list(c) for c in itertools.product((-1, 1), repeat=3)]
    assert condition_index(conds).tolist() == list(range(8))


def test_condition_means_match_loop_and_mark_missing():
    x, y = generic(n=3)
    keep = condition_index(y) != 5  # drop one condition entirely
    got = condition_means(x[keep], y[keep])
    np.testing.assert_allclose(got, condition_means_ref(x[keep], y[keep]))
    assert np.isnan(got[5]).all() and not np.isnan(np.delete(got, 5, axis=0)).any()


def test_labels_must_be_signs():
    with pytest.raises(ValueError, match="-1 and \\+1"):
        condition_means(np.zeros((2, 3)), np.array([[0], [1]]))


# --------------------------------------------------------------------------- parallelism score
def test_factorised_code_has_ps_one():
    x, y = factorised(d=4, noise=0.0)
    np.testing.assert_allclose(parallelism_scores(condition_means(x, y)), 1.0)


def test_ps_hand_computed_bent_square():
    # r(-,-)=(0,0), r(-,+)=(0,1), r(+,-)=(1,0), r(+,+)=(2,1):
    # latent 0: Δ = (1,0) and (2,0) -> cos 1;  latent 1: Δ = (0,1) and (1,1) -> cos 1/√2.
    means = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [2.0, 1.0]])
    np.testing.assert_allclose(parallelism_scores(means), [1.0, 1 / math.sqrt(2)])
    assert parallelism_score(means) == pytest.approx((1 + 1 / math.sqrt(2)) / 2)


def test_ps_hand_computed_antiparallel():
    # latent 0 flips direction with latent 1 (Δ = (1,0) then (-1,0)); latent 1 has Δ ⟂.
    means = np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(parallelism_scores(means), [-1.0, 0.0], atol=1e-12)


def test_ps_degenerate_rules():
    collapsed = np.zeros((8, 5))  # every coding vector has zero norm -> cosine 0 by rule
    np.testing.assert_array_equal(parallelism_scores(collapsed), 0.0)
    assert math.isnan(parallelism_score(np.array([[0.0], [1.0]])))  # d = 1: no pairs
    means = condition_means(*factorised(d=2, noise=0.0))
    means[3] = np.nan  # d = 2 with a missing condition: one coding vector left per latent
    assert np.isnan(parallelism_scores(means)).all()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("d", [2, 3, 4])
def test_ps_matches_loop_oracle(d, seed):
    means = np.random.default_rng(seed).normal(size=(2**d, 7))
    means[1] = 0.0  # a zero-norm coding vector or two
    means[0] = 0.0
    np.testing.assert_allclose(parallelism_scores(means), ps_ref(means, d), atol=1e-12)


def test_ps_with_missing_condition_matches_oracle():
    means = np.random.default_rng(0).normal(size=(8, 5))
    means[6] = np.nan
    np.testing.assert_allclose(parallelism_scores(means), ps_ref(means, 3))


def test_coding_vectors_definition():
    means = np.arange(16.0).reshape(8, 2)  # r(c) = (2c, 2c+1): latent k adds 2 * 2**(2-k)
    for k in range(3):
        np.testing.assert_array_equal(coding_vectors(means, k), np.full((4, 2), 2.0 * 2 ** (2 - k)))


# --------------------------------------------------------------------------- Bernardi PS
@pytest.mark.parametrize("seed", range(3))
def test_dichotomy_ps_matches_permutation_oracle(seed):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(8, 6))
    for side in balanced_dichotomies(8)[::7]:
        assert dichotomy_parallelism_score(means, side) == pytest.approx(bernardi_ref(means, side))


def test_dichotomy_ps_bounds_latent_ps_and_is_one_when_factorised():
    means = np.random.default_rng(1).normal(size=(8, 6))
    for k in range(3):
        side = latent_dichotomy(3, k)
        assert dichotomy_parallelism_score(means, side) >= parallelism_scores(means)[k] - 1e-12
        assert dichotomy_parallelism_score(condition_means(*factorised(noise=0.0)), side) == pytest.approx(
            1.0
        )


def test_dichotomy_ps_hand_computed():
    # A = {(0,0), (0,2)}, B = {(1,0), (1,2)}: matched pairing gives parallel Δ = (-1,0): PS 1;
    # the crossed pairing gives (-1,-2), (-1,2): cos = (1 - 4)/5.  Max = 1.
    means = np.array([[0.0, 0.0], [0.0, 2.0], [1.0, 0.0], [1.0, 2.0]])
    assert dichotomy_parallelism_score(means, np.array([True, True, False, False])) == pytest.approx(1.0)
    means[3] = [-1.0, 3.0]  # matched now (-1,0), (1,-1): -1/√2; crossed (1,-3), (-1,2): -7/√50
    assert dichotomy_parallelism_score(means, np.array([True, True, False, False])) == pytest.approx(
        -1 / math.sqrt(2)
    )


def test_dichotomy_ps_search_finds_exact_max_on_small_case():
    means = np.random.default_rng(3).normal(size=(8, 4))
    side = balanced_dichotomies(8)[11]
    exact = dichotomy_parallelism_score(means, side)
    approx = dichotomy_parallelism_score(means, side, max_pairings=1, rng=np.random.default_rng(0))
    assert approx == pytest.approx(exact)
    with pytest.raises(ValueError, match="rng"):
        dichotomy_parallelism_score(means, side, max_pairings=1)


def test_dichotomy_ps_rejects_unbalanced_and_nan_for_missing():
    means = np.random.default_rng(0).normal(size=(8, 3))
    with pytest.raises(ValueError, match="balanced"):
        dichotomy_parallelism_score(means, np.arange(8) < 3)
    means[2] = np.nan
    assert math.isnan(dichotomy_parallelism_score(means, latent_dichotomy(3, 0)))


# --------------------------------------------------------------------------- decoders
@pytest.mark.parametrize("n,units", [(30, 50), (120, 10)])  # sample-space and weight-space Newton
def test_fit_logistic_matches_sklearn(n, units):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, units))
    t = np.where(x[:, :2].sum(1, keepdims=True) + rng.normal(size=(n, 4)) > 0, 1, -1)
    w = (rng.random((n, 4)) > 0.3).astype(float)  # each problem trains on its own subset
    coef, intercept = fit_logistic(x, t, w)
    for k in range(4):
        keep = w[:, k] > 0
        ref = LogisticRegression(C=1.0, solver="liblinear", tol=1e-12, max_iter=10_000).fit(
            x[keep], t[keep, k]
        )
        np.testing.assert_allclose(coef[k], ref.coef_[0], atol=1e-5)
        assert intercept[k] == pytest.approx(ref.intercept_[0], abs=1e-5)


def test_factorised_code_has_ccgp_one():
    for scheme in ("leave_one_out", "half"):
        np.testing.assert_array_equal(ccgp_scores(*factorised(d=3, noise=0.3), scheme=scheme), 1.0)


def test_ccgp_hand_computed_antiparallel_latent_is_zero():
    # Latent 0 is coded along +e0 when y1 = -1 and along -e0 when y1 = +1: a decoder trained in
    # one context predicts the opposite class in the other (balanced accuracy 0).
    means = np.array([[-1.0, 0.0], [1.0, 2.0], [1.0, 0.0], [-1.0, 2.0]])  # conditions (-,-),(-,+),(+,-),(+,+)
    y = samples(2, 3)
    assert ccgp_scores(means[condition_index(y)], y)[0] == 0.0


@pytest.mark.parametrize("seed", range(2))
def test_ccgp_matches_sklearn_oracle(seed):
    x, y = generic(seed=seed)
    np.testing.assert_allclose(ccgp_scores(x, y), ccgp_ref(x, y))
    np.testing.assert_allclose(
        ccgp_scores(x, y, decoder=lambda: LogisticRegression(solver="liblinear")), ccgp_ref(x, y)
    )


def test_ccgp_splits_and_degenerate_rules():
    assert len(ccgp_splits(3)) == 4 and len(ccgp_splits(3, "half")) == 4 and ccgp_splits(1) == []
    with pytest.raises(ValueError, match="scheme"):
        ccgp_splits(3, "bogus")
    assert math.isnan(ccgp(*factorised(d=1)))
    x, y = factorised(d=2)
    keep = condition_index(y) != 3  # (+,+) missing: each latent keeps one complete context
    assert np.isnan(ccgp_scores(x[keep], y[keep])).all()
    x, y = factorised(d=3)
    keep = condition_index(y) != 7  # (+,+,+) missing: every latent keeps 3 complete contexts
    np.testing.assert_array_equal(ccgp_scores(x[keep], y[keep]), 1.0)


def test_balanced_dichotomies_enumeration():
    sides = balanced_dichotomies(8)
    assert sides.shape == (math.comb(8, 4) // 2, 8) and (sides.sum(1) == 4).all() and sides[:, 0].all()
    assert len({s.tobytes() for s in sides}) == len(sides)
    odd = balanced_dichotomies(5)
    assert odd.shape == (math.comb(5, 2), 5) and (odd.sum(1) == 2).all()
    sub = balanced_dichotomies(16, max_dichotomies=50, rng=np.random.default_rng(0))
    assert sub.shape == (50, 16) and len({s.tobytes() for s in sub}) == 50 and sub[:, 0].all()
    with pytest.raises(ValueError, match="rng"):
        balanced_dichotomies(16, max_dichotomies=50)


def test_split_by_condition_sizes():
    cond = np.repeat(np.arange(4), [1, 2, 5, 6])
    test = train_test_split_by_condition(cond, rng=np.random.default_rng(0))
    assert [int(test[cond == c].sum()) for c in range(4)] == [0, 1, 2, 3]  # round(n/2) in [1, n-1]


@pytest.mark.parametrize("seed", range(2))
def test_shattering_matches_sklearn_oracle(seed):
    x, y = generic(seed=seed)
    got = shattering_accuracies(x, y, rng=np.random.default_rng(seed))
    np.testing.assert_allclose(got, shattering_ref(x, y, seed))


def test_shattering_extremes():
    rng = np.random.default_rng(0)
    # Random points in 20 dims: every dichotomy is linearly separable.
    assert shattering_dimensionality(*random_points(noise=0.01), rng=rng) == 1.0
    # A 3-d linear code of the cube: the parity y0*y1*y2 (and others) is not separable.
    x, y = factorised(d=3, units=3, noise=0.01)
    acc = shattering_accuracies(x, y, rng=rng)
    parity = [
        i for i, s in enumerate(balanced_dichotomies(8)) if (np.prod(all_conditions(3), 1)[s] == -1).all()
    ]
    assert acc[parity[0]] <= 0.75 and shattering_dimensionality(x, y, rng=rng) < 0.95
    assert shattering_dimensionality(x, y, rng=rng, threshold=0.99) < 1.0


# --------------------------------------------------------------------------- invariances
def permute_samples(x, y, rng):
    p = rng.permutation(len(x))
    return x[p], y[p]


def permute_units(x, y, rng):
    return x[:, rng.permutation(x.shape[1])], y


def rotate_units(x, y, rng):
    q, _ = np.linalg.qr(rng.normal(size=(x.shape[1], x.shape[1])))
    return x @ q, y


def affine_units(x, y, rng):
    return 3.7 * x + rng.normal(size=x.shape[1]), y  # one positive scale, any translation


def permute_latents(x, y, rng):
    return x, y[:, rng.permutation(y.shape[1])]


def flip_latent(x, y, rng):
    y = y.copy()
    y[:, 1] *= -1
    return x, y


TRANSFORMS = {
    "sample order": permute_samples,
    "unit permutation": permute_units,
    "unit rotation": rotate_units,
    "global affine": affine_units,
    "latent permutation": permute_latents,
    "latent sign flip": flip_latent,
}
# The invariances each metric claims (scikit-learn style registry).  Shattering's train/test
# split follows the canonical sample order, which a rotation of units changes.
INVARIANCES = {
    "ps": set(TRANSFORMS),
    "ccgp": set(TRANSFORMS),
    "shattering": set(TRANSFORMS) - {"unit rotation"},
}


def test_registry_covers_all_metrics():
    assert set(INVARIANCES) == set(METRICS)


@pytest.mark.parametrize(
    "name,transform", [(m, t) for m in sorted(INVARIANCES) for t in sorted(INVARIANCES[m])]
)
def test_metric_invariance(name, transform):
    metric = METRICS[name]
    x, y = generic(seed=4)
    value = metric(x, y, rng=np.random.default_rng(7))
    assert 0.0 < value < 1.0  # a non-trivial case
    x2, y2 = TRANSFORMS[transform](x, y, np.random.default_rng(11))
    assert metric(x2, y2, rng=np.random.default_rng(7)) == pytest.approx(value, abs=1e-9)


@pytest.mark.parametrize("name", sorted(METRICS))
def test_metric_is_deterministic_given_rng(name):
    x, y = generic(seed=5)
    assert METRICS[name](x, y, rng=np.random.default_rng(3)) == METRICS[name](
        x, y, rng=np.random.default_rng(3)
    )


# --------------------------------------------------------------------------- nulls
def test_shuffle_keeps_label_multiset():
    y = samples(3, 4)
    ys = shuffle_conditions(y, rng=np.random.default_rng(0))
    assert sorted(map(tuple, ys)) == sorted(map(tuple, y)) and not np.array_equal(ys, y)


def test_random_geometry_keeps_norms_and_residuals():
    x, y = generic()
    means = condition_means(x, y)
    new = random_geometry_means(means, rng=np.random.default_rng(0))
    grand = means.mean(0)  # every condition keeps its distance to the original grand mean
    np.testing.assert_allclose(np.linalg.norm(new - grand, axis=1), np.linalg.norm(means - grand, axis=1))
    abstract = condition_means(*factorised(noise=0.2))
    assert (
        np.abs(parallelism_scores(random_geometry_means(abstract, rng=np.random.default_rng(1)))).max() < 0.5
    )
    xr = random_geometry(x, y, rng=np.random.default_rng(0))
    cond = condition_index(y)
    np.testing.assert_allclose(xr - condition_means(xr, y)[cond], x - means[cond], atol=1e-9)
    means[2] = np.nan
    assert np.isnan(random_geometry_means(means, rng=np.random.default_rng(0))[2]).all()


def test_nulls_are_clearly_below_a_factorised_code():
    x, y = factorised(d=3, units=20, n=6, noise=0.2)
    rng = np.random.default_rng(0)
    for name, n_draws, chance in [("ps", 30, 0.0), ("ccgp", 20, 0.5)]:
        metric = METRICS[name]
        assert metric(x, y, rng=rng) > 0.95
        for null in ("shuffle", "geometry"):
            draws = null_distribution(metric, x, y, null=null, n_draws=n_draws, rng=rng)
            assert draws.shape == (n_draws,)
            assert abs(draws.mean() - chance) < 0.15, (name, null, draws.mean())
    # Shattering: shuffling destroys it; random geometry is *more* separable than a 3-latent code.
    shuffled = null_distribution(METRICS["shattering"], x, y, null="shuffle", n_draws=3, rng=rng)
    assert abs(shuffled.mean() - 0.5) < 0.1
    with pytest.raises(ValueError, match="null model"):
        null_distribution(METRICS["ps"], x, y, null="bogus", n_draws=1, rng=rng)


# ------------------------------------------------------------------- half-space generalisation
def test_halfspace_generalisation_of_a_linear_code_and_its_null():
    from taskabs.geometry.generalisation import halfspace_generalisation, halfspace_splits

    rng = np.random.default_rng(0)
    u, v = halfspace_splits(5, 20, rng=rng)
    assert np.allclose(np.sum(u * v, axis=1), 0) and np.allclose(np.linalg.norm(u, axis=1), 1)
    y = rng.standard_normal((600, 5))
    linear = y @ rng.standard_normal((5, 40)) + 0.05 * rng.standard_normal((600, 40))
    good = halfspace_generalisation(linear, y, n_splits=10, rng=rng)
    assert good["classifier"] > 0.95 and good["regression"] > 0.95
    # a code of a nonlinear (non-abstract) function of y generalises poorly out of the half
    bumpy = np.cos(3.0 * y @ rng.standard_normal((5, 40)))
    bad = halfspace_generalisation(bumpy, y, n_splits=10, rng=rng)
    assert bad["classifier"] < 0.7 and bad["regression"] < 0.3
    shuffled = halfspace_generalisation(linear, y[rng.permutation(600)], n_splits=10, rng=rng)
    assert abs(shuffled["classifier"] - 0.5) < 0.1 and shuffled["regression"] < 0.1
    with pytest.raises(ValueError, match="d >= 2"):
        halfspace_splits(1, 3, rng=rng)
