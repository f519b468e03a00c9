"""Paired comparison of the "MG" and "no MG" arms of a multi-seed study.

Each seed trains both arms, so the samples are paired: the analysis works on the per-seed
differences ``d = mg - plain``. :func:`paired_comparison` returns, for one metric,

- per arm: ``mean`` and sample ``std`` (ddof=1);
- ``difference``: mean and sample std of ``d`` and the two-sided ``confidence`` interval of the
  mean difference, ``mean ± t_{(1+c)/2, n-1} · sd / sqrt(n)`` (Student t, n-1 degrees of freedom);
- ``t_test``: the paired t-test (``scipy.stats.ttest_1samp(d, 0)``, identical to ``ttest_rel``),
  statistic and two-sided p-value;
- ``wilcoxon``: the Wilcoxon signed-rank test, statistic and two-sided p-value.

Wilcoxon settings (explicit rather than scipy's ``"auto"``, so the choice is visible here):

- Differences are first rounded to :data:`TIE_DECIMALS` (12) places. Metrics are decimals
  (reported to 4 places), and binary subtraction leaves noise in the last bits (``0.35 - 0.30``
  is ``0.04999999999999999``); rounding makes differences that are equal in decimal equal in
  binary (ties) and zero ones exactly zero. Differences below 5e-13 therefore count as zero.
- ``zero_method="wilcox"``: zero differences (seeds where both arms score the same) are dropped
  before ranking; ``n_nonzero`` says how many pairs remain. Ties among ``|d|`` get average ranks.
- ``method``: with no ties and ``n_nonzero <= 50``, ``"exact"`` (the exact null distribution of
  the signed-rank statistic). With ties and ``n_nonzero <= 13``, an exhaustive sign-flip
  permutation test (``PermutationMethod`` with ``n_resamples = 2**n_nonzero``): all sign
  patterns are enumerated, so the p-value is exact given the tied ranks and deterministic. Else
  ``"asymptotic"``: the normal approximation with the tie-corrected variance and no continuity
  correction. The method used is reported as ``"exact"``, ``"permutation"`` or ``"normal"``.
- The statistic is scipy's two-sided one, ``min(W+, W-)``; ``w_plus`` and ``w_minus`` (the rank
  sums of positive and negative differences) are reported too.
- Note the floor this puts on small studies: with n pairs and no ties the smallest possible
  two-sided p is ``2 / 2**n`` (0.0625 for 5 seeds), so p < 0.05 needs at least 6 seeds.

Undefined values. Every number is a plain Python ``float`` (or ``int`` for counts) and every
value that is undefined is ``None``, never NaN or infinity, so the result passes
``json.dumps(..., allow_nan=False)``:

- n < 2 (a single seed): the means are defined; every std, the interval, the t-test and the
  Wilcoxon test are ``None`` (a spread and a test need at least two pairs).
- no spread in d (identical arms, or the same difference on every seed): ``std`` is 0.0, the
  interval is the point ``[mean, mean]`` and the t-test is ``None`` (its statistic is 0/0 or
  ±inf). "The same" is judged at :data:`TIE_DECIMALS` places, for the reason above: otherwise
  bit noise (sd ~ 1e-17) would give a t statistic of ~1e15 and a p-value of ~1e-32.
- all differences zero after rounding (``n_nonzero == 0``): the Wilcoxon test is ``None``.
- Empty or unequal-length inputs, non-finite values, or a confidence outside (0, 1) raise
  ``ValueError``.

Multiplicity. A study makes many tests (every metric, and across models and strategies every
pair of arms), so raw p-values below 0.05 are expected by chance alone. :func:`correct_family`
adjusts the p-values of a whole family of comparisons: Holm-Bonferroni (:func:`holm`: controls
the family-wise error rate, the chance of any false positive) and Benjamini-Hochberg
(:func:`benjamini_hochberg`: controls the false discovery rate, the expected share of false
positives among the differences called significant). The family is every comparison passed;
the paired t-test's p-values and the Wilcoxon test's are corrected separately (two readings of
the same hypotheses, not more hypotheses), each over the tests that could be made (an undefined
p-value, ``None``, is not a test: it is left out and stays ``None``), so each test states its own
family size. A difference is called significant only when its adjusted p-value is below
``alpha`` (0.05 by default). :func:`compare_metrics` corrects over its own metrics; a study of
several comparisons passes them all to :func:`correct_family` at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

TIE_DECIMALS = 12
MAX_EXACT = 50  # exact null distribution without ties up to this many non-zero pairs
MAX_PERMUTATION = 13  # 2**13 sign patterns: still cheap to enumerate them all
ALPHA = 0.05  # significance level, applied to adjusted p-values only
# (name in a comparison's keys, where its raw p-value is) for the two tests of each comparison
TESTS = (("t", "t_test"), ("wilcoxon", "wilcoxon"))


def _float(x: float) -> float | None:
    """A JSON-safe float: NaN and ±inf become None."""
    x = float(x)
    return x if math.isfinite(x) else None


def _summary(values: np.ndarray) -> dict[str, float | None]:
    std = _float(np.std(values, ddof=1)) if values.size >= 2 else None
    return {"mean": _float(np.mean(values)), "std": std}


def _wilcoxon(d: np.ndarray) -> dict[str, Any]:
    """Two-sided signed-rank test on the paired differences (settings in the module docstring)."""
    rounded = np.round(d, TIE_DECIMALS)
    nonzero = rounded[rounded != 0]
    result: dict[str, Any] = {
        "statistic": None,
        "p_value": None,
        "w_plus": None,
        "w_minus": None,
        "n_nonzero": int(nonzero.size),
        "zero_method": "wilcox",
        "method": None,
    }
    if d.size < 2 or nonzero.size == 0:
        return result
    ranks = stats.rankdata(np.abs(nonzero))  # average ranks for ties
    has_ties = np.unique(np.abs(nonzero)).size < nonzero.size
    if not has_ties and nonzero.size <= MAX_EXACT:
        method, scipy_method = "exact", "exact"
    elif has_ties and nonzero.size <= MAX_PERMUTATION:
        method = "permutation"
        scipy_method = stats.PermutationMethod(n_resamples=2**nonzero.size)
    else:
        method, scipy_method = "normal", "asymptotic"
    res = stats.wilcoxon(
        nonzero,
        zero_method="wilcox",
        correction=False,
        alternative="two-sided",
        method=scipy_method,
    )
    result.update(
        statistic=_float(res.statistic),
        p_value=_float(min(1.0, float(res.pvalue))),
        w_plus=float(ranks[nonzero > 0].sum()),
        w_minus=float(ranks[nonzero < 0].sum()),
        method=method,
    )
    return result


def paired_comparison(
    mg: Sequence[float], plain: Sequence[float], confidence: float = 0.95
) -> dict[str, Any]:
    """Paired statistics of ``mg`` against ``plain`` (one value per seed, same seed order).

    Returns ``{"n", "confidence", "mg": {mean, std}, "plain": {mean, std}, "difference": {mean,
    std, ci_low, ci_high, ci_half_width, t_quantile}, "t_test": {statistic, p_value, df},
    "wilcoxon": {statistic, p_value, w_plus, w_minus, n_nonzero, zero_method, method}}``; see
    the module docstring for the conventions and for what is ``None`` when.
    """
    a = np.asarray(mg, dtype=np.float64)
    b = np.asarray(plain, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"mg and plain must be 1-d and of equal length, got {a.shape}, {b.shape}")
    if a.size == 0:
        raise ValueError("paired_comparison needs at least one pair")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("mg and plain must be finite numbers")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")

    n = int(a.size)
    d = a - b
    mean_d = float(np.mean(d))
    difference: dict[str, Any] = {
        "mean": _float(mean_d),
        "std": None,
        "ci_low": None,
        "ci_high": None,
        "ci_half_width": None,
        "t_quantile": None,
    }
    t_test: dict[str, Any] = {"statistic": None, "p_value": None, "df": n - 1 if n >= 2 else None}
    if n >= 2:
        rounded = np.round(d, TIE_DECIMALS)
        # equal in decimal means no spread: bit noise must not make the t-test "significant"
        sd = 0.0 if np.all(rounded == rounded[0]) else float(np.std(d, ddof=1))
        quantile = float(stats.t.ppf(0.5 + confidence / 2, n - 1))
        half = quantile * sd / math.sqrt(n)
        difference.update(
            std=_float(sd),
            ci_low=_float(mean_d - half),
            ci_high=_float(mean_d + half),
            ci_half_width=_float(half),
            t_quantile=_float(quantile),
        )
        if sd > 0:  # with no spread the t statistic is 0/0 or ±inf: left as None
            res = stats.ttest_1samp(d, 0.0)
            t_test.update(statistic=_float(res.statistic), p_value=_float(res.pvalue))

    return {
        "n": n,
        "confidence": float(confidence),
        "mg": _summary(a),
        "plain": _summary(b),
        "difference": difference,
        "t_test": t_test,
        "wilcoxon": _wilcoxon(d),
    }


def compare_metrics(
    per_seed: list[dict], metrics: Sequence[str], confidence: float = 0.95, alpha: float = ALPHA
) -> dict[str, dict]:
    """:func:`paired_comparison` for each metric over records ``{"seed", "mg": {...}, "plain": {...}}``.

    Pairs are taken record by record, so each record must hold both arms' value of every metric
    (a missing one raises ``KeyError`` naming the seed). Each result also lists the ``seeds`` and
    carries its p-values corrected over these metrics (:func:`correct_family`: ``p_t_holm``,
    ``p_t_bh``, ``p_wilcoxon_holm``, ``p_wilcoxon_bh``, ``family``, ``significant``); a study
    of several comparisons corrects again over all of them.
    """
    if not per_seed:
        raise ValueError("compare_metrics needs at least one per-seed record")
    out: dict[str, dict] = {}
    for metric in metrics:
        mg: list[float] = []
        plain: list[float] = []
        for record in per_seed:
            for arm, values in (("mg", mg), ("plain", plain)):
                try:
                    values.append(float(record[arm][metric]))
                except KeyError:
                    raise KeyError(
                        f"seed {record.get('seed')}: no {arm!r} value for metric {metric!r}"
                    ) from None
        comparison = paired_comparison(mg, plain, confidence)
        comparison["seeds"] = [record.get("seed") for record in per_seed]
        out[metric] = comparison
    correct_family([out], alpha)
    return out


# --- multiplicity --------------------------------------------------------------------------------


def _checked(p_values: Sequence[float | None]) -> list[tuple[int, float]]:
    """(position, p) of the defined p-values, each checked to lie in [0, 1]."""
    defined = []
    for position, p in enumerate(p_values):
        if p is None:
            continue
        if not (isinstance(p, (int, float)) and 0.0 <= float(p) <= 1.0):
            raise ValueError(f"a p-value must be a number in [0, 1] or None, got {p!r}")
        defined.append((position, float(p)))
    return defined


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, in the order given (``None`` stays ``None`` and is not
    counted in the family size ``m``).

    With the m defined p-values sorted, ``p_(1) <= ... <= p_(m)``, the adjusted value of the
    i-th is ``max_{j <= i} min(1, (m - j + 1) * p_(j))``: below ``alpha`` exactly when Holm's
    step-down procedure at level ``alpha`` rejects that hypothesis (family-wise error control).
    """
    defined = _checked(p_values)
    m = len(defined)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (position, p) in enumerate(sorted(defined, key=lambda x: x[1])):
        running = max(running, min(1.0, (m - rank) * p))
        out[position] = running
    return out


