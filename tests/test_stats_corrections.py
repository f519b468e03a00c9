"""p-values corrected for multiplicity (issue 21, part 3): Holm-Bonferroni and
Benjamini-Hochberg against values worked out by hand from their definitions and against
independent computations (scipy's ``false_discovery_control``; Holm's step-down procedure run
as a procedure), the family carried by ``compare_metrics`` and ``correct_family``, the table,
and the study report calling a difference significant only after correction."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as scipy_stats

from mgrec.analysis.stats import (
    benjamini_hochberg,
    compare_metrics,
    correct_family,
    holm,
    markdown_table,
    significant_after_correction,
)
from mgrec.study import report as study_report

# --- the adjustments on fixed inputs, by hand ------------------------------------------------


def test_holm_and_bh_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04; m = 4
    # Holm: 4 * 0.005 = 0.02; 3 * 0.01 = 0.03; 2 * 0.03 = 0.06; max(0.06, 1 * 0.04) = 0.06
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH from the top: 4/4 * 0.04 = 0.04; min(0.04, 4/3 * 0.03) = 0.04; 4/2 * 0.01 = 0.02;
    # min(0.02, 4/1 * 0.005) = 0.02
    assert benjamini_hochberg(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])


def test_ties_undefined_values_and_the_cap_at_one():
    # None is no test: m = 5 (0.2, 0.001, 0.2, 0.6, 0.04), sorted 0.001, 0.04, 0.2, 0.2, 0.6
    p = [0.2, None, 0.001, 0.2, 0.6, 0.04]
    # Holm: 5 * 0.001 = 0.005; 4 * 0.04 = 0.16; 3 * 0.2 = 0.6; then max(0.6, 0.4), max(0.6, 0.6)
    assert holm(p) == pytest.approx([0.6, None, 0.005, 0.6, 0.6, 0.16])
    # BH: 5/5 * 0.6 = 0.6; 5/4 * 0.2 = 0.25; min(0.25, 5/3 * 0.2); 5/2 * 0.04 = 0.1; 5 * 0.001
    assert benjamini_hochberg(p) == pytest.approx([0.25, None, 0.005, 0.25, 0.6, 0.1])
    assert holm([0.5, 0.7]) == [1.0, 1.0]  # 2 * 0.5 capped at 1, and monotone
    assert benjamini_hochberg([0.5, 0.7]) == pytest.approx([0.7, 0.7])
    assert holm([]) == [] and benjamini_hochberg([None]) == [None]
    assert holm([0.03]) == [0.03] and benjamini_hochberg([0.03]) == [0.03]  # a family of one
    for bad in ([1.5], [-0.1], [float("nan")], ["0.1"]):
        with pytest.raises(ValueError, match="p-value must be a number in"):
            holm(bad)


# --- against independent computations ---------------------------------------------------------


def holm_step_down(p: list[float], alpha: float) -> list[bool]:
    """Holm's procedure as written: walk the sorted p-values, reject while p_(k) <= alpha /
    (m - k + 1) (k from 1), stop at the first that is not."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    rejected = [False] * len(p)
    for k, i in enumerate(order, start=1):
        if p[i] > alpha / (len(p) - k + 1):
            break
        rejected[i] = True
    return rejected


def holm_by_definition(p: list[float]) -> list[float]:
    """max over every p-value at or below p_i's rank of (m - rank + 1) * p, capped at 1."""
    m = len(p)
    ranks = {i: r for r, i in enumerate(sorted(range(m), key=lambda i: p[i]), start=1)}
    return [
        min(1.0, max((m - ranks[k] + 1) * p[k] for k in range(m) if ranks[k] <= ranks[i]))
        for i in range(m)
    ]


@pytest.mark.parametrize("seed", range(5))
def test_against_scipy_and_holms_procedure(seed):
    rng = np.random.default_rng(seed)
    # a mix of small and uniform p-values, with ties, as a study's family would hold
    p = np.concatenate([rng.uniform(0, 0.01, 6), rng.uniform(0, 1, 20), [0.02, 0.02]])
    p = [float(x) for x in rng.permutation(p)]
    assert benjamini_hochberg(p) == pytest.approx(
        list(scipy_stats.false_discovery_control(p, method="bh")), rel=1e-12
    )
    adjusted = holm(p)
    assert adjusted == pytest.approx(holm_by_definition(p), rel=1e-12)
    for alpha in (0.01, 0.05, 0.1, 0.2):
        assert [a < alpha for a in adjusted] == holm_step_down(p, alpha - 1e-15)


