"""Table 1: tests between the study sets (continuous and categorical) and the baseline table."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats as _sps

from radfusion.stats.formatting import format_number, format_p_value
from radfusion.stats.inputs import _check_alpha

__all__ = ["baseline_table", "compare_categorical", "compare_continuous", "format_baseline_table"]


def _is_normal(x: np.ndarray, alpha: float) -> bool:
    """Shapiro-Wilk p >= alpha. Fewer than 3 values or a constant sample count as not normal
    (Shapiro-Wilk is undefined there and a t-test would be meaningless)."""
    if x.size < 3 or np.ptp(x) == 0:
        return False
    with warnings.catch_warnings():
        # scipy warns that p may be inaccurate for N > 5000; the decision is still usable.
        warnings.simplefilter("ignore", UserWarning)
        return bool(_sps.shapiro(x).pvalue >= alpha)


def compare_continuous(
    a: Any,
    b: Any,
    alpha_normality: float = 0.05,
    equal_var: bool = False,
    force: Literal["auto", "t-test", "mann-whitney"] = "auto",
) -> tuple[float, str]:
    """Compare one continuous variable between two independent groups.

    Shapiro-Wilk is run in each group; if ``p >= alpha_normality`` in both, an independent
    two-sample t-test is used (Welch's unless ``equal_var``), otherwise a two-sided
    Mann-Whitney U test (scipy's ``method="auto"``: exact for small samples without ties,
    normal approximation with continuity correction otherwise). NaNs are dropped.

    Parameters
    ----------
    a, b : array-like
        Values of the two groups.
    alpha_normality : float, default 0.05
        Shapiro-Wilk level.
    equal_var : bool, default False
        Student's t-test instead of Welch's.
    force : {"auto", "t-test", "mann-whitney"}, default "auto"
        Skip the normality check and use the named test.

    Returns
    -------
    (p_value, test_name) : tuple of (float, str)
        ``(nan, "")`` when a group has no value (or fewer than 2 for a t-test).
    """
    xa = pd.to_numeric(pd.Series(a), errors="raise").dropna().to_numpy(np.float64)
    xb = pd.to_numeric(pd.Series(b), errors="raise").dropna().to_numpy(np.float64)
    if xa.size == 0 or xb.size == 0:
        return math.nan, ""
    if force == "auto":
        use_t = _is_normal(xa, alpha_normality) and _is_normal(xb, alpha_normality)
    elif force in ("t-test", "mann-whitney"):
        use_t = force == "t-test"
    else:
        raise ValueError(f"force must be 'auto', 't-test' or 'mann-whitney', got {force!r}")
    if use_t:
        name = "Student t-test" if equal_var else "Welch t-test"
        if xa.size < 2 or xb.size < 2:
            return math.nan, name
        return float(_sps.ttest_ind(xa, xb, equal_var=equal_var).pvalue), name
    return float(_sps.mannwhitneyu(xa, xb, alternative="two-sided").pvalue), "Mann-Whitney U"


def compare_categorical(table: Any, yates: bool = False) -> tuple[float, str]:
    """Test independence in a contingency table (levels x groups).

    Rows or columns that are all zero are dropped first. A 2x2 table uses Fisher's exact test
    (two-sided) when any expected count is < 5, else Pearson's chi-square (with Yates'
    continuity correction only if ``yates``). Larger tables use Pearson's chi-square without
    correction (Fisher's exact test is only available for 2x2 here; with small expected counts
    the chi-square approximation is rough; the test name is reported so readers can judge).

    Parameters
    ----------
    table : array-like of shape (n_levels, n_groups)
        Counts.
    yates : bool, default False
        Apply Yates' correction to a 2x2 chi-square.

    Returns
    -------
    (p_value, test_name) : tuple of (float, str)
        ``(nan, "")`` when fewer than 2 non-empty rows or columns remain.
    """
    t = np.asarray(table, dtype=np.float64)
    if t.ndim != 2 or (t < 0).any() or not np.isfinite(t).all():
        raise ValueError("table must be a 2-D array of non-negative counts")
    t = t[t.sum(axis=1) > 0][:, t.sum(axis=0) > 0]
    if t.shape[0] < 2 or t.shape[1] < 2:
        return math.nan, ""
    expected = _sps.contingency.expected_freq(t)
    if t.shape == (2, 2) and (expected < 5).any():
        return float(_sps.fisher_exact(t.astype(np.int64)).pvalue), "Fisher exact"
    res = _sps.chi2_contingency(t, correction=yates and t.shape == (2, 2))
    name = "chi-square (Yates)" if yates and t.shape == (2, 2) else "chi-square"
    return float(res.pvalue), name


def _summarise_numeric(x: np.ndarray, normal: bool, digits: int) -> str:
    if x.size == 0:
        return ""
    if normal:
        sd = float(np.std(x, ddof=1)) if x.size > 1 else math.nan
        return f"{format_number(float(np.mean(x)), digits)} ± {format_number(sd, digits)}"
    q1, med, q3 = (format_number(q, digits) for q in np.quantile(x, [0.25, 0.5, 0.75]))
    return f"{med} ({q1}, {q3})"


def _combine_tests(names: list[str], comparisons: Sequence[tuple[str, str]]) -> str:
    used = [n for n in names if n]
    if not used:
        return ""
    if len(set(used)) == 1:
        return used[0]
    return "; ".join(f"{a} vs {b}: {n}" for (a, b), n in zip(comparisons, names, strict=True) if n)


def _levels(values: pd.Series) -> list[Any]:
    if isinstance(values.dtype, pd.CategoricalDtype):
        return list(values.cat.categories)
    uniq = pd.unique(values.dropna())
    try:
        return sorted(uniq)
    except TypeError:
        return sorted(uniq, key=str)


def baseline_table(
    df: pd.DataFrame,
    group_col: str,
    numeric: Sequence[str],
    categorical: Sequence[str],
    group_order: Sequence[str] = ("train", "val", "test"),
    comparisons: Sequence[tuple[str, str]] = (("train", "val"), ("train", "test"), ("val", "test")),
    alpha_normality: float = 0.05,
    equal_var: bool = False,
    test_choice: Literal["per_comparison", "per_variable"] = "per_comparison",
    digits: int | Mapping[str, int] = 1,
    yates: bool = False,
    group_labels: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Table 1: baseline characteristics of the study sets with between-set p-values.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per patient (or case).
    group_col : str
        Column holding the set of each row (e.g. ``"split"``).
    numeric : sequence of str
        Continuous variables.
    categorical : sequence of str
        Categorical variables; levels follow a pandas Categorical's order, else sorted order.
    group_order : sequence of str, default ("train", "val", "test")
        Groups shown, in this order. Every row must belong to one of them.
    comparisons : sequence of (str, str)
        Pairs of groups tested; one p-value column each.
    alpha_normality : float, default 0.05
        Shapiro-Wilk level.
    equal_var : bool, default False
        False: Welch's t-test (R's ``t.test`` default, robust to unequal variances);
        True: Student's t-test.
    test_choice : {"per_comparison", "per_variable"}, default "per_comparison"
        ``"per_comparison"``: for each pair, a t-test if Shapiro-Wilk ``p >= alpha_normality``
        in both compared groups, else Mann-Whitney U. ``"per_variable"``: a t-test for all
        pairs if the variable is normal in every group, else Mann-Whitney U for all pairs, so
        the test always matches the display form.
    digits : int or Mapping[str, int], default 1
        Decimal places of continuous summaries (per variable if a mapping; default 1).
    yates : bool, default False
        Yates' correction for 2x2 chi-square tests (see :func:`compare_categorical`).
    group_labels : Mapping[str, str], optional
        Display names for groups (e.g. ``{"train": "Training cohort"}``).

    Returns
    -------
    pandas.DataFrame
        Columns: ``variable``, ``level``, ``Total (n=N)``, one ``<group> (n=k)`` column per
        group, one float column ``p (<a> vs <b>)`` per comparison, and ``test`` (the test
        used; when comparisons of one variable used different tests, each is listed as
        ``"a vs b: test"``). ``df.attrs["columns"]`` maps ``"Total"`` and each group name to its
        column label, ``df.attrs["p_columns"]`` each comparison to its p column.

        Continuous variable: one row. Display form is decided once per variable: mean ± SD in
        every column if Shapiro-Wilk ``p >= alpha_normality`` in **every** group, otherwise
        median (Q1, Q3) (numpy linear quantiles, R type 7).
        Categorical variable: a header row carrying the p-values and test, then one row per
        level with ``n (%)`` (percent of the non-missing values of that column).
        Missing values are excluded from summaries and tests; a variable with any missing value
        gets an extra ``Missing`` row with the count per column.

    Raises
    ------
    ValueError
        Unknown columns or groups, a comparison naming a group not in ``group_order``, rows in
        groups outside ``group_order``, or a non-numeric value in a numeric column.
    """
    alpha_normality = _check_alpha(alpha_normality)
    if test_choice not in ("per_comparison", "per_variable"):
        raise ValueError(
            f"test_choice must be 'per_comparison' or 'per_variable', got {test_choice!r}"
        )
    missing_cols = [c for c in [group_col, *numeric, *categorical] if c not in df.columns]
    if missing_cols:
        raise ValueError(f"columns not in the data frame: {missing_cols}")
    overlap = set(numeric) & set(categorical)
    if overlap:
        raise ValueError(f"variables listed as both numeric and categorical: {sorted(overlap)}")
    group_order = [str(g) for g in group_order]
    if len(set(group_order)) != len(group_order):
        raise ValueError(f"group_order has duplicates: {group_order}")
    comparisons = [(str(a), str(b)) for a, b in comparisons]
    for a, b in comparisons:
        if a not in group_order or b not in group_order:
            raise ValueError(f"comparison ({a!r}, {b!r}) names a group not in {group_order}")
    groups = df[group_col].astype("string")
    unknown = sorted(set(groups.dropna().unique()) - set(group_order))
    n_no_group = int(groups.isna().sum())
    if unknown or n_no_group:
        raise ValueError(
            f"rows outside group_order {group_order}: groups {unknown}"
            + (f" and {n_no_group} row(s) with no group" if n_no_group else "")
        )
    masks = {g: (groups == g).to_numpy(dtype=bool) for g in group_order}
    labels = {g: (group_labels or {}).get(g, g) for g in group_order}
    col_total = f"Total (n={len(df)})"
    col_group = {g: f"{labels[g]} (n={int(masks[g].sum())})" for g in group_order}
    col_p = {(a, b): f"p ({labels[a]} vs {labels[b]})" for a, b in comparisons}
    value_cols = [col_total, *col_group.values()]
    if len(set(value_cols) | set(col_p.values()) | {"variable", "level", "test"}) != (
        len(value_cols) + len(col_p) + 3
    ):
        raise ValueError("group labels produce duplicate column names; use group_labels")
    column_masks = {col_total: np.ones(len(df), dtype=bool)} | {
        col_group[g]: masks[g] for g in group_order
    }

    rows: list[dict[str, Any]] = []

    def blank_row(variable: str, level: str) -> dict[str, Any]:
        row: dict[str, Any] = {"variable": variable, "level": level}
        row.update({c: "" for c in value_cols})
        row.update({c: math.nan for c in col_p.values()})
        row["test"] = ""
        return row

    def missing_row(variable: str, isna: np.ndarray) -> None:
        if isna.any():
            row = blank_row(variable, "Missing")
            for c, mk in column_masks.items():
                row[c] = str(int((isna & mk).sum()))
            rows.append(row)

    for var in numeric:
        try:
            values = pd.to_numeric(df[var], errors="raise").to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"numeric variable {var!r} has non-numeric values: {exc}") from None
        if np.isinf(values).any():
            raise ValueError(f"numeric variable {var!r} has infinite values")
        isna = np.isnan(values)
        by_group = {g: values[masks[g] & ~isna] for g in group_order}
        normal_all = all(_is_normal(by_group[g], alpha_normality) for g in group_order)
        d = digits.get(var, 1) if isinstance(digits, Mapping) else int(digits)
        row = blank_row(var, "")
        for c, mk in column_masks.items():
            row[c] = _summarise_numeric(values[mk & ~isna], normal_all, d)
        names = []
        for a, b in comparisons:
            force: Literal["auto", "t-test", "mann-whitney"] = "auto"
            if test_choice == "per_variable":
                force = "t-test" if normal_all else "mann-whitney"
            p, name = compare_continuous(
                by_group[a], by_group[b], alpha_normality, equal_var=equal_var, force=force
            )
            row[col_p[(a, b)]] = p
            names.append(name)
        row["test"] = _combine_tests(names, comparisons)
        rows.append(row)
        missing_row(var, isna)

    for var in categorical:
        series = df[var]
        isna = series.isna().to_numpy(dtype=bool)
        levels = _levels(series)
        header = blank_row(var, "")
        counts = {
            g: np.array(
                [int(((series == lv).to_numpy(dtype=bool) & masks[g]).sum()) for lv in levels]
            )
            for g in group_order
        }
        names = []
        for a, b in comparisons:
            p, name = compare_categorical(np.column_stack([counts[a], counts[b]]), yates=yates)
            header[col_p[(a, b)]] = p
            names.append(name)
        header["test"] = _combine_tests(names, comparisons)
        rows.append(header)
        for lv in levels:
            is_lv = (series == lv).to_numpy(dtype=bool)
            row = blank_row(var, str(lv))
            for c, mk in column_masks.items():
                denom = int((mk & ~isna).sum())
                k = int((mk & is_lv).sum())
                row[c] = f"{k} ({100.0 * k / denom:.1f})" if denom else "0"
            rows.append(row)
        missing_row(var, isna)

    table = pd.DataFrame(rows, columns=["variable", "level", *value_cols, *col_p.values(), "test"])
    table.attrs["columns"] = {"Total": col_total, **col_group}
    table.attrs["p_columns"] = {f"{a} vs {b}": c for (a, b), c in col_p.items()}
    return table


def format_baseline_table(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Copy of a :func:`baseline_table` result with p-value columns as display strings.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`baseline_table`.
    digits : int, default 3
        See :func:`format_p_value`.

    Returns
    -------
    pandas.DataFrame
    """
    out = table.copy()
    p_cols = list(table.attrs.get("p_columns", {}).values()) or [
        c for c in table.columns if str(c).startswith("p (")
    ]
    for c in p_cols:
        out[c] = [format_p_value(p, digits) for p in table[c]]
    return out
