"""Per-centre and subgroup performance, and leave-centre-out external validation.

``evaluation/subgroups.csv`` has one row per subgroup column (the centre, each of
``evaluation.subgroups``, banded ``evaluation.subgroup_bins`` columns), subgroup,
selected model and split, with columns :data:`SUBGROUP_COLUMNS`: the number of cases
and events, the AUC with its DeLong 95 % CI, and sensitivity / specificity at the
model's operating threshold. A subgroup with fewer than
``evaluation.min_subgroup_events`` cases of either class gets no AUC and the note
"too small for an AUC" (sensitivity / specificity are still given when defined).

Leave-centre-out (``split.method: center``): :func:`external_validation` takes the
test predictions of every held-out centre and gives each centre's AUC with its
DeLong CI, the pooled (random-effects, DerSimonian-Laird) AUC with its CI, Cochran's
Q and I-squared (the share of the between-centre variation in AUC beyond chance).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats as sps

from radfusion.stats import delong_covariance

#: Columns of ``evaluation/subgroups.csv``.
SUBGROUP_COLUMNS = (
    "subgroup_column",
    "subgroup",
    "model",
    "split",
    "n",
    "events",
    "auc",
    "auc_low",
    "auc_high",
    "sen",
    "spe",
    "note",
)
TOO_SMALL = "too small for an AUC"
_Z = float(sps.norm.ppf(0.975))


def auc_with_se(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """AUC and its DeLong standard error (NaN SE when a class has < 2 cases)."""
    y = np.asarray(y, dtype=int)
    if y.min() == y.max():
        return math.nan, math.nan
    if min(int(y.sum()), int((1 - y).sum())) < 2:
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score(y, p)), math.nan
    auc, cov = delong_covariance(y, np.asarray(p, dtype=float)[None, :])
    return float(auc[0]), float(math.sqrt(max(cov[0, 0], 0.0)))


def band_labels(values: pd.Series, edges: Sequence[float]) -> pd.Series:
    """Cut a numeric column at ``edges`` into "<a", "a to <b", ..., ">=z" bands (NaN stays NaN).

    Bands are half-open, [a, b): a value equal to an edge belongs to the band above it, and the
    labels say so ("50 to <65", ">=65"), so no two bands share a boundary value.
    """
    x = pd.to_numeric(values, errors="coerce")
    edges = sorted(float(e) for e in edges)

    def fmt(v: float) -> str:
        return f"{v:g}"

    names = [f"<{fmt(edges[0])}"]
    names += [f"{fmt(a)} to <{fmt(b)}" for a, b in itertools.pairwise(edges)]
    names.append(f">={fmt(edges[-1])}")
    idx = np.searchsorted(edges, x.to_numpy(dtype=float), side="right")
    out = pd.Series([names[i] if np.isfinite(v) else np.nan for i, v in zip(idx, x, strict=True)])
    out.index = values.index
    return out


def subgroup_columns(
    cases: pd.DataFrame, requested: Sequence[str], bins: Mapping[str, Sequence[float]]
) -> tuple[pd.DataFrame, list[str]]:
    """The subgroup of every case per subgroup column, and notes on columns skipped.

    Returns
    -------
    groups : DataFrame
        Indexed by case id; one column per subgroup column (the centre first).
    notes : list of str
    """
    cases = cases.set_index(cases["case_id"].astype(str))
    out = pd.DataFrame(index=cases.index)
    notes: list[str] = []
    wanted = list(dict.fromkeys(["center", *requested, *bins]))
    for col in wanted:
        if col not in cases.columns or cases[col].isna().all():
            if col != "center":
                notes.append(f"subgroup column {col!r} is not in the cases table: skipped")
            continue
        if col in bins:
            out[col] = band_labels(cases[col], bins[col])
        else:
            out[col] = cases[col].astype(object).where(cases[col].notna(), np.nan)
    return out, notes


def _sen_spe(y: np.ndarray, p: np.ndarray, threshold: Any) -> tuple[float, float]:
    pred = p >= threshold
    pos, neg = y == 1, y == 0
    sen = float(pred[pos].mean()) if pos.any() else math.nan
    spe = float((~pred[neg]).mean()) if neg.any() else math.nan
    return sen, spe


def subgroup_table(
    preds: pd.DataFrame,
    groups: pd.DataFrame,
    thresholds: Mapping[str, float],
    models: Sequence[str],
    splits: Sequence[str] = ("val", "test"),
    min_events: int = 3,
) -> pd.DataFrame:
    """Performance of ``models`` in every subgroup (columns :data:`SUBGROUP_COLUMNS`).

    Parameters
    ----------
    preds : DataFrame
        Predictions (case_id, split, label, model, probability).
    groups : DataFrame
        :func:`subgroup_columns` output.
    thresholds : mapping
        Model -> operating threshold (for sensitivity and specificity); a ``threshold``
        column of ``preds`` (e.g. pooled folds, each with its own) takes precedence.
    models : sequence of str
        Models to evaluate (e.g. the selected model of each family).
    splits : sequence of str
        Splits to evaluate.
    min_events : int
        Fewest cases of each class for an AUC.
    """
    rows: list[dict[str, Any]] = []
    preds = preds[preds["model"].isin(models) & preds["split"].isin(splits)]
    for col in groups.columns:
        g = groups[col].reindex(preds["case_id"].astype(str)).to_numpy()
        for (model, split), part in preds.assign(_g=g).groupby(["model", "split"], sort=False):
            for level, sub in part.dropna(subset=["_g"]).groupby("_g", sort=True):
                y = sub["label"].to_numpy(dtype=int)
                p = sub["probability"].to_numpy(dtype=float)
                events = int(y.sum())
                small = min(events, len(y) - events) < min_events
                auc, se = (math.nan, math.nan) if small else auc_with_se(y, p)
                thr = (
                    sub["threshold"].to_numpy(dtype=float)
                    if "threshold" in sub.columns
                    else thresholds.get(model, 0.5)
                )
                sen, spe = _sen_spe(y, p, thr)
                rows.append(
                    {
                        "subgroup_column": col,
                        "subgroup": str(level),
                        "model": model,
                        "split": split,
                        "n": len(y),
                        "events": events,
                        "auc": auc,
                        "auc_low": max(auc - _Z * se, 0.0) if math.isfinite(se) else math.nan,
                        "auc_high": min(auc + _Z * se, 1.0) if math.isfinite(se) else math.nan,
                        "sen": sen,
                        "spe": spe,
                        "note": TOO_SMALL if small else "",
                    }
                )
    table = pd.DataFrame(rows, columns=list(SUBGROUP_COLUMNS))
    # grouped for reading: column (centre first), set, model, subgroup
    col_order = {c: i for i, c in enumerate(groups.columns)}
    split_order = {s: i for i, s in enumerate(splits)}
    model_order = {m: i for i, m in enumerate(models)}
    return (
        table.assign(
            _c=table["subgroup_column"].map(col_order),
            _s=table["split"].map(split_order),
            _m=table["model"].map(model_order),
        )
        .sort_values(["_c", "_s", "_m", "subgroup"], kind="stable")
        .drop(columns=["_c", "_s", "_m"])
        .reset_index(drop=True)
    )


def random_effects(estimates: Sequence[float], ses: Sequence[float]) -> dict[str, float]:
    """DerSimonian-Laird random-effects pooling with Cochran's Q and I-squared.

    Parameters
    ----------
    estimates, ses : sequences of float
        Per-study estimates (here per-centre AUCs) and their standard errors; studies
        with a non-finite or zero SE are left out.

    Returns
    -------
    dict
        ``pooled``, ``low``, ``high`` (95 % CI), ``se``, ``tau2``, ``q``, ``df``, ``q_p``,
        ``i2`` (in [0, 1]; NaN with fewer than two studies), ``k`` (studies used).
    """
    est, se = np.asarray(estimates, dtype=float), np.asarray(ses, dtype=float)
    ok = np.isfinite(est) & np.isfinite(se) & (se > 0)
    est, se = est[ok], se[ok]
    k = int(ok.sum())
    nan = math.nan
    if k == 0:
        return dict(
            pooled=nan, low=nan, high=nan, se=nan, tau2=nan, q=nan, df=0, q_p=nan, i2=nan, k=0
        )
    w = 1.0 / se**2
    fixed = float((w * est).sum() / w.sum())
    q = float((w * (est - fixed) ** 2).sum())
    df = k - 1
    c = float(w.sum() - (w**2).sum() / w.sum())
    tau2 = max(0.0, (q - df) / c) if df > 0 and c > 0 else 0.0
    w_re = 1.0 / (se**2 + tau2)
    pooled = float((w_re * est).sum() / w_re.sum())
    pse = float(math.sqrt(1.0 / w_re.sum()))
    i2 = max(0.0, (q - df) / q) if df > 0 and q > 0 else (0.0 if df > 0 else nan)
    return {
        "pooled": pooled,
        "low": max(pooled - _Z * pse, 0.0),
        "high": min(pooled + _Z * pse, 1.0),
        "se": pse,
        "tau2": tau2,
        "q": q,
        "df": df,
        "q_p": float(sps.chi2.sf(q, df)) if df > 0 else nan,
        "i2": i2,
        "k": k,
    }


def external_validation(pooled: pd.DataFrame, centre_of: Mapping[str, str]) -> pd.DataFrame:
    """Per held-out centre and pooled performance of each family's selected models.

    Parameters
    ----------
    pooled : DataFrame
        Test predictions of every fold (``cv_predictions.parquet``: fold, case_id, label,
        family, model, probability).
    centre_of : mapping
        Fold name -> the centre it held out.

    Returns
    -------
    DataFrame
        Rows per family: one per centre (``row`` = "centre": n, events, AUC with DeLong CI
        and SE) and one "pooled (random effects)" row with the pooled AUC, its CI, tau2,
        Q, its p-value and I-squared.
    """
    rows: list[dict[str, Any]] = []
    for family, df in pooled.groupby("family", sort=False):
        aucs, ses = [], []
        for fold, f in df.groupby("fold", sort=False):
            y = f["label"].to_numpy(dtype=int)
            auc, se = auc_with_se(y, f["probability"].to_numpy(dtype=float))
            aucs.append(auc)
            ses.append(se)
            rows.append(
                {
                    "family": family,
                    "row": "centre",
                    "centre": centre_of.get(str(fold), str(fold)),
                    "models": ", ".join(sorted(f["model"].unique())),
                    "n": len(y),
                    "events": int(y.sum()),
                    "auc": auc,
                    "auc_se": se,
                    "auc_low": max(auc - _Z * se, 0.0) if math.isfinite(se) else math.nan,
                    "auc_high": min(auc + _Z * se, 1.0) if math.isfinite(se) else math.nan,
                }
            )
        re = random_effects(aucs, ses)
        rows.append(
            {
                "family": family,
                "row": "pooled",
                "centre": "pooled (random effects)",
                "models": ", ".join(sorted(df["model"].unique())),
                "n": len(df),
                "events": int(df["label"].sum()),
                "auc": re["pooled"],
                "auc_se": re["se"],
                "auc_low": re["low"],
                "auc_high": re["high"],
                "tau2": re["tau2"],
                "q": re["q"],
                "q_p": re["q_p"],
                "i2": re["i2"],
                "k": re["k"],
            }
        )
    return pd.DataFrame(rows)


def plot_forest(
    rows: pd.DataFrame,
    label_column: str,
    title: str = "",
    color_by: str | None = None,
    colors: Mapping[str, str] | None = None,
    pooled_mask: Sequence[bool] | None = None,
    legend_labels: Mapping[str, str] | None = None,
) -> Figure | None:
    """Forest plot of AUCs with 95 % CIs, one line per row (pooled rows as diamonds).

    Parameters
    ----------
    rows : DataFrame
        With ``auc``, ``auc_low``, ``auc_high`` and ``label_column``; rows without an AUC
        are listed with "too small" instead of a marker.
    label_column : str
        The row labels.
    color_by : str, optional
        Column whose values pick the colour (e.g. model), looked up in ``colors``.
    pooled_mask : sequence of bool, optional
        Rows drawn as diamonds (pooled estimates).
    legend_labels : mapping, optional
        Display names of the ``color_by`` values in the legend.
    """
    from radfusion.evaluation.figures import _style

    if rows.empty:
        return None
    n = len(rows)
    pooled_mask = list(pooled_mask) if pooled_mask is not None else [False] * n
    with _style():
        fig = Figure(figsize=(7.0, 0.9 + 0.28 * n))
        ax = fig.add_subplot()
        ys = np.arange(n)[::-1]
        for y, (_, r), pooled in zip(ys, rows.iterrows(), pooled_mask, strict=True):
            col = (colors or {}).get(str(r[color_by]), "#333333") if color_by else "#333333"
            if not math.isfinite(float(r["auc"])):
                ax.text(0.5, y, "too small", va="center", ha="center", fontsize=8, color="#777")
                continue
            lo, hi = float(r["auc_low"]), float(r["auc_high"])
            if math.isfinite(lo) and math.isfinite(hi):
                ax.plot([lo, hi], [y, y], color=col, lw=1.4)
            ax.plot(
                [float(r["auc"])],
                [y],
                marker="D" if pooled else "s",
                ms=8 if pooled else 5,
                color=col,
                clip_on=False,  # an AUC of 1.000 sits on the axis edge: draw it whole
            )
        ax.axvline(0.5, color="#999999", lw=0.8, ls="--")
        ax.set_yticks(ys)
        ax.set_yticklabels([str(v) for v in rows[label_column]], fontsize=8)
        ax.set_xlim(0.0, 1.03)
        ax.set_xticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax.set_xlabel("AUC (95% CI)")
        if title:
            ax.set_title(title)
        if color_by and colors:
            from matplotlib.lines import Line2D

            used = list(dict.fromkeys(str(v) for v in rows[color_by]))
            handles = [
                Line2D(
                    [],
                    [],
                    color=colors.get(m, "#333333"),
                    marker="s",
                    lw=1.4,
                    label=(legend_labels or {}).get(m, m),
                )
                for m in used
            ]
            ax.legend(
                handles=handles,
                fontsize=7,
                loc="upper left",
                bbox_to_anchor=(1.01, 1.0),
                frameon=False,
            )
        fig.tight_layout()
    return fig
