"""Conformal calibration: finite-sample coverage on synthetic exchangeable data."""
import math

import numpy as np
import pytest

from safefql_core import calibration as cal


def test_conformal_quantile_index():
    scores = np.arange(1, 20, dtype=float)        # n = 19; ceil(20 * 0.9) = 18 -> 18th smallest
    assert cal.conformal_quantile(scores, 0.1) == 18.0
    assert cal.conformal_quantile(np.arange(5.0), 0.1) == float("inf")  # too few for ε = 0.1


def test_split_coverage_holds_and_is_tight():
    """Over many random splits, P(y <= V̂ + q̂) >= 1 - ε and not far above it."""
    rng = np.random.default_rng(0)
    eps, n, trials, hits = 0.1, 200, 400, []
    for _ in range(trials):
        s = rng.uniform(-1, 1, 2 * n + 1)
        y = s + rng.gamma(2.0, 0.3, s.shape) - 0.5      # outcome = value + skewed noise
        fit = cal.split_conformal(y[:n], s[:n], eps)
        hits.append(y[-1] <= s[-1] + fit["q_hat"])      # one fresh exchangeable point
    rate = np.mean(hits)
    assert rate >= 1 - eps - 0.03                       # 400 trials: sd of the rate ~0.015
    assert rate <= 1 - eps + 0.05


def test_split_delta_is_never_positive():
    y = np.full(50, -5.0)
    v = np.zeros(50)
    assert cal.split_conformal(y, v, 0.1)["delta"] == 0.0


def test_binomial_cdf_and_clopper_pearson():
    assert cal.binomial_cdf(0, 3, 0.5) == pytest.approx(0.125)
    assert cal.binomial_cdf(1, 3, 0.5) == pytest.approx(0.5)
    # zero events in n trials: the upper bound is 1 - beta**(1/n)
    assert cal.clopper_pearson_upper(0, 100, 0.05) == pytest.approx(1 - 0.05 ** (1 / 100), rel=1e-6)
    assert cal.clopper_pearson_upper(5, 5, 0.05) == 1.0


def test_beta_threshold_stops_where_violations_start():
    v = np.linspace(-1, -0.01, 400)
    y = np.where(v > -0.3, 1.0, -1.0)        # states with V̂ > -0.3 violate
    out = cal.beta_threshold(y, v, epsilon=0.05, beta=0.05)
    check = cal.coverage(y, v, out["delta"])
    assert check["coverage_lower_bound"] >= 0.95 - 1e-9
    assert -0.35 < out["delta"] <= -0.25


def test_beta_threshold_says_when_no_threshold_qualifies():
    v = np.linspace(-1, -0.01, 400)
    out = cal.beta_threshold(np.ones(400), v, epsilon=0.05, beta=0.05)   # every state violates
    assert out["fell_back"] and out["delta"] == -2.0
    assert not cal.beta_threshold(np.where(v > -0.3, 1.0, -1.0), v, 0.05, 0.05)["fell_back"]


def test_logged_outcome_looks_only_as_far_as_the_horizon():
    margins = np.array([-1.0] * 9 + [0.5] + [-1.0] * 5)   # episode 1: ticks 0-9, violating at 9
    ends = np.array([10, 10, 10, 15])
    idx = np.array([0, 5, 9, 10])
    assert cal.logged_outcome(margins, idx, ends).tolist() == [0.5, 0.5, 0.5, -1.0]
    assert cal.logged_outcome(margins, idx, ends, horizon=3).tolist() == [-1.0, -1.0, 0.5, -1.0]
    assert cal.logged_outcome(margins, idx, ends, horizon=5).tolist() == [-1.0, 0.5, 0.5, -1.0]


def test_coverage_counts_certified_violations():
    out = cal.coverage(np.array([1.0, -1.0, -1.0, 1.0]), np.array([-2.0, -2.0, -2.0, 0.5]), delta=0.0)
    assert out["certified"] == 3 and out["violations_among_certified"] == 1
    assert out["coverage"] == pytest.approx(2 / 3)
    assert out["coverage_lower_bound"] < 2 / 3 < out["coverage_upper_bound"]


def binomial_tail_exact(k: int, n: int, p: float, upper: bool) -> float:
    """P(Bin(n, p) <= k) (upper=False) or P(Bin(n, p) >= k) (upper=True) by direct enumeration
    with exact binomial coefficients: independent of calibration.binomial_cdf's log-space sum."""
    terms = range(k, n + 1) if upper else range(0, k + 1)
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in terms)


@pytest.mark.parametrize("k,n", [(0, 20), (1, 20), (3, 40), (17, 60), (39, 40)])
def test_clopper_pearson_bounds_solve_the_exact_binomial_tails(k, n):
    beta = 0.05
    upper = cal.clopper_pearson_upper(k, n, beta)
    lower = cal.clopper_pearson_lower(k, n, beta)
    assert binomial_tail_exact(k, n, upper, upper=False) == pytest.approx(beta, rel=1e-6)
    if k > 0:
        assert binomial_tail_exact(k, n, lower, upper=True) == pytest.approx(beta, rel=1e-6)
    else:
        assert lower == pytest.approx(0.0, abs=1e-12)