# --- the family in compare_metrics, correct_family and the table -----------------------------


PLAIN = {
    "a": [0.30, 0.31, 0.29, 0.30, 0.32, 0.28],
    "b": [0.20, 0.22, 0.21, 0.19, 0.20, 0.21],
    "c": [0.10] * 6,
    "d": [0.50, 0.52, 0.49, 0.51, 0.50, 0.48],
}
DELTA = {  # mg - plain per seed
    "a": [0.10, 0.11, 0.09, 0.10, 0.12, 0.08],  # large and consistent
    "b": [0.02, 0.01, 0.03, -0.005, 0.015, 0.02],  # raw t p 0.027: Holm 0.053, BH 0.040
    "c": [0.0] * 6,  # identical arms: no test (None), not counted in the family
    "d": [0.01, -0.02, 0.005, 0.0, -0.01, 0.015],  # nothing (mean 0: t p = 1)
}


def records() -> list[dict]:
    return [
        {
            "seed": seed,
            "plain": {m: PLAIN[m][i] for m in PLAIN},
            "mg": {m: PLAIN[m][i] + DELTA[m][i] for m in PLAIN},
        }
        for i, seed in enumerate(range(999, 1005))
    ]


def test_compare_metrics_carries_the_corrected_family():
    comparisons = compare_metrics(records(), list(PLAIN))
    raw_t = [comparisons[m]["t_test"]["p_value"] for m in PLAIN]
    raw_w = [comparisons[m]["wilcoxon"]["p_value"] for m in PLAIN]
    # the raw p-values, independently: scipy's paired t-test and exact Wilcoxon (6 pairs)
    d_a, d_b = np.array(DELTA["a"]), np.array(DELTA["b"])
    assert raw_t[0] == pytest.approx(scipy_stats.ttest_1samp(d_a, 0).pvalue)
    assert raw_t[1] == pytest.approx(scipy_stats.ttest_1samp(d_b, 0).pvalue)
    assert raw_t[1] == pytest.approx(0.026692590729552518) and raw_t[2] is None
    assert raw_w[:2] == pytest.approx([2 / 64, 4 / 64]) and raw_w[2] is None  # all signs +
    # family of 3 per test (c has no test); by hand, t: sorted 1.18e-5, 0.0267, 1.0
    a, b, c, d = (comparisons[m] for m in PLAIN)
    assert a["family"] == {"t": 3, "wilcoxon": 3} and a["alpha"] == 0.05
    assert a["p_t_holm"] == pytest.approx(3 * raw_t[0])
    assert b["p_t_holm"] == pytest.approx(2 * raw_t[1])  # 0.0534: not significant
    assert b["p_t_bh"] == pytest.approx(3 / 2 * raw_t[1])  # 0.0400: significant
    assert d["p_t_holm"] == d["p_t_bh"] == 1.0
    assert c["p_t_holm"] is None and c["p_wilcoxon_bh"] is None
    # Wilcoxon: sorted 2/64, 4/64, 1; Holm 3 * 2/64 = 0.094, 2 * 4/64 = 0.125
    assert a["p_wilcoxon_holm"] == pytest.approx(3 * 2 / 64)
    assert b["p_wilcoxon_holm"] == pytest.approx(2 * 4 / 64)
    assert a["p_wilcoxon_bh"] == b["p_wilcoxon_bh"] == pytest.approx(3 / 2 * 4 / 64)
    assert a["significant"] == {
        "t_holm": True, "t_bh": True, "wilcoxon_holm": False, "wilcoxon_bh": False,
    }  # fmt: skip
    assert b["significant"]["t_bh"] and not b["significant"]["t_holm"]
    assert significant_after_correction(comparisons) == {
        "t_holm": ["a"], "t_bh": ["a", "b"], "wilcoxon_holm": [], "wilcoxon_bh": [],
        "raw_only": ["a (Wilcoxon)"],
    }  # fmt: skip
    json.dumps(comparisons, allow_nan=False)
    # a stricter alpha changes the calls, not the adjusted values
    strict = compare_metrics(records(), list(PLAIN), alpha=0.01)
    assert strict["a"]["p_t_holm"] == a["p_t_holm"] and not strict["b"]["significant"]["t_bh"]


