import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelpress.measure.stats import (
    block_bootstrap_medians,
    default_block,
    mann_whitney_greater,
    pareto_front,
    percentile,
    percentiles,
    ratio_of_medians_ci,
)


@pytest.mark.parametrize(
    "samples, q, expected",
    [
        ([1, 2, 3, 4], 50, 2.0),
        ([4, 1, 3, 2], 50, 2.0),  # order does not matter
        (list(range(1, 11)), 90, 9.0),
        (list(range(1, 101)), 99, 99.0),
        (list(range(1, 101)), 50, 50.0),
        ([5.0], 99, 5.0),
        ([3, 1, 2], 0, 1.0),
        ([3, 1, 2], 100, 3.0),
        ([10, 20, 30, 40, 50], 90, 50.0),  # ceil(4.5) = 5th value
    ],
)
def test_nearest_rank_percentiles(samples, q, expected):
    assert percentile(samples, q) == expected


def test_percentiles_agree_with_percentile():
    x = np.random.default_rng(0).lognormal(size=1001)
    got = percentiles(x, (50, 90, 99))
    assert got == {f"p{q}": percentile(x, q) for q in (50, 90, 99)}
    assert got["p50"] <= got["p90"] <= got["p99"]
    # nearest rank on an odd count is the exact median
    assert got["p50"] == float(np.median(x))


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [1.0, float("inf")]])
def test_percentile_refuses_empty_or_non_finite(bad):
    with pytest.raises(ValueError):
        percentile(bad, 50)


def test_percentile_refuses_q_out_of_range():
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        percentile([1, 2], 101)


def test_mann_whitney_known_answers():
    # every x above every y: U = n1 * n2
    high = mann_whitney_greater([4, 5, 6], [1, 2, 3])
    assert high.u == 9.0 and high.p_greater < 0.05
    low = mann_whitney_greater([1, 2, 3], [4, 5, 6])
    assert low.u == 0.0 and low.p_greater > 0.95
    # ties count one half: x=[1, 2], y=[2, 3] -> pairs with x > y: 0, ties: 1 -> U = 0.5
    assert mann_whitney_greater([1, 2], [2, 3]).u == 0.5
    same = mann_whitney_greater([2, 2, 2], [2, 2])
    assert same.p_greater == 1.0 and same.z == 0.0


def test_mann_whitney_matches_scipy_with_ties():
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 6, 40).astype(float), rng.integers(0, 5, 55).astype(float)
    ours = mann_whitney_greater(x, y)
    ref = mannwhitneyu(x, y, alternative="greater", method="asymptotic")
    assert ours.u == pytest.approx(ref.statistic)
    assert ours.p_greater == pytest.approx(ref.pvalue, rel=1e-9)


def test_ratio_ci_finds_a_known_slowdown():
    rng = np.random.default_rng(0)
    base = rng.lognormal(0.0, 0.2, 3000)
    cur = 1.25 * rng.lognormal(0.0, 0.2, 3000)
    ci = ratio_of_medians_ci(cur, base)
    assert ci.low < 1.25 < ci.high
    assert ci.low > 1.15 and ci.high < 1.35
    assert ci.n_current == ci.n_baseline == 3000 and ci.block_current == default_block(3000)


def test_ratio_ci_is_seeded_and_covers_no_change():
    rng = np.random.default_rng(1)
    base, cur = rng.lognormal(0.0, 0.3, 800), rng.lognormal(0.0, 0.3, 800)
    a, b = ratio_of_medians_ci(cur, base, seed=7), ratio_of_medians_ci(cur, base, seed=7)
    assert a == b
    assert a.low < 1.0 < a.high


def test_ratio_ci_coverage_on_iid_samples():
    """Over 40 seeded A/A pairs the 95 % interval holds the true ratio (1) almost always."""
    rng = np.random.default_rng(2)
    covered = 0
    for seed in range(40):
        base, cur = rng.lognormal(0.0, 0.3, 400), rng.lognormal(0.0, 0.3, 400)
        ci = ratio_of_medians_ci(cur, base, n_boot=400, seed=seed)
        covered += ci.low <= 1.0 <= ci.high
    assert covered >= 36


def test_block_bootstrap_widens_the_interval_for_bursts():
    """A burst of slow consecutive calls is one event, not hundreds of independent ones."""
    rng = np.random.default_rng(4)
    x = rng.lognormal(0.0, 0.05, 2000)
    x[600:1000] *= 1.5  # a noisy neighbour for a fifth of the run
    iid = block_bootstrap_medians(x, 500, np.random.default_rng(0), block=1)
    blocks = block_bootstrap_medians(x, 500, np.random.default_rng(0), block=200)
    assert np.std(blocks) > 2 * np.std(iid)


def test_ratio_ci_refuses_bad_arguments():
    with pytest.raises(ValueError, match="confidence"):
        ratio_of_medians_ci([1.0, 2.0], [1.0, 2.0], confidence=1.5)
    with pytest.raises(ValueError, match="n_boot"):
        ratio_of_medians_ci([1.0, 2.0], [1.0, 2.0], n_boot=10)
    with pytest.raises(ValueError, match="empty"):
        ratio_of_medians_ci([], [1.0])
    with pytest.raises(ValueError, match="positive"):
        ratio_of_medians_ci([1.0], [0.0, 0.0])


@pytest.mark.parametrize(
    "points, front",
    [  # both coordinates minimised; sorted by the first
        ([(1.0, 0.9), (2.0, 0.5), (3.0, 0.6), (0.5, 2.0)], [3, 0, 1]),
        ([(1.0, 0.9), (1.0, 0.5)], [1]),  # same first coordinate: only the lower second
        ([(1.0, 0.5), (2.0, 0.5)], [0]),  # same second coordinate: only the lower first
        ([(1.0, 0.5), (1.0, 0.5)], [0, 1]),  # exact duplicates do not dominate each other
        ([(2.0, -0.3), (1.0, 0.0)], [1, 0]),  # negative values (better than float) count
        ([], []),
    ],
)
def test_pareto_front_known_answers(points, front):
    assert pareto_front(points) == front


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[0] and a[1] <= b[1] and a != b


# a small grid of values, so that ties and duplicates are common
_coord = st.integers(-4, 4).map(lambda v: v / 2)


@given(st.lists(st.tuples(_coord, _coord), max_size=12))
def test_pareto_front_is_exactly_the_non_dominated_points(points):
    front = pareto_front(points)
    assert len(set(front)) == len(front)
    assert front == sorted(front, key=lambda i: (points[i], i))
    for i in front:  # no front point is dominated by any point
        assert not any(_dominates(p, points[i]) for p in points)
    for i in set(range(len(points))) - set(front):  # every other point by a front point
        assert any(_dominates(points[j], points[i]) for j in front)
