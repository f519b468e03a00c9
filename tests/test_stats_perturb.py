"""Paired statistics across seeds (checked by hand) and the feature shifts of the robustness study."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from mgrec.analysis.perturb import (
    ADJUST_FRACTIONS,
    NOISE_LEVELS,
    gaussian_noise,
    information_adjustment,
    shifted_features,
)
from mgrec.analysis.stats import compare_metrics, markdown_table, paired_comparison, plot_seeds

MG = [0.30, 0.32, 0.31, 0.35, 0.33]
PLAIN = [0.29, 0.30, 0.31, 0.30, 0.31]
T_975_4 = 2.776445105  # Student t quantile, 0.975, 4 degrees of freedom (from tables)


def test_paired_comparison_by_hand():
    r = paired_comparison(MG, PLAIN)
    # d = 0.01, 0.02, 0.00, 0.05, 0.02
    mean_d = (0.01 + 0.02 + 0.00 + 0.05 + 0.02) / 5  # 0.02
    ss = (-0.01) ** 2 + 0.00**2 + (-0.02) ** 2 + 0.03**2 + 0.00**2  # 0.0014
    sd_d = math.sqrt(ss / 4)  # 0.0187083
    se = sd_d / math.sqrt(5)
    assert r["n"] == 5
    assert r["mg"]["mean"] == pytest.approx(1.61 / 5)
    assert r["plain"]["mean"] == pytest.approx(1.51 / 5)
    # mg deviations from 0.322: -.022, -.002, -.012, .028, .008
    mg_ss = 0.022**2 + 0.002**2 + 0.012**2 + 0.028**2 + 0.008**2
    assert r["mg"]["std"] == pytest.approx(math.sqrt(mg_ss / 4))
    diff = r["difference"]
    assert diff["mean"] == pytest.approx(mean_d)
    assert diff["std"] == pytest.approx(sd_d)
    assert diff["t_quantile"] == pytest.approx(T_975_4, rel=1e-9)
    assert diff["ci_half_width"] == pytest.approx(T_975_4 * se, rel=1e-9)
    assert diff["ci_low"] == pytest.approx(mean_d - T_975_4 * se, rel=1e-8)
    assert diff["ci_high"] == pytest.approx(mean_d + T_975_4 * se, rel=1e-8)
    assert r["t_test"]["statistic"] == pytest.approx(mean_d / se)  # 2.3905
    assert r["t_test"]["df"] == 4

    # Wilcoxon, zero_method="wilcox": the 0.00 difference is dropped, leaving 0.01, 0.02, 0.05,
    # 0.02; ranks of |d|: 1, 2.5, 2.5 (tie), 4; all positive, so W+ = 10, W- = 0, T = min = 0.
    w = r["wilcoxon"]
    assert w["n_nonzero"] == 4 and w["zero_method"] == "wilcox"
    assert (w["w_plus"], w["w_minus"], w["statistic"]) == (1 + 2.5 + 2.5 + 4, 0.0, 0.0)
    # ties, so the exhaustive sign-flip test: only the all-positive pattern out of 2**4 reaches
    # W+ = 10, and two-sided doubles it
    assert w["method"] == "permutation"
    assert w["p_value"] == pytest.approx(2 / 2**4)

    # p-values cross-checked against scipy
    assert r["t_test"]["p_value"] == pytest.approx(stats.ttest_rel(MG, PLAIN).pvalue)
    assert w["p_value"] == pytest.approx(stats.wilcoxon(MG, PLAIN, zero_method="wilcox").pvalue)
    json.dumps(r, allow_nan=False)


def test_wilcoxon_exact_without_ties():
    mg = [0.31, 0.33, 0.30, 0.36, 0.34, 0.29]
    plain = [0.30, 0.30, 0.32, 0.32, 0.29, 0.35]
    # d = .01, .03, -.02, .04, .05, -.06: ranks 1, 3, 2, 4, 5, 6 -> W+ = 13, W- = 8
    w = paired_comparison(mg, plain)["wilcoxon"]
    assert w["method"] == "exact" and w["n_nonzero"] == 6
    assert (w["w_plus"], w["w_minus"], w["statistic"]) == (13.0, 8.0, 8.0)
    # P(W+ <= 8) over the 64 equally likely sign patterns (counted by the subset sums of 1..6)
    sums = [sum(r for r in range(1, 7) if mask >> (r - 1) & 1) for mask in range(64)]
    assert w["p_value"] == pytest.approx(2 * sum(s <= 8 for s in sums) / 64)
    assert w["p_value"] == pytest.approx(stats.wilcoxon(mg, plain, method="exact").pvalue)


def test_single_seed_gives_documented_nones():
    r = paired_comparison([0.3], [0.2])
    assert r["mg"]["mean"] == 0.3 and r["mg"]["std"] is None
    assert r["difference"]["mean"] == pytest.approx(0.1)
    for key in ("std", "ci_low", "ci_high", "ci_half_width", "t_quantile"):
        assert r["difference"][key] is None
    assert r["t_test"] == {"statistic": None, "p_value": None, "df": None}
    assert r["wilcoxon"]["statistic"] is None and r["wilcoxon"]["p_value"] is None
    json.dumps(r, allow_nan=False)


def test_identical_arms_and_constant_difference():
    same = paired_comparison(MG, MG)
    assert same["difference"]["mean"] == 0.0 and same["difference"]["std"] == 0.0
    assert (same["difference"]["ci_low"], same["difference"]["ci_high"]) == (0.0, 0.0)
    assert same["t_test"]["statistic"] is None and same["t_test"]["p_value"] is None
    assert same["wilcoxon"]["n_nonzero"] == 0 and same["wilcoxon"]["p_value"] is None
    json.dumps(same, allow_nan=False)
    # +0.1 on every seed: equal in decimal, not in binary; still "no spread", not p ~ 1e-32
    shifted = paired_comparison([0.4, 0.5, 0.6], [0.3, 0.4, 0.5])
    assert shifted["difference"]["std"] == 0.0 and shifted["t_test"]["p_value"] is None
    assert shifted["wilcoxon"]["w_plus"] == 6.0  # ranks 2, 2, 2 -> all tied
    json.dumps(shifted, allow_nan=False)


def test_invalid_input():
    with pytest.raises(ValueError):
        paired_comparison([], [])
    with pytest.raises(ValueError):
        paired_comparison([0.1, 0.2], [0.1])
    with pytest.raises(ValueError):
        paired_comparison([0.1, float("nan")], [0.1, 0.2])


def per_seed_records() -> list[dict]:
    return [
        {
            "seed": s,
            "mg": {"recall@5": m, "ndcg@5": m / 2},
            "plain": {"recall@5": p, "ndcg@5": p / 2},
        }
        for s, m, p in zip([999, 1000, 1001, 1002, 1003], MG, PLAIN, strict=True)
    ]


def test_compare_metrics_table_and_plot(tmp_path):
    records = per_seed_records()
    comparisons = compare_metrics(records, ["recall@5", "ndcg@5"])
    assert list(comparisons) == ["recall@5", "ndcg@5"]
    assert comparisons["recall@5"]["seeds"] == [999, 1000, 1001, 1002, 1003]
    assert comparisons["recall@5"]["difference"]["mean"] == pytest.approx(0.02)
    assert comparisons["ndcg@5"]["difference"]["mean"] == pytest.approx(0.01)
    json.dumps(comparisons, allow_nan=False)

    table = markdown_table(comparisons)
    lines = table.strip().splitlines()
    assert len(lines) == 6 and "95 %" in lines[0]  # header, rule, 2 metrics, blank, family
    # raw p, then Holm and BH over the family of these 2 metrics (equal p-values: Holm doubles
    # them, BH keeps them): t 0.0751 -> 0.150, 0.0751; Wilcoxon 0.125 -> 0.250, 0.125
    assert lines[2] == (
        "| recall@5 | 0.3020 ± 0.0084 | 0.3220 ± 0.0192 | +0.0200 [-0.0032, +0.0432] "
        "| 0.0751 | 0.150 | 0.0751 | 0.125 | 0.250 | 0.125 |"
    )
    assert lines[-1].startswith("Adjusted p-values over a family of 2 tests per test")
    single = markdown_table(compare_metrics(records[:1], ["recall@5"]))
    assert "| recall@5 | 0.2900 | 0.3000 | +0.0100 | n/a | n/a | n/a | n/a | n/a | n/a |" in single

    with pytest.raises(KeyError, match="seed 999"):
        compare_metrics([{"seed": 999, "mg": {}, "plain": {}}], ["recall@5"])

    png = plot_seeds(records, ["recall@5", "ndcg@5"], tmp_path / "fig" / "seeds.png", "tiny")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- perturbations ---------------------------------------------------------------------------


def features(n: int = 200, d: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # columns with different spreads, so the per-column scaling matters
    return (rng.standard_normal((n, d)) * np.arange(1, d + 1) + 3).astype(np.float32)


def test_defaults():
    assert NOISE_LEVELS == (0.1, 0.2, 0.5, 1.0) and ADJUST_FRACTIONS == (0.1, 0.3, 0.5)


def test_level_zero_is_a_bit_identical_copy():
    x = features()
    noisy = gaussian_noise(x, 0.0, np.random.default_rng(1))
    adjusted, changed = information_adjustment(x, 0.0, np.random.default_rng(1))
    for y in (noisy, adjusted):
        assert y is not x and y.dtype == np.float32 and y.tobytes() == x.tobytes()
    assert changed.size == 0


def test_noise_scales_with_column_std_and_keeps_input():
    x = features(n=20000, d=5)
    before = x.copy()
    sigma = 0.5
    y = gaussian_noise(x, sigma, np.random.default_rng(7))
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_array_equal(x, before)  # input untouched
    noise_std = (y.astype(np.float64) - x).std(axis=0)
    expected = sigma * x.astype(np.float64).std(axis=0)
    # std of 20000 normal draws: relative standard error ~ 1/sqrt(2n) = 0.5 %
    np.testing.assert_allclose(noise_std, expected, rtol=0.03)
    assert np.abs((y.astype(np.float64) - x).mean(axis=0)).max() < 0.05 * expected.max()


def test_noise_reproducible_and_constant_column_unchanged():
    x = features()
    x[:, 0] = 1.5
    a = gaussian_noise(x, 1.0, np.random.default_rng(3))
    b = gaussian_noise(x, 1.0, np.random.default_rng(3))
    assert a.tobytes() == b.tobytes()
    assert np.all(a[:, 0] == 1.5)


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 1.0])
def test_adjustment_changes_exactly_floor_pn_rows(fraction):
    x = features(n=97)
    before = x.copy()
    y, changed = information_adjustment(x, fraction, np.random.default_rng(5))
    np.testing.assert_array_equal(x, before)
    k = math.floor(fraction * 97)
    assert changed.size == k == np.unique(changed).size
    differs = np.flatnonzero(np.any(y != x, axis=1))
    np.testing.assert_array_equal(differs, changed)  # rows are distinct, so all changed differ
    for i in changed:
        donors = np.flatnonzero(np.all(x == y[i], axis=1))
        assert donors.size == 1 and donors[0] != i  # another item's original row


def test_adjustment_count_uses_decimal_fraction():
    _, changed = information_adjustment(features(n=100), 0.29, np.random.default_rng(0))
    assert changed.size == 29  # 0.29 * 100 is 28.999999999999996 in binary


def test_shifted_features_seeding_and_modalities():
    v, t = features(seed=1), features(d=4, seed=2)
    v0, t0 = v.copy(), t.copy()
    for kind, level in (("noise", 0.2), ("adjust", 0.3)):
        both = shifted_features(v, t, kind, level, "both", seed=11)
        again = shifted_features(v, t, kind, level, "both", seed=11)
        other = shifted_features(v, t, kind, level, "both", seed=12)
        assert both[0].tobytes() == again[0].tobytes() and both[1].tobytes() == again[1].tobytes()
        assert not np.array_equal(both[0], other[0])
        image_only = shifted_features(v, t, kind, level, "image", seed=11)
        text_only = shifted_features(v, t, kind, level, "text", seed=11)
        # each modality has its own stream: the same shift whether or not the other is shifted
        assert image_only[0].tobytes() == both[0].tobytes() and image_only[1] is t
        assert text_only[1].tobytes() == both[1].tobytes() and text_only[0] is v
        assert not np.array_equal(both[0], v)
    np.testing.assert_array_equal(v, v0)
    np.testing.assert_array_equal(t, t0)
    assert shifted_features(None, t, "noise", 0.5, "both", seed=0)[0] is None
    same_v, no_t = shifted_features(v, None, "adjust", 0.5, "text", seed=0)
    assert same_v is v and no_t is None
    with pytest.raises(ValueError):
        shifted_features(v, t, "blur", 0.5, "both", seed=0)
    with pytest.raises(ValueError):
        shifted_features(v, t, "noise", 0.5, "audio", seed=0)