def benjamini_hochberg(p_values: Sequence[float | None]) -> list[float | None]:
    """Benjamini-Hochberg adjusted p-values ("q-values"), in the order given (``None`` stays
    ``None`` and is not counted in ``m``).

    With the m defined p-values sorted, the adjusted value of the i-th is
    ``min_{j >= i} min(1, m * p_(j) / j)``: below ``alpha`` exactly when the step-up procedure
    at false discovery rate ``alpha`` rejects that hypothesis (valid for independent or
    positively dependent tests, as metrics of one ranking are).
    """
    defined = _checked(p_values)
    m = len(defined)
    out: list[float | None] = [None] * len(p_values)
    running = 1.0
    ranked = sorted(defined, key=lambda x: x[1])
    for rank in range(m, 0, -1):
        position, p = ranked[rank - 1]
        running = min(running, m * p / rank)
        out[position] = running
    return out


def correct_family(
    comparisons: Sequence[Mapping[str, dict]], alpha: float = ALPHA
) -> dict[str, int]:
    """Correct every comparison of ``comparisons`` (each a metric -> :func:`paired_comparison`
    result mapping, e.g. one :func:`compare_metrics` output per model and pair of arms) over
    the whole family, in place.

    Each comparison gets ``p_t_holm``, ``p_t_bh``, ``p_wilcoxon_holm``, ``p_wilcoxon_bh``
    (``None`` where its raw p-value is), ``family`` (``{"t": m_t, "wilcoxon": m_w}``: how many
    tests each correction counted), ``alpha`` and ``significant`` (``{"t_holm", "t_bh",
    "wilcoxon_holm", "wilcoxon_bh"}``: adjusted p < ``alpha``). Returns the family sizes.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    members = [c for group in comparisons for c in group.values()]
    sizes: dict[str, int] = {}
    for name, key in TESTS:
        raw = [c[key]["p_value"] for c in members]
        sizes[name] = sum(p is not None for p in raw)
        for method, adjust in (("holm", holm), ("bh", benjamini_hochberg)):
            for c, adjusted in zip(members, adjust(raw), strict=True):
                c[f"p_{name}_{method}"] = adjusted
    for c in members:
        c["family"], c["alpha"] = dict(sizes), float(alpha)
        c["significant"] = {
            f"{name}_{method}": c[f"p_{name}_{method}"] is not None
            and c[f"p_{name}_{method}"] < alpha
            for name, _ in TESTS
            for method in ("holm", "bh")
        }
    return sizes


def significant_after_correction(
    comparisons: Mapping[str, Mapping[str, Any]],
) -> dict[str, list[str]]:
    """The metrics of ``comparisons`` (a :func:`compare_metrics` output) significant after each
    correction: ``{"t_holm": [...], "t_bh": [...], "wilcoxon_holm": [...], "wilcoxon_bh":
    [...]}``, and under ``"raw_only"`` each test's raw p below alpha that neither correction
    keeps (``"recall@20 (t-test)"``, ``"recall@50 (Wilcoxon)"``)."""
    found: dict[str, list[str]] = {f"{n}_{m}": [] for n, _ in TESTS for m in ("holm", "bh")}
    found["raw_only"] = []
    labels = {"t": "t-test", "wilcoxon": "Wilcoxon"}
    for metric, c in comparisons.items():
        marks = c.get("significant") or {}
        alpha = c.get("alpha", ALPHA)
        for name, key in TESTS:
            kept = False
            for method in ("holm", "bh"):
                if marks.get(f"{name}_{method}"):
                    found[f"{name}_{method}"].append(metric)
                    kept = True
            raw = c[key]["p_value"]
            if raw is not None and raw < alpha and not kept:
                found["raw_only"].append(f"{metric} ({labels[name]})")
    return found


def _num(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def _p(x: float | None) -> str:
    """A p-value to 3 significant digits, keeping trailing zeros (1.00, 0.0500)."""
    if x is None:
        return "n/a"
    return "0" if x == 0 else f"{x:#.3g}"


def _mean_std(arm: dict) -> str:
    std = arm["std"]
    return _num(arm["mean"]) if std is None else f"{_num(arm['mean'])} ± {_num(std)}"


def _adjusted(c: Mapping[str, Any], name: str) -> str:
    """An adjusted p-value, starred when below the comparison's alpha ("n/a" when absent)."""
    value = c.get(name)
    if value is None:
        return "n/a"
    return _p(value) + (" *" if value < c.get("alpha", ALPHA) else "")


