"""OOD and calibration metrics against slow reference implementations and hand cases."""

import math

import numpy as np
import pytest

from taskabs import calibration, ood


def slow_auroc(scores, is_positive):
    """All pairs: P(pos > neg) + 0.5 P(pos == neg)."""
    pos = [s for s, p in zip(scores, is_positive) if p]
    neg = [s for s, p in zip(scores, is_positive) if not p]
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def slow_fpr_at_tpr(scores, is_positive, tpr):
    """Scan thresholds from high to low; first one reaching the TPR."""
    scores, is_positive = np.asarray(scores), np.asarray(is_positive, bool)
    for t in sorted(set(scores.tolist()), reverse=True):
        predicted = scores >= t
        if predicted[is_positive].mean() >= tpr:
            return predicted[~is_positive].mean()
    raise AssertionError("unreachable: the lowest threshold has TPR 1")


def _random_case(seed, n=60, ties=True):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 8, n).astype(float) if ties else rng.standard_normal(n)
    labels = rng.random(n) < rng.uniform(0.2, 0.8)
    labels[:2] = [True, False]  # both classes present
    return scores, labels


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("ties", [True, False])
def test_auroc_matches_all_pairs_reference(seed, ties):
    scores, labels = _random_case(seed, ties=ties)
    assert ood.auroc(scores, labels) == pytest.approx(slow_auroc(scores, labels), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_roc_curve_area_equals_auroc_and_curve_is_monotone(seed):
    scores, labels = _random_case(seed)
    fpr, tpr, thr = ood.roc_curve(scores, labels)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()
    assert (np.diff(thr) < 0).all() and thr[0] == np.inf
    area = np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)
    assert area == pytest.approx(ood.auroc(scores, labels), abs=1e-12)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("target", [0.5, 0.9, 0.95, 1.0])
def test_fpr_at_tpr_matches_threshold_scan(seed, target):
    scores, labels = _random_case(seed)
    assert ood.fpr_at_tpr(scores, labels, tpr=target) == pytest.approx(
        slow_fpr_at_tpr(scores, labels, target)
    )


def test_fpr95_hand_cases():
    # 20 positives with scores 1..20, negatives at 0.5 (below all) and 10.5 (inside)
    pos = np.arange(1, 21, dtype=float)
    scores = np.r_[pos, 0.5, 10.5]
    labels = np.r_[np.ones(20, bool), False, False]
    # TPR >= 0.95 needs 19 positives: threshold 2 -> only the 10.5 negative passes
    assert ood.fpr_at_tpr(scores, labels, tpr=0.95) == 0.5
    # perfect separation
    assert ood.fpr_at_tpr([0, 0, 1, 1], [False, False, True, True]) == 0.0
    # reversed scores: every negative must be accepted
    assert ood.fpr_at_tpr([1, 1, 0, 0], [False, False, True, True]) == 1.0
    # a negative tied with the threshold counts as a false positive
    assert ood.fpr_at_tpr([1.0, 1.0, 2.0], [True, False, True], tpr=1.0) == 1.0


METRICS = {
    "auroc": ood.auroc,
    "fpr95": lambda s, y: ood.fpr_at_tpr(s, y, tpr=0.95),
    "roc_area": lambda s, y: float(np.trapezoid(*ood.roc_curve(s, y)[1::-1])),
}


@pytest.mark.parametrize("name", METRICS)
def test_ranking_metrics_invariant_to_order_and_monotone_transforms(name):
    metric = METRICS[name]
    scores, labels = _random_case(11)
    base = metric(scores, labels)
    perm = np.random.default_rng(0).permutation(scores.size)
    assert metric(scores[perm], labels[perm]) == pytest.approx(base)
    assert metric(np.exp(scores) * 3 - 7, labels) == pytest.approx(base)


def test_auroc_closed_forms_and_degenerate_cases():
    assert ood.auroc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert ood.auroc([1, 2, 3, 4], [1, 1, 0, 0]) == 0.0
    assert ood.auroc([5, 5, 5, 5], [0, 1, 0, 1]) == 0.5
    scores, labels = _random_case(3, ties=False)
    assert ood.auroc(-scores, labels) == pytest.approx(1 - ood.auroc(scores, labels))
    assert math.isnan(ood.auroc([1, 2], [1, 1]))
    assert math.isnan(ood.fpr_at_tpr([1, 2], [0, 0]))
    with pytest.raises(ValueError):
        ood.auroc([1.0, float("nan")], [0, 1])