def test_coverage_interval_is_two_sided_at_the_stated_confidence():
    """confidence 1 − β means β / 2 in each tail: the violation-rate bounds solve the exact tails
    at β / 2 (bounds at β each would be a 1 − 2β interval mislabelled as 1 − β)."""
    y = np.array([1.0] * 3 + [-1.0] * 37)             # 3 violations among 40 certified states
    out = cal.coverage(y, np.full(40, -1.0), delta=0.0, beta=0.1)
    assert out["confidence"] == pytest.approx(0.9)
    rate_hi, rate_lo = 1 - out["coverage_lower_bound"], 1 - out["coverage_upper_bound"]
    assert binomial_tail_exact(3, 40, rate_hi, upper=False) == pytest.approx(0.05, rel=1e-6)
    assert binomial_tail_exact(3, 40, rate_lo, upper=True) == pytest.approx(0.05, rel=1e-6)


def test_conformal_quantile_at_the_last_order_statistic():
    """(n + 1)(1 − ε) = n exactly: the n-th (largest) score, not +inf."""
    assert cal.conformal_quantile(np.arange(1.0, 10.0), 0.1) == 9.0


def test_a_state_exactly_at_the_threshold_is_not_certified():
    out = cal.coverage(np.array([1.0, -1.0]), np.array([-0.5, -1.0]), delta=-0.5)
    assert out["certified"] == 1 and out["violations_among_certified"] == 0


def test_beta_threshold_pays_for_every_grid_point_tested():
    """Bonferroni over the 101-point grid: with 0 violations among m certified states the CP
    bound is 1 − (β / 101)^(1/m), which is ≤ ε = 0.05 only from m = 149 on (149 > ln(0.05/101) /
    ln(0.95) = 148.4). Without the correction m = 59 would already do. 100 always-certified safe
    states therefore certify nothing; 200 certify every grid point up to the violating states'
    V̂ = −1.5 itself (certified means V̂ < δ, strictly), so δ = −1.5."""
    def data(safe: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.array([-1.0] * safe + [1.0] * 50)
        return y, np.array([-3.0] * safe + [-1.5] * 50)

    few = cal.beta_threshold(*data(100), epsilon=0.05, beta=0.05)
    assert few["fell_back"] and few["delta"] == -2.0
    many = cal.beta_threshold(*data(200), epsilon=0.05, beta=0.05)
    assert not many["fell_back"] and many["delta"] == pytest.approx(-1.5)


def test_the_grid_reaches_no_further_than_the_trained_margins():
    """Narrow margins (a robot's clearance within 0.8 m) shrink the grid, so even the fallback,
    its most conservative point, stays a threshold the bundle accepts; wide ones keep 2 units."""
    assert cal.grid_span([-0.8, 0.05]) == pytest.approx(0.85)
    assert cal.grid_span([-3.0, 0.5]) == 2.0 and cal.grid_span(None) == 2.0
    out = cal.beta_threshold(np.ones(50), np.linspace(-1, 0, 50), 0.05, span=cal.grid_span([-0.8, 0.05]))
    assert out["fell_back"] and out["delta"] == pytest.approx(-0.85)


# Against scipy (installed with ir-sim; used by the tests only): an independent implementation
# of the binomial distribution and of the Clopper–Pearson bound (a beta quantile).
@pytest.mark.parametrize("n", [1, 2, 7, 40])
@pytest.mark.parametrize("p", [0.0, 0.03, 0.5, 0.97, 1.0])
def test_binomial_cdf_against_scipy(n, p):
    from scipy.stats import binom
    for k in range(n + 1):
        assert cal.binomial_cdf(k, n, p) == pytest.approx(binom.cdf(k, n, p), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (0, 2), (1, 2), (2, 2), (5, 9), (0, 150), (7, 300)])
@pytest.mark.parametrize("beta", [0.05, 0.05 / 101])
def test_clopper_pearson_against_scipys_beta_quantiles(k, n, beta):
    """upper = the (1 − β) quantile of Beta(k + 1, n − k) (1 when k = n); lower = the β quantile
    of Beta(k, n − k + 1) (0 when k = 0)."""
    from scipy.stats import beta as beta_dist
    upper = 1.0 if k == n else beta_dist.ppf(1 - beta, k + 1, n - k)
    lower = 0.0 if k == 0 else beta_dist.ppf(beta, k, n - k + 1)
    assert cal.clopper_pearson_upper(k, n, beta) == pytest.approx(upper, rel=1e-9, abs=1e-12)
    assert cal.clopper_pearson_lower(k, n, beta) == pytest.approx(lower, rel=1e-9, abs=1e-12)


def test_clopper_pearson_without_trials_knows_nothing():
    assert cal.clopper_pearson_upper(0, 0, 0.05) == 1.0 and cal.clopper_pearson_lower(0, 0, 0.05) == 0.0