def test_a_larger_family_corrects_over_every_comparison():
    """Two comparisons (say two models) of 4 metrics: one family of 6 tests per test type."""
    first, second = compare_metrics(records(), list(PLAIN)), compare_metrics(records(), list(PLAIN))
    alone = first["b"]["p_t_holm"]
    sizes = correct_family([first, second])
    assert sizes == {"t": 6, "wilcoxon": 6}
    assert first["b"]["family"] == second["a"]["family"] == {"t": 6, "wilcoxon": 6}
    raw = [c[m]["t_test"]["p_value"] for c in (first, second) for m in PLAIN]
    assert [c[m]["p_t_holm"] for c in (first, second) for m in PLAIN] == holm(raw)
    assert [c[m]["p_t_bh"] for c in (first, second) for m in PLAIN] == benjamini_hochberg(raw)
    # b's two tests: 4 * 0.0267 -> max(4 * 0.0267, ...) > its Holm value in a family of 3
    assert first["b"]["p_t_holm"] == pytest.approx(4 * first["b"]["t_test"]["p_value"])
    assert first["b"]["p_t_holm"] > alone
    with pytest.raises(ValueError, match="alpha"):
        correct_family([first], alpha=1.5)


def test_the_table_shows_raw_and_adjusted_p_and_the_family():
    table = markdown_table(compare_metrics(records(), list(PLAIN)))
    lines = table.strip().splitlines()
    assert lines[0].endswith(
        "| t-test p | t p Holm | t p BH | Wilcoxon p | Wilcoxon p Holm | Wilcoxon p BH |"
    )
    assert lines[3] == (
        "| b | 0.2050 ± 0.0105 | 0.2200 ± 0.0192 | +0.0150 [+0.0026, +0.0274] "
        "| 0.0267 | 0.0534 | 0.0400 * | 0.0625 | 0.125 | 0.0938 |"
    )
    assert "| c | 0.1000 ± 0.0000 | 0.1000 ± 0.0000 |" in lines[4] and lines[4].endswith(
        "| n/a | n/a | n/a | n/a | n/a | n/a |"
    )
    assert lines[-1].startswith("Adjusted p-values over a family of 3 tests per test")
    assert "α = 0.05" in lines[-1]


# --- the study report --------------------------------------------------------------------------


def study(comparison: dict, per_seed: list[dict]) -> dict:
    """A finished study's report as ``write_report`` gets it (no training needed)."""
    return {
        "model": "VBPR", "dataset": "tiny", "synthetic": False, "per_seed": per_seed,
        "metrics_shown": ["a", "b"], "budget": "equal",
        "candidates_per_arm": {"mg": 3, "plain_replicas": 3},
        "comparison": comparison, "reference_protocol": comparison,
        "epoch_seconds": {"mg": 0.2, "plain": 0.1},
        "seconds": {"train": 1.0, "total": 2.0},
    }  # fmt: skip


def test_the_study_report_calls_significant_only_after_correction(tmp_path, capsys):
    per_seed = records()
    study_report.write_report(study(compare_metrics(per_seed, list(PLAIN)), per_seed), tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "**Significant after correction** (α = 0.05; family of 3 t-tests and 3 Wilcoxon" in text
    assert "- Holm-Bonferroni (family-wise error): t-test a; Wilcoxon none." in text
    assert "- Benjamini-Hochberg (false discovery rate): t-test a, b; Wilcoxon none." in text
    assert (
        "not significant after either correction (not evidence of a difference): a (Wilcoxon)"
        in text
    )
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["comparison"]["b"]["p_t_holm"] == pytest.approx(0.053385181459105036)
    capsys.readouterr()

    # 16 metrics, each with b's raw t p of 0.027: every raw p < 0.05, none survives Holm over
    # 16 (16 * 0.027 > 0.05) and none BH (0.027 * 16 / 16 = 0.027 < 0.05: BH keeps them all:
    # equal p-values all pass together or fail together)
    many = [f"m{i}" for i in range(16)]
    same = [
        {"seed": r["seed"], "plain": {m: r["plain"]["b"] for m in many},
         "mg": {m: r["mg"]["b"] for m in many}} for r in per_seed
    ]  # fmt: skip
    comparison = compare_metrics(same, many)
    study_report.write_report({**study(comparison, same), "metrics_shown": many[:2]}, tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "t-test none; Wilcoxon none." in text.split("Holm-Bonferroni (family-wise error): ")[1]
    assert "Benjamini-Hochberg (false discovery rate): t-test m0, m1," in text
    assert all(
        c["p_t_holm"] == pytest.approx(min(1, 16 * 0.026692590729552518))
        for c in comparison.values()
    )