def test_ece_hand_cases():
    # two bins: conf 0.9 (acc 0.5, gap 0.4) and 0.6 (acc 1, gap 0.4), equal weights
    assert calibration.expected_calibration_error([0.9, 0.9, 0.6, 0.6], [1, 0, 1, 1], n_bins=10) == 0.4
    # calibrated: 80% confident and 80% right
    assert calibration.expected_calibration_error([0.8] * 5, [1, 1, 1, 1, 0]) == pytest.approx(0)
    # fully confident, always wrong
    assert calibration.expected_calibration_error([1.0, 1.0], [0, 0]) == 1.0
    # confidence on a bin edge belongs to the lower bin: (0, .5] and (.5, 1]
    bins = calibration.reliability_bins([0.5, 0.0, 0.51], [1, 1, 0], n_bins=2)
    assert bins["count"].tolist() == [2, 1]
    assert bins["accuracy"].tolist() == [1.0, 0.0]
    assert math.isnan(calibration.expected_calibration_error([], []))
    with pytest.raises(ValueError):
        calibration.reliability_bins([1.2], [1])


def test_ece_equals_weighted_gap_on_random_data():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.1, 1.0, 500)
    hit = rng.random(500) < conf**2
    bins = calibration.reliability_bins(conf, hit, n_bins=15)
    assert bins["count"].sum() == 500
    slow = 0.0
    for lo, hi in zip(bins["edges"][:-1], bins["edges"][1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            slow += inside.mean() * abs(hit[inside].mean() - conf[inside].mean())
    assert calibration.expected_calibration_error(conf, hit, n_bins=15) == pytest.approx(slow)


def test_accuracy_coverage_curve():
    cov, acc, thr = calibration.accuracy_coverage_curve([0.9, 0.8, 0.8, 0.3], [1, 1, 0, 0])
    assert cov.tolist() == [0.25, 0.75, 1.0]
    assert acc.tolist() == [1.0, 2 / 3, 0.5]
    assert thr.tolist() == [0.9, 0.8, 0.3]
    rng = np.random.default_rng(1)
    conf, hit = rng.random(100), rng.random(100) < 0.7
    cov, acc, _ = calibration.accuracy_coverage_curve(conf, hit)
    assert cov[-1] == 1.0 and acc[-1] == pytest.approx(hit.mean())
    assert (np.diff(cov) > 0).all()


def test_gradient_scores_closed_forms():
    g = np.array([[3.0, -4.0, 0.0], [1.0, 1.0, 1.0]])
    np.testing.assert_allclose(ood.gradient_norm_score(g), [5.0, math.sqrt(3)])
    np.testing.assert_allclose(ood.gradient_max_score(g), [4.0, -1.0])
    np.testing.assert_allclose(ood.gradient_mean_score(g), [-1 / 3, 1.0])
    entropy = ood.gradient_entropy_score(g)
    assert entropy[1] == pytest.approx(math.log(3))  # no class stands out
    assert 0 < entropy[0] < math.log(3)
    # entropy only sees differences between classes
    np.testing.assert_allclose(ood.gradient_entropy_score(g + 5.0), entropy)
    # high temperature -> uniform
    assert ood.gradient_entropy_score(g, temperature=1e6)[0] == pytest.approx(math.log(3))


def test_classifier_baselines():
    logits = np.array([[0.0, 0.0], [math.log(3), 0.0]])
    np.testing.assert_allclose(ood.max_softmax_score(logits), [0.5, 0.75])
    np.testing.assert_allclose(ood.energy_score(logits), [-math.log(2), -math.log(4)])
    np.testing.assert_allclose(ood.max_softmax_score(logits + 10), ood.max_softmax_score(logits))
    np.testing.assert_allclose(ood.energy_score(logits + 10), ood.energy_score(logits) - 10)
    np.testing.assert_allclose(ood.softmax_entropy(logits)[0], math.log(2))
    big = np.array([[1000.0, 0.0]])  # no overflow
    assert ood.energy_score(big)[0] == pytest.approx(-1000.0)
    assert ood.energy_score(logits, temperature=2.0)[0] == pytest.approx(-2 * math.log(2))


def test_centred_scores_ignore_the_common_mode_and_the_scale_of_the_loss():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((20, 10))
    common = rng.standard_normal((20, 1))
    np.testing.assert_allclose(ood.centred_gradient(g).sum(1), 0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(ood.centred_unit_gradient(g), axis=1), 1)
    loss = rng.uniform(50, 100, 20)
    for c in (0.01, 3.0, 1e4):  # L -> cL multiplies g (and L) by c; adding a*1 moves g along all-ones
        shifted = c * g + c * common
        np.testing.assert_allclose(ood.gradient_peak_score(shifted), ood.gradient_peak_score(g))
        np.testing.assert_allclose(
            ood.centred_gradient_entropy_score(shifted, temperature=0.2),
            ood.centred_gradient_entropy_score(g, temperature=0.2),
        )
        np.testing.assert_allclose(
            ood.relative_gradient_norm_score(shifted, c * loss), ood.relative_gradient_norm_score(g, loss)
        )
    # the uncentred scores are not invariant: the defect the centred ones fix
    assert not np.allclose(ood.gradient_max_score(3 * g), ood.gradient_max_score(g))
    assert ood.gradient_peak_score(np.ones((1, 4)))[0] == 0.0  # flat gradient: no class stands out


def test_gradient_peak_closed_forms_and_orientation():
    C = 4
    one_class = np.array([[-3.0, 1.0, 1.0, 1.0]])  # one class lowers the loss, the others raise it equally
    assert ood.gradient_peak_score(one_class)[0] == pytest.approx(math.sqrt((C - 1) / C))
    all_but_one = np.array([[-1.0, -1.0, -1.0, 3.0]])
    assert ood.gradient_peak_score(all_but_one)[0] == pytest.approx(1 / math.sqrt(C * (C - 1)))
    # orientation: a gradient that singles out a class (in-distribution-like) is more confident than
    # a diffuse one (an input no class explains): as an OOD score (-peak) the diffuse one ranks higher
    rng = np.random.default_rng(1)
    in_dist = rng.normal(0, 0.1, (200, 10))
    in_dist[np.arange(200), rng.integers(0, 10, 200)] -= 3.0
    out = rng.normal(0, 1.0, (200, 10))
    is_ood = np.r_[np.zeros(200, bool), np.ones(200, bool)]
    score = -ood.gradient_peak_score(np.concatenate([in_dist, 50 * out]))  # OOD also has a larger |g|
    assert ood.auroc(score, is_ood) > 0.95
    entropy = ood.centred_gradient_entropy_score(np.concatenate([in_dist, 50 * out]), temperature=0.3)
    assert ood.auroc(entropy, is_ood) > 0.95
    # the raw max(-g) is fooled by the larger |g| of the OOD inputs: the failure the centring and
    # normalisation remove
    raw = -ood.gradient_max_score(np.concatenate([in_dist, 50 * out]))
    assert ood.auroc(raw, is_ood) < 0.5


def test_relative_norm_is_large_when_z_explains_the_loss():
    g = np.array([[-5.0, 5.0], [-5.0, 5.0]])
    np.testing.assert_allclose(
        ood.relative_gradient_norm_score(g, [10.0, 1000.0]), [math.sqrt(50) / 10, math.sqrt(50) / 1000]
    )


def test_no_network_floors_closed_forms():
    x = np.array([[0.0, 1.0, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_allclose(ood.ink_deviation_score(x, 2.0), [0.0, 2.0])
    np.testing.assert_allclose(ood.ink_deviation_score(-x, 2.0), [0.0, 2.0])  # ink is the L1 norm
    mean = np.full(4, 0.5)
    np.testing.assert_allclose(ood.bernoulli_pixel_nll(x, mean), [4 * math.log(2)] * 2)
    p = np.array([0.1, 0.9, 0.5, 0.5])
    expected = -(math.log(0.9) + math.log(0.9) + 2 * math.log(0.5))
    assert ood.bernoulli_pixel_nll(x[:1], p)[0] == pytest.approx(expected)
    assert np.isfinite(ood.bernoulli_pixel_nll(x, np.array([0.0, 1.0, 0.0, 1.0]))).all()  # clipped
    nll = ood.gaussian_pixel_nll(x, np.zeros(4), np.ones(4))
    np.testing.assert_allclose(nll, 0.5 * (x**2).sum(1) + 2 * math.log(2 * math.pi))
    tiny = ood.gaussian_pixel_nll(x, np.zeros(4), np.zeros(4), min_variance=0.5)
    np.testing.assert_allclose(tiny, ood.gaussian_pixel_nll(x, np.zeros(4), np.full(4, 0.5)))