def test_the_pac_threshold_against_a_brute_force_scan_with_scipy():
    """beta_threshold re-derived by brute force: every grid point's certified set, its
    Clopper–Pearson bound at β / 101 from scipy, the largest point whose bound is ≤ ε. Outcomes
    exactly 0 lie on the boundary of the safe set, which is not a violation (y > 0 is)."""
    from scipy.stats import beta as beta_dist
    rng = np.random.default_rng(7)
    v = rng.uniform(-2.0, 0.0, 3000)
    y = np.where(rng.random(3000) < 0.02 + 0.5 * (v > -0.4), 1.0, np.where(rng.random(3000) < 0.3, 0.0, -1.0))
    eps, beta, points = 0.05, 0.05, 101
    expected = None
    for d in np.linspace(-2.0, 0.0, points):
        certified = v < d
        m, k = int(certified.sum()), int((y[certified] > 0).sum())
        if m and (1.0 if k == m else beta_dist.ppf(1 - beta / points, k + 1, m - k)) <= eps:
            expected = float(d)
    out = cal.beta_threshold(y, v, eps, beta)
    assert expected is not None and expected > -2.0 and out == {"delta": expected, "fell_back": False}


def test_a_bound_exactly_at_epsilon_qualifies():
    """≤ ε, not < ε: 200 safe certified states whose bound at β / 101 is ε exactly."""
    y, v = np.full(200, -1.0), np.full(200, -3.0)
    eps = cal.clopper_pearson_upper(0, 200, 0.05 / 101)
    assert cal.beta_threshold(y, v, eps, 0.05)["delta"] == 0.0
    assert cal.beta_threshold(y, v, math.nextafter(eps, 0.0), 0.05)["fell_back"]


def test_probabilities_never_leave_the_unit_interval():
    """The sum of n + 1 binomial terms can round above 1; the cdf is clamped to 1."""
    values = [cal.binomial_cdf(n, n, p) for n in range(1, 80) for p in np.linspace(0.01, 0.99, 99)]
    assert max(values) == 1.0 and min(values) > 0.99


@pytest.mark.parametrize("epsilon", [0.0, 1.0, 1.5, -0.1])
def test_conformal_quantile_refuses_epsilon_outside_the_open_unit_interval(epsilon):
    with pytest.raises(ValueError, match="epsilon must be in"):
        cal.conformal_quantile(np.arange(10.0), epsilon)


def test_coverage_against_a_count_by_hand_and_scipy():
    """Every field of the held-out check recomputed independently: the certified set V̂ < δ by
    a loop, violations y > 0 (y = 0, on the boundary, is none), the interval from scipy's beta
    quantiles at β / 2 per side."""
    from scipy.stats import beta as beta_dist
    rng = np.random.default_rng(3)
    v = np.round(rng.uniform(-1.0, 0.0, 400), 2)            # many states exactly at δ = -0.3
    y = rng.choice([-1.0, 0.0, 1.0], size=400, p=[0.7, 0.2, 0.1])
    delta, beta = -0.3, 0.1
    m = sum(1 for vi in v if vi < delta)
    k = sum(1 for vi, yi in zip(v, y) if vi < delta and yi > 0)
    out = cal.coverage(y, v, delta, beta)
    assert 0 < k < m < 400 and (v == delta).any() and (y[v < delta] == 0).any()
    assert out["certified"] == m and out["violations_among_certified"] == k
    assert out["certified_fraction"] == m / 400 and out["coverage"] == pytest.approx(1 - k / m)
    assert out["coverage_lower_bound"] == pytest.approx(1 - beta_dist.ppf(1 - beta / 2, k + 1, m - k), rel=1e-9)
    assert out["coverage_upper_bound"] == pytest.approx(1 - beta_dist.ppf(beta / 2, k, m - k + 1), rel=1e-9)
    assert out["confidence"] == pytest.approx(0.9)


def test_coverage_of_nothing_certified_is_vacuous():
    out = cal.coverage(np.array([1.0, -1.0]), np.array([0.5, 0.0]), delta=-0.5)
    assert (out["certified"], out["certified_fraction"], out["coverage"]) == (0, 0.0, 1.0)
    assert (out["coverage_lower_bound"], out["coverage_upper_bound"]) == (0.0, 1.0)
    assert cal.coverage(np.array([]), np.array([]), delta=-0.5)["certified_fraction"] == 0.0


def test_the_default_confidence_is_95_percent():
    """beta defaults to 0.05 (SAFEFQL.md): the same result as passing it."""
    rng = np.random.default_rng(3)
    v_hat = rng.uniform(-1.0, 0.5, 400)
    y = v_hat + rng.normal(0.0, 0.1, 400)
    assert cal.beta_threshold(y, v_hat, 0.05) == cal.beta_threshold(y, v_hat, 0.05, beta=0.05)
    assert cal.coverage(y, v_hat, -0.2) == cal.coverage(y, v_hat, -0.2, beta=0.05)
    assert cal.coverage(y, v_hat, -0.2) != cal.coverage(y, v_hat, -0.2, beta=0.2)
