"""Conformal calibration of the run-time safety threshold δ* (SAFEFQL.md, phase iv).

Scores R_i = y_i − V̂(s_i), where y_i = max_t l(s_t) is the realised safety outcome from
s_i and V̂ the learned safety value the runtime gates on. Two methods:

* split: q̂ = the ⌈(n+1)(1−ε)⌉-th smallest score, δ* = min(0, −q̂). Under exchangeability
  P(y ≤ V̂(s) + q̂) ≥ 1 − ε, so P(V̂(s) < δ* and y > 0) ≤ ε: the joint probability of being
  certified *and* violating. Among certified states the violation rate is ≤ ε / P(certified),
  not ≤ ε (SAFEFQL.md). It holds only for exchangeable (s_i, y_i): one start state per
  independent rollout, not correlated ticks of one logged episode.
* beta (PAC): the largest δ ≤ 0 on a fixed grid such that, among held-out states with
  V̂ < δ, the Clopper–Pearson upper bound on the violation rate is ≤ ε. Each grid point is
  tested at level β / |grid| (Bonferroni), so the bound holds jointly for every grid point
  and hence for the chosen one with confidence ≥ 1 − β. The grid is fixed before the data
  is seen (`span`, in units of the margin l), which is what makes the union bound valid.
"""
from __future__ import annotations

import math

import numpy as np


def conformal_quantile(scores: np.ndarray, epsilon: float) -> float:
    """The ⌈(n+1)(1−ε)⌉-th smallest score; +inf when n is too small for that ε."""
    if not 0 < epsilon < 1:
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon}")
    n = len(scores)
    k = math.ceil((n + 1) * (1 - epsilon))
    return float("inf") if k > n else float(np.sort(scores)[k - 1])


def split_conformal(y: np.ndarray, v_hat: np.ndarray, epsilon: float) -> dict[str, float]:
    q_hat = conformal_quantile(np.asarray(y) - np.asarray(v_hat), epsilon)
    return {"q_hat": q_hat, "delta": min(0.0, -q_hat)}


def logged_outcome(margins: np.ndarray, idx: np.ndarray, episode_ends: np.ndarray,
                   horizon: int | None = None) -> np.ndarray:
    """y_i = the max margin from tick idx_i over the next `horizon` ticks of its episode
    (to the episode's end when None; episode_ends_i is one past its last tick).

    The horizon exists for episodes much longer than the safety critic's effective horizon
    1/(1 − γ_c): a discounted V̂ speaks about the next ~100 ticks, and scoring it against a
    violation 600 ticks ahead makes almost every state look unsafe.
    """
    stops = episode_ends if horizon is None else np.minimum(episode_ends, idx + horizon)
    return np.array([margins[i:stop].max() for i, stop in zip(idx, stops)])


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(Bin(n, p) ≤ k), summed in log space (exact; no scipy needed)."""
    if p <= 0:
        return 1.0
    if p >= 1:
        return 1.0 if k >= n else 0.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
            + i * math.log(p) + (n - i) * math.log1p(-p) for i in range(k + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def clopper_pearson_upper(k: int, n: int, beta: float) -> float:
    """Upper 1−β confidence bound on a binomial rate after k events in n trials."""
    if n == 0:
        return 1.0
    if k >= n:
        return 1.0
    lo, hi = k / n, 1.0
    for _ in range(60):  # bisection: P(Bin(n, p) <= k) decreases in p
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if binomial_cdf(k, n, mid) > beta else (lo, mid)
    return hi


def clopper_pearson_lower(k: int, n: int, beta: float) -> float:
    return 1.0 - clopper_pearson_upper(n - k, n, beta)


def grid_span(margin_range: list[float] | None, widest: float = 2.0) -> float:
    """How far below 0 the beta method's grid reaches: 2 margin units, or the span of the margins
    the policy was trained on where that is smaller. A threshold further below than that span
    certifies nothing any trained critic can output (its values lie within the margins'
    range), and the bundle refuses such a δ* (Bundle.threshold_range); the range comes from the
    training data, not the calibration data, so the grid is still fixed before those are seen."""
    if not margin_range:
        return widest
    return float(min(widest, margin_range[1] - margin_range[0]))


def beta_threshold(y: np.ndarray, v_hat: np.ndarray, epsilon: float, beta: float = 0.05,
                   span: float = 2.0, points: int = 101) -> dict[str, float | bool]:
    """Largest grid δ in [−span, 0] whose certified set has violation rate ≤ ε w.p. ≥ 1 − β.

    When no grid point qualifies, δ is −span, the most conservative point, and `fell_back`
    says so: the caller should not mistake it for a measured threshold.
    """
    y, v_hat = np.asarray(y), np.asarray(v_hat)
    delta, fell_back = -span, True
    for d in np.linspace(-span, 0.0, points):
        certified = v_hat < d
        m, k = int(certified.sum()), int((y[certified] > 0).sum())
        if m and clopper_pearson_upper(k, m, beta / points) <= epsilon:
            delta, fell_back = float(d), False
    return {"delta": delta, "fell_back": fell_back}


def coverage(y: np.ndarray, v_hat: np.ndarray, delta: float, beta: float = 0.05) -> dict[str, float]:
    """Held-out check: violation rate among certified states (V̂ < δ), with its two-sided
    Clopper–Pearson interval at confidence 1 − β (each one-sided bound at β / 2: two one-sided
    bounds at β each would make a 1 − 2β interval, not the 1 − β it is labelled)."""
    y, v_hat = np.asarray(y), np.asarray(v_hat)
    certified = v_hat < delta
    m, k = int(certified.sum()), int((y[certified] > 0).sum())
    rate = k / m if m else 0.0
    return {
        "certified": m,
        "certified_fraction": m / len(y) if len(y) else 0.0,
        "violations_among_certified": k,
        "coverage": 1.0 - rate,
        "coverage_lower_bound": 1.0 - clopper_pearson_upper(k, m, beta / 2),
        "coverage_upper_bound": 1.0 - clopper_pearson_lower(k, m, beta / 2),
        "confidence": 1.0 - beta,
    }


def score_histogram(path: str, scores: np.ndarray, q_hat: float, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.0))
    ax.hist(scores, bins=60, color="tab:blue", alpha=0.8)
    if np.isfinite(q_hat):
        # A state is certified when V̂(s) < δ* = -q̂; it can then violate (y > 0) only with R > q̂.
        q_hat += 0.0  # -0.0 reads as a different number
        left, right = ax.get_xlim()
        left, right = min(left, q_hat - 0.05 * (right - left)), max(right, q_hat + 0.05 * (right - left))
        ax.axvspan(left, q_hat, color="tab:green", alpha=0.10,
                   label="R ≤ q̂: a certified state here (V̂ < δ*) cannot violate")
        ax.axvspan(q_hat, right, color="tab:red", alpha=0.10,
                   label="R > q̂: a certified state here may violate (ε bounds how often)")
        ax.axvline(q_hat, color="tab:red", lw=2, label=f"q̂ = {q_hat:.3f}  (δ* = {min(0.0, -q_hat) + 0.0:.3f})")
        ax.set_xlim(left, right)
        ax.set_ylim(top=ax.get_ylim()[1] * 1.45)  # headroom for the legend
        ax.legend(fontsize=7, loc="upper left")
    ax.set_xlabel("score R = y − V̂(s)   (realised max margin − predicted)")
    ax.set_ylabel("held-out states")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
