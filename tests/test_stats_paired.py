"""Paired differences (paired t, two-level paired bootstrap), TOST and one-sided tests, sizes and power.

Coverage tolerances: with R repeats the observed coverage of a CI whose true coverage is p has Monte-Carlo
std sqrt(p (1 - p) / R); a check allows 3 of them. Where a method's coverage is known to fall short of
nominal, the lower end is the derived shortfall, never a tuned constant."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from scipy import stats

from dpmot_bench.errors import InputError, ShapeError
from dpmot_bench.stats import (PairedDifference, equivalence_test, mean_ci, minimal_detectable_effect,
                               one_sided_test, paired_difference, power, required_samples)

LEVEL = 0.95


def mc_std(p, repeats):
    return math.sqrt(p * (1 - p) / repeats)


def correlated_arms(rng, n_seeds, delta, rho, size=None):
    """Two arms sharing a fraction rho of their unit noise variance (same seed, same source noise)."""
    shape = (n_seeds,) if size is None else (n_seeds, size)
    shared = rng.standard_normal(shape)
    a = delta + math.sqrt(rho) * shared + math.sqrt(1 - rho) * rng.standard_normal(shape)
    b = math.sqrt(rho) * shared + math.sqrt(1 - rho) * rng.standard_normal(shape)
    return a, b


def test_paired_t_covers_at_the_nominal_level():
    """Per-seed normal differences: the paired t interval is exact, so coverage = 0.95 within MC error."""
    rng, repeats, delta = np.random.default_rng(0), 2000, 0.7
    hits = 0
    for _ in range(repeats):
        a, b = correlated_arms(rng, 6, delta, rho=0.8)
        d = paired_difference(a, b)
        hits += d.low <= delta <= d.high
        assert d.method == "paired-t" and d.n_seeds == 6 and d.n_samples is None and d.df == 5
    assert abs(hits / repeats - LEVEL) <= 3 * mc_std(LEVEL, repeats)


def test_paired_t_is_the_one_sample_t_on_differences():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(9), rng.standard_normal(9)
    d = paired_difference(a, b, level=0.9)
    mean, half, n = mean_ci(a - b, 0.9)
    assert (d.estimate, d.high - d.estimate, d.n_seeds) == pytest.approx((mean, half, n), rel=1e-12)
    assert d.se == pytest.approx(stats.sem(a - b), rel=1e-12)
    low, high = stats.ttest_rel(a, b).confidence_interval(0.9)
    assert (d.low, d.high) == pytest.approx((low, high), rel=1e-10)


def test_paired_interval_is_narrower_than_the_unpaired_one_when_arms_share_noise():
    """Shared noise of variance share rho cancels in a - b: the paired se is sqrt(1 - rho) times the
    unpaired (Welch) se in expectation of the variances. Property: narrower in (nearly) every repeat, and
    the median width ratio near sqrt(1 - rho) times the ratio of t quantiles (S - 1 vs Welch's ~2(S - 1) df)."""
    rng, rho, seeds, repeats = np.random.default_rng(2), 0.9, 8, 400
    ratios = []
    for _ in range(repeats):
        a, b = correlated_arms(rng, seeds, 0.3, rho)
        paired = paired_difference(a, b)
        welch = stats.ttest_ind(a, b, equal_var=False).confidence_interval(LEVEL)
        ratios.append(paired.half_width / ((welch.high - welch.low) / 2))
    ratios = np.asarray(ratios)
    assert np.mean(ratios < 1) >= 0.99
    expected = math.sqrt(1 - rho) * stats.t.ppf(0.975, seeds - 1) / stats.t.ppf(0.975, 2 * seeds - 2)
    assert abs(np.median(ratios) / expected - 1) < 0.15  # the ratio of two 7-df sds has ~0.27 relative std
    # over 400 repeats the median's error is ~0.27 * 1.25 / sqrt(400) = 0.017; 0.15 also absorbs the
    # small bias of E[s_1 / s_2] against sigma_1 / sigma_2


def shortfall_low(n_seeds, n, quantile_df):
    """Derived lower end of the hierarchical bootstrap's coverage: its variance falls short of the true one
    by at most the factors (1 - 1/S) (seed stage) and (1 - 1/n) (within stage's plug-in variance); with the
    variance known to S - 1 df, coverage is then P(|t_{S-1}| <= q sqrt((1 - 1/S)(1 - 1/n)))."""
    q = stats.norm.ppf(0.975) if quantile_df is None else stats.t.ppf(0.975, quantile_df)
    return 1 - 2 * stats.t.sf(q * math.sqrt((1 - 1 / n_seeds) * (1 - 1 / n)), n_seeds - 1)


@pytest.mark.parametrize("seed_std, sample_std", [(0.0, 1.0), (1.0, 0.1)], ids=["sampling-noise", "seed-effect"])
def test_hierarchical_bootstrap_t_interval_covers(seed_std, sample_std):
    """Per-sample values with a seed effect (variance seed_std^2) and sample noise (sample_std^2, shared by
    the arms for a quarter): 10 seeds x 40 samples. Coverage lies between the derived shortfall bound (with
    the t_{S-1} quantile, the smallest the Satterthwaite df reaches) and 0.95, within 3 MC std."""
    rng, repeats, seeds, n, delta = np.random.default_rng(3), 400, 10, 40, 0.25
    hits = 0
    for r in range(repeats):
        a, b = correlated_arms(rng, seeds, delta, rho=0.25, size=n)
        a = sample_std * a + seed_std * rng.standard_normal((seeds, 1))
        b = sample_std * b
        d = paired_difference(list(a), list(b), n_boot=400, seed=r)
        hits += d.low <= sample_std * delta <= d.high
    assert d.method == "hierarchical-bootstrap-t" and d.n_samples == seeds * n
    coverage, tol = hits / repeats, 3 * mc_std(LEVEL, repeats)
    assert shortfall_low(seeds, n, seeds - 1) - tol <= coverage <= LEVEL + tol


def test_hierarchical_bootstrap_percentile_interval_covers_with_many_seeds():
    rng, repeats, seeds, n, delta = np.random.default_rng(4), 400, 20, 20, -0.4
    hits = 0
    for r in range(repeats):
        a, b = correlated_arms(rng, seeds, delta, rho=0.5, size=n)
        a = a + 0.3 * rng.standard_normal((seeds, 1))
        d = paired_difference(list(a), list(b), n_boot=400, seed=r, ci="percentile")
        hits += d.low <= delta <= d.high
    coverage, tol = hits / repeats, 3 * mc_std(LEVEL, repeats)
    assert shortfall_low(seeds, n, None) - tol <= coverage <= LEVEL + tol


def test_bootstrap_se_matches_the_variance_components_and_pairing_matters():
    """For D_s = mean of d over seed s, Var(mean_s D_s) = (sb^2 + sw^2 / n) / S; the bootstrap se^2 is
    (1 - 1/S) times the seed part plus the within part (derived in the docstring), up to the resampling
    noise of 4000 replicates (relative std of a variance ~ sqrt(2 / 4000) = 2.2%) and of the data's own
    sample variances, which we remove by computing the target from the data."""
    rng, seeds, n, rho = np.random.default_rng(5), 12, 200, 0.9
    a, b = correlated_arms(rng, seeds, 0.1, rho, size=n)
    a = a + 0.05 * rng.standard_normal((seeds, 1))
    d = paired_difference(list(a), list(b), n_boot=4000, seed=1)
    per_seed = (a - b).mean(1)
    within = ((a - b).var(1) / n).mean()
    target = (1 - 1 / seeds) * per_seed.var(ddof=1) / seeds + within / seeds ** 2
    assert d.se ** 2 == pytest.approx(target, rel=4 * math.sqrt(2 / 4000))
    assert d.estimate == pytest.approx(per_seed.mean(), rel=1e-12)
    # one seed: all the uncertainty is within the seed, where pairing acts (a seed's mean itself does
    # not depend on how rows are paired): the se is sd(a - b) / sqrt(n), and shuffling b's rows (which
    # breaks the pairing) gives sd(a - b_shuffled) / sqrt(n), ~ sqrt(1 / (1 - rho)) = 3.2 times larger
    one = paired_difference([a[0]], [b[0]], n_boot=4000, seed=2)
    assert one.se ** 2 == pytest.approx((a[0] - b[0]).var() / n, rel=4 * math.sqrt(2 / 4000))
    shuffled = b[0][rng.permutation(n)]
    unpaired = paired_difference([a[0]], [shuffled], n_boot=4000, seed=2)
    assert unpaired.se ** 2 == pytest.approx((a[0] - shuffled).var() / n, rel=4 * math.sqrt(2 / 4000))
    assert unpaired.se > 2 * one.se and math.isinf(one.df)


def test_statistic_path_agrees_with_the_vectorised_mean():
    """A callable statistic goes through the generic loop; with the mean it must give the same estimate and,
    up to resampling noise (relative std of an se over 1000 replicates ~ 1 / sqrt(2000) = 2.2%), the same se."""
    rng = np.random.default_rng(6)
    a, b = correlated_arms(rng, 4, 0.2, 0.7, size=60)
    fast = paired_difference(list(a), list(b), n_boot=1000, seed=2)
    slow = paired_difference(list(a), list(b), n_boot=1000, seed=3, statistic=np.mean)
    assert slow.estimate == pytest.approx(fast.estimate, rel=1e-12)
    assert slow.se == pytest.approx(fast.se, rel=5 * math.sqrt(2) / math.sqrt(2000))
    assert slow.df == pytest.approx(fast.df, rel=0.2)


def test_statistic_of_a_sample_set_with_known_value_covers():
    """A whole-sample statistic, the distance between the mean of 2-D rows and the origin (nonlinear), on
    two arms whose true values are known: |mu_a| - |mu_b| with mu_a = (0.5, 0), mu_b = 0 would be biased at
    small n, so use |mean| of a well-separated mean (bias ~ 1 / (2 n |mu|), far below the se). Coverage
    between the shortfall bound and 0.95 within 3 MC std (R = 150: 3 MC std = 0.053)."""
    rng, repeats, seeds, n = np.random.default_rng(7), 150, 5, 40
    mu_a, mu_b = np.array([3.0, 0.0]), np.array([2.5, 0.0])
    truth = np.linalg.norm(mu_a) - np.linalg.norm(mu_b)
    hits = 0
    for r in range(repeats):
        shared = rng.standard_normal((seeds, n, 2))
        a = [mu_a + shared[s] + 0.5 * rng.standard_normal((n, 2)) for s in range(seeds)]
        b = [mu_b + shared[s] + 0.5 * rng.standard_normal((n, 2)) for s in range(seeds)]
        d = paired_difference(a, b, n_boot=100, seed=r, statistic=lambda x: np.linalg.norm(x.mean(0)))
        hits += d.low <= truth <= d.high
    coverage, tol = hits / repeats, 3 * mc_std(LEVEL, repeats)
    assert shortfall_low(seeds, n, seeds - 1) - tol <= coverage <= LEVEL + tol


def test_tost_type_one_error_at_the_margin_and_power_inside():
    """True difference at the margin: 'supported' (equivalence) at most alpha of the time, within MC error.
    With a margin of 5 se the other margin is out of reach and the t test makes it exactly alpha; with a
    margin below t se the (1 - 2 alpha) CI cannot fit inside and it is ~0 (TOST is conservative there).
    Far inside (true difference 0, margin 5 se): supported with about the probability power() gives for se
    known (0.9995), minus what the t quantile and the se's own noise cost."""
    rng, repeats, seeds, alpha = np.random.default_rng(8), 1200, 10, 0.05
    true_se = math.sqrt(2 * 0.5) / math.sqrt(seeds)  # rho = 0.5: var(a - b) = 2 (1 - rho)
    counts = {"wide": 0, "narrow": 0, "inside": 0}
    for _ in range(repeats):
        for key, delta, margin in (("wide", 5 * true_se, 5 * true_se), ("narrow", 0.5 * true_se, 0.5 * true_se),
                                   ("inside", 0.0, 5 * true_se)):
            a, b = correlated_arms(rng, seeds, delta, 0.5)
            counts[key] += equivalence_test(paired_difference(a, b), margin, alpha=alpha).verdict == "supported"
    tol = 3 * mc_std(alpha, repeats)
    assert abs(counts["wide"] / repeats - alpha) <= tol
    assert counts["narrow"] / repeats <= alpha + tol
    assert counts["inside"] / repeats >= 0.9  # a lower bound for t_9 with an estimated se, not a fit


@given(effect=st.floats(-3, 3), se=st.floats(0.05, 2), margin=st.floats(0.1, 4),
       alpha=st.sampled_from([0.01, 0.05, 0.1]))
def test_verdicts_and_p_values_agree_for_normal_inputs(effect, se, margin, alpha):
    """Exact identities for an (estimate, se) pair: the (1 - 2 alpha) CI is estimate -+ z_{1-alpha} se,
    'supported' exactly when p < alpha, and the three verdicts follow the CI's position."""
    z = stats.norm.ppf(1 - alpha)
    eq = equivalence_test((effect, se), margin, alpha=alpha)
    assert (eq.low, eq.high) == pytest.approx((effect - z * se, effect + z * se), rel=1e-12, abs=1e-12)
    boundary_gap = min(abs(eq.low + margin), abs(eq.high - margin), abs(eq.low - margin), abs(eq.high + margin))
    if boundary_gap > 1e-9:
        assert (eq.verdict == "supported") == (eq.p_value < alpha)
        assert (eq.verdict == "refuted") == (eq.high <= -margin or eq.low >= margin)
        for direction, sign in (("less", -1), ("greater", 1)):
            one = one_sided_test((effect, se), direction, margin, alpha=alpha)
            assert (one.verdict == "supported") == (one.p_value < alpha)
            # refuted: the opposite one-sided claim is supported
            assert (one.verdict == "refuted") == (sign * (effect - sign * margin) < 0
                                                  and abs(effect - sign * margin) / se > z)


def test_one_sided_constructed_cases_and_relative_margins():
    assert one_sided_test((-1.0, 0.1), "less").verdict == "supported"
    assert one_sided_test((1.0, 0.1), "less").verdict == "refuted"
    assert one_sided_test((0.05, 0.1), "less").verdict == "undecided"
    assert one_sided_test((-1.0, 0.1), "less", margin=2.0).verdict == "refuted"  # not better by 2
    assert one_sided_test((0.3, 0.1), "less", margin=-1.0).verdict == "supported"  # non-inferior within 1
    eq = equivalence_test((0.5, 0.1), 0.1, relative_to=-10.0)  # margin 0.1 * |-10| = 1
    assert eq.boundaries == (-1.0, 1.0) and eq.verdict == "supported"
    assert equivalence_test((3.0, 0.1), 1.0).verdict == "refuted"
    assert equivalence_test((0.95, 0.1), 1.0).verdict == "undecided"


def test_power_matches_simulated_rejection_rates():
    """power() against the rate at which the tests say 'supported' for normal estimates with se known."""
    rng, repeats, se = np.random.default_rng(9), 4000, 0.2
    for test, effect, margin in (("one-sided", 0.5, 0.1), ("tost", 0.1, 0.6), ("tost", 0.0, 0.5)):
        predicted = power(effect, se, 0.05, test=test, margin=margin)
        estimates = effect + se * rng.standard_normal(repeats)
        if test == "one-sided":
            rate = np.mean([one_sided_test((e, se), "greater", margin).verdict == "supported" for e in estimates])
        else:
            rate = np.mean([equivalence_test((e, se), margin).verdict == "supported" for e in estimates])
        assert abs(rate - predicted) <= 3 * mc_std(predicted, repeats) + 1e-9


@given(se=st.floats(0.01, 10), target=st.floats(0.001, 5), n0=st.integers(1, 1000),
       level=st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_required_samples_is_the_smallest_n_that_meets_the_target(se, target, n0, level):
    n = required_samples(se, target, level, n0=n0)
    z = stats.norm.ppf(0.5 + level / 2)
    assert z * se * math.sqrt(n0 / n) <= target * (1 + 1e-9)
    if n > 1:
        assert z * se * math.sqrt(n0 / (n - 1)) > target * (1 - 1e-9)


@given(se=st.floats(0.01, 10), alpha=st.sampled_from([0.01, 0.05, 0.1]), target=st.floats(0.5, 0.99))
def test_minimal_detectable_effect_inverts_power(se, alpha, target):
    mde = minimal_detectable_effect(se, alpha, target)
    assert power(mde, se, alpha) == pytest.approx(target, abs=1e-9)
    margin = minimal_detectable_effect(se, alpha, target, test="tost")
    assert power(0.0, se, alpha, test="tost", margin=margin) == pytest.approx(target, abs=1e-9)


def test_interval_and_p_value_of_a_bootstrap_result_use_its_replicates():
    rng = np.random.default_rng(10)
    a, b = correlated_arms(rng, 3, 0.2, 0.5, size=50)
    d = paired_difference(list(a), list(b), ci="percentile", n_boot=500)
    assert isinstance(d, PairedDifference) and len(d.replicates) == 500
    assert d.interval(0.95) == pytest.approx((d.low, d.high))
    assert d.p_value(d.estimate + 10, "less") == 0.0 and d.p_value(d.estimate - 10, "less") == 1.0
    with pytest.raises(ValueError):
        d.replicates[0] = 0.0  # read-only


def test_torch_inputs_give_the_numpy_results():
    rng = np.random.default_rng(11)
    a, b = correlated_arms(rng, 5, 0.1, 0.5, size=30)
    per_seed = paired_difference(torch.from_numpy(a[:, 0]), torch.from_numpy(b[:, 0]))
    assert per_seed == paired_difference(a[:, 0], b[:, 0])
    as_tensors = paired_difference([torch.from_numpy(r) for r in a], [torch.from_numpy(r) for r in b], n_boot=200)
    assert as_tensors == paired_difference(list(a), list(b), n_boot=200)
    rows = paired_difference([torch.from_numpy(r) for r in a], [torch.from_numpy(r) for r in b], n_boot=200,
                             statistic=lambda x: float(x.mean()))
    assert rows.estimate == pytest.approx(as_tensors.estimate, rel=1e-12)


def test_bad_inputs_say_what_is_wrong():
    with pytest.raises(ShapeError, match="same"):
        paired_difference([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ShapeError, match="at least 2 seeds"):
        paired_difference([1.0], [2.0])
    with pytest.raises(ShapeError, match="paired row by row"):
        paired_difference([np.zeros(3)], [np.zeros(4)])
    with pytest.raises(InputError, match="level"):
        paired_difference([1.0, 2.0], [1.0, 3.0], level=95)
    with pytest.raises(InputError, match="ci must be"):
        paired_difference([np.zeros(3)], [np.zeros(3)], ci="bca")
    with pytest.raises(InputError, match="margin must be > 0"):
        equivalence_test((0.0, 1.0), 0.0)
    with pytest.raises(InputError, match="direction"):
        one_sided_test((0.0, 1.0), "lower")
    with pytest.raises(InputError, match="PairedDifference"):
        equivalence_test("x", 1.0)
    with pytest.raises(InputError, match="se must be"):
        required_samples(0.0, 1.0)