def family_note(comparisons: Mapping[str, dict]) -> str:
    """One line naming the family the adjusted p-values were corrected over."""
    first = next(iter(comparisons.values()), {})
    family = first.get("family")
    if not family:
        return "p-values not corrected for multiplicity."
    alpha = first.get("alpha", ALPHA)
    sizes = (
        f"{family['t']} tests"
        if family["t"] == family["wilcoxon"]
        else f"{family['t']} t-tests, {family['wilcoxon']} Wilcoxon tests"
    )
    return (
        f"Adjusted p-values over a family of {sizes} per test: Holm-Bonferroni (family-wise "
        f"error) and Benjamini-Hochberg (false discovery rate); * marks an adjusted p below "
        f"α = {alpha:g}, the only reading of significance here (raw p-values are uncorrected)."
    )


def markdown_table(
    comparisons: dict[str, dict],
    labels: tuple[str, str] = ("No MG", "MG"),
    first: str = "Metric",
) -> str:
    """A Markdown table, one row per metric, of :func:`compare_metrics`' output, and a line
    naming the family of the correction.

    Columns: no-MG mean ± std, MG mean ± std, mean difference (MG - no MG) with its confidence
    interval, then for the t-test and the Wilcoxon test the raw p and the Holm and
    Benjamini-Hochberg adjusted p (``*`` below alpha). Numbers to 4 places, p-values to 3
    significant digits; undefined values read ``n/a``. ``labels`` name the two arms (the
    baseline, in the ``"plain"`` slot, first; e.g. ``("VBPR", "VBPR + SAM")``), ``first`` the
    first column.
    """
    levels = {round(100 * c["confidence"], 6) for c in comparisons.values()} or {95.0}
    level = f"{levels.pop():g} %" if len(levels) == 1 else "CI"
    base, other = labels
    difference = "MG − no MG" if labels == ("No MG", "MG") else f"{other} − {base}"
    lines = [
        f"| {first} | {base} (mean ± std) | {other} (mean ± std) | Δ {difference} [{level} CI] "
        "| t-test p | t p Holm | t p BH | Wilcoxon p | Wilcoxon p Holm | Wilcoxon p BH |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for metric, c in comparisons.items():
        diff = c["difference"]
        delta = _num(diff["mean"], signed=True)
        if diff["ci_low"] is not None:
            delta += f" [{_num(diff['ci_low'], True)}, {_num(diff['ci_high'], True)}]"
        cells = [
            metric,
            _mean_std(c["plain"]),
            _mean_std(c["mg"]),
            delta,
            _p(c["t_test"]["p_value"]),
            _adjusted(c, "p_t_holm"),
            _adjusted(c, "p_t_bh"),
            _p(c["wilcoxon"]["p_value"]),
            _adjusted(c, "p_wilcoxon_holm"),
            _adjusted(c, "p_wilcoxon_bh"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + family_note(comparisons) + "\n"


def _mean_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """Mean and t-interval half-width of one arm (0 for a single value: no interval)."""
    mean = float(np.mean(values))
    if values.size < 2:
        return mean, 0.0
    quantile = float(stats.t.ppf(0.5 + confidence / 2, values.size - 1))
    return mean, quantile * float(np.std(values, ddof=1)) / math.sqrt(values.size)


def plot_seeds(
    per_seed: list[dict],
    metrics: Sequence[str],
    path: str | Path,
    title: str = "",
    confidence: float = 0.95,
) -> Path:
    """Save a PNG with one panel per metric: each seed's two arms (joined), the arm means ± CI.

    Uses the Agg canvas directly (no pyplot), so the global matplotlib backend and any open
    figures of the caller are left alone. Returns the path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = list(metrics)
    if not metrics:
        raise ValueError("plot_seeds needs at least one metric")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    fig = Figure(figsize=(3.2 * len(metrics), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    arms = (("plain", "No MG", "tab:blue"), ("mg", "MG", "tab:orange"))
    for ax, metric in zip(axes, metrics, strict=True):
        values = {arm: np.array([float(r[arm][metric]) for r in per_seed]) for arm, _, _ in arms}
        for i in range(len(per_seed)):  # one grey line per seed shows the pairing
            ax.plot([0, 1], [values["plain"][i], values["mg"][i]], color="0.7", lw=0.8, zorder=1)
        for x, (arm, label, color) in enumerate(arms):
            ax.scatter(np.full(len(per_seed), x), values[arm], color=color, s=18, zorder=2)
            mean, half = _mean_interval(values[arm], confidence)
            # drawn beside the points so the interval does not hide them
            ax.errorbar(
                x + (0.15 if x else -0.15),
                mean,
                yerr=half,
                fmt="D",
                color=color,
                capsize=4,
                zorder=3,
                label=f"{label} mean ± {confidence:.0%} CI",
            )
        ax.set_xticks([0, 1], [label for _, label, _ in arms])
        ax.set_xlim(-0.5, 1.5)
        ax.set_title(metric)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize="small", loc="best")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=120)
    return path


def plot_differences(
    panels: Mapping[str, Mapping[str, Mapping[str, Mapping[str, Any]]]],
    metrics: Sequence[str],
    path: str | Path,
    title: str = "",
    mark: str = "t_holm",
    metric_labels: Sequence[str] | None = None,
) -> Path:
    """Save a PNG of paired differences with their intervals, one panel per entry of ``panels``
    (e.g. per strategy: ``{"MG - plain": {"VBPR": compare_metrics output, ...}, ...}``).

    In each panel, one row per metric (top to bottom in ``metrics``' order) and one point per
    series (model: offset and coloured), at the mean difference with its confidence interval as
    a horizontal bar; the point is filled where the difference is significant after correction
    (``mark``: a key of each comparison's ``significant``, Holm-adjusted t-test by default) and
    hollow otherwise; a vertical line marks zero; ``metric_labels`` name the rows (default the
    metrics). Agg canvas only, as :func:`plot_seeds`. Returns the path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    metrics = list(metrics)
    if not panels or not metrics:
        raise ValueError("plot_differences needs at least one panel and one metric")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    series = list(dict.fromkeys(name for panel in panels.values() for name in panel))
    colors = [f"C{i % 10}" for i in range(len(series))]
    fig = Figure(
        figsize=(4.4 * len(panels), 1.4 + 0.42 * len(metrics) * max(1, len(series)) ** 0.5),
        layout="constrained",
    )
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    spread = 0.6 / max(len(series), 1)
    for ax, (panel, comparisons) in zip(axes, panels.items(), strict=True):
        for i, name in enumerate(series):
            if name not in comparisons:
                continue
            offset = (i - (len(series) - 1) / 2) * spread
            for row, metric in enumerate(metrics):
                c = comparisons[name].get(metric)
                if c is None or c["difference"]["mean"] is None:
                    continue
                diff = c["difference"]
                y = len(metrics) - 1 - row - offset  # the first series on top
                low, high = diff["ci_low"], diff["ci_high"]
                if low is not None and high is not None:
                    ax.plot([low, high], [y, y], color=colors[i], lw=1.4)
                filled = bool((c.get("significant") or {}).get(mark))
                ax.plot(
                    [diff["mean"]], [y], "o", color=colors[i], ms=5,
                    markerfacecolor=colors[i] if filled else "white",
                    label=name if row == 0 else None,
                )  # fmt: skip
        ax.axvline(0.0, color="0.4", lw=0.8)
        ax.set_yticks(range(len(metrics)), list(reversed(list(metric_labels or metrics))))
        ax.set_title(panel, fontsize=10)
        level = next((c["confidence"] for p in comparisons.values() for c in p.values()), 0.95)
        ax.set_xlabel(f"difference from plain (mean, {level:.0%} CI)")
        ax.grid(axis="x", alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))  # a narrow panel: labels stay apart
    axes[0].legend(fontsize="small", loc="best")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=120)
    return path


def spearman_permutation(
    x: Sequence[float], y: Sequence[float], permutations: int = 10000, seed: int = 0
) -> dict[str, Any]:
    """Spearman's rank correlation of paired samples with a two-sided permutation p-value.

    ρ is Pearson's correlation of the ranks (average ranks for ties). The p-value is the share
    of ``permutations`` random re-pairings (seeded) with |ρ| at least the observed one, counted
    as (hits + 1) / (permutations + 1) so it is never 0; with n! <= ``permutations`` every
    re-pairing is enumerated instead and the p-value is exact. Undefined (None) with fewer than
    3 pairs or no spread in either sample.

    Returns ``{"rho", "p", "n", "permutations", "exact"}``.
    """
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError("x and y must be 1-d and of equal length")
    n = len(xs)
    result: dict[str, Any] = {"rho": None, "p": None, "n": n, "permutations": 0, "exact": False}
    if n < 3 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return result
    rx, ry = stats.rankdata(xs), stats.rankdata(ys)

    def rho_of(ranks: np.ndarray) -> np.ndarray:
        centred_x = rx - rx.mean()
        centred = ranks - ranks.mean(axis=-1, keepdims=True)
        top = (centred * centred_x).sum(axis=-1)
        return top / np.sqrt((centred**2).sum(axis=-1) * (centred_x**2).sum())

    observed = float(rho_of(ry[None, :])[0])
    if math.factorial(n) <= permutations:
        import itertools

        shuffled = np.array([ry[list(p)] for p in itertools.permutations(range(n))])
        hits = int((np.abs(rho_of(shuffled)) >= abs(observed) - 1e-12).sum())
        p_value, exact, count = hits / len(shuffled), True, len(shuffled)
    else:
        rng = np.random.default_rng(seed)
        shuffled = np.array([rng.permutation(ry) for _ in range(permutations)])
        hits = int((np.abs(rho_of(shuffled)) >= abs(observed) - 1e-12).sum())
        p_value, exact, count = (hits + 1) / (permutations + 1), False, permutations
    result.update(rho=observed, p=float(p_value), permutations=count, exact=exact)
    return result
