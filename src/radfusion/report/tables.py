"""The report's tables in display form, each also written to ``report/tables/<name>.csv``.

Display forms are what a reader sees (abbreviated tests, CIs as "0.905 (0.864–0.941)", plain
headers); the CSVs keep the machine values.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from radfusion.evaluation.metrics import METRIC_NAMES
from radfusion.evaluation.palette import SPLIT_LABELS
from radfusion.layout import RunLayout
from radfusion.radiomics.names import readable_feature_name
from radfusion.report.html import frame_table
from radfusion.stats import Estimate, format_p_value
from radfusion.utils import atomic_path

__all__ = [
    "ReportTables",
    "ci_text",
    "coef_display",
    "metrics_display",
    "pmatrix_display",
    "table1_display",
    "table2_display",
]


class ReportTables:
    """Renders tables to HTML and writes each one to ``report/tables/<name>.csv``."""

    def __init__(self, layout: RunLayout) -> None:
        self.layout = layout
        self.written: list[Path] = []

    def __call__(
        self, name: str, df: pd.DataFrame, csv: pd.DataFrame | None = None, **kwargs: Any
    ) -> str:
        path = self.layout.report_table(name)
        with atomic_path(path) as tmp:
            (df if csv is None else csv).to_csv(tmp, index=False)
        self.written.append(path)
        return frame_table(df, **kwargs)


def ci_text(value: float, low: float, high: float) -> str:
    """``0.905 (0.864–0.941)`` with an en dash, as in the paper's tables ("to" when signed)."""
    text = Estimate(float(value), float(low), float(high)).format(3)
    if "(" not in text:
        return text
    if min(float(value), float(low), float(high)) < 0:
        # A dash between signed bounds reads as a minus: "-0.604 (-1.318 to 0.110)".
        one = [Estimate(float(x), math.nan, math.nan).format(3) for x in (value, low, high)]
        return f"{one[0]} ({one[1]} to {one[2]})"
    return text.replace("-", "–")


# ---------------------------------------------------------------------------------------------
# Tables in display form
# ---------------------------------------------------------------------------------------------
_TEST_ABBREV = {
    "Mann-Whitney U": "MWU",
    "Welch t-test": "t",
    "Student t-test": "t (Student)",
    "chi-square": "χ²",
    "chi-square (Yates)": "χ² (Yates)",
    "Fisher exact": "Fisher",
}
_COHORT_SHORT = {"Training cohort": "train", "Validation cohort": "val", "Test cohort": "test"}


def _short_test(test: str) -> str:
    """Compact test label: one name, or one per comparison in p-column order."""
    if not test:
        return ""
    if ":" not in test:
        return _TEST_ABBREV.get(test, test)
    names = [part.split(":", 1)[1].strip() for part in test.split(";")]
    return ", ".join(_TEST_ABBREV.get(n, n) for n in names)


def _p_header(col: str) -> str:
    for long, short in _COHORT_SHORT.items():
        col = col.replace(long, short)
    return col.replace(" vs ", "–").replace("p (", "P (")


def table1_display(t1: pd.DataFrame) -> tuple[pd.DataFrame, list[int], list[tuple[int, str]]]:
    p_cols = [c for c in t1.columns if str(c).startswith("p (")]
    rows, indent, bold = [], [], []
    value_cols = [c for c in t1.columns if c not in ("variable", "level", "test", *p_cols)]
    for i, (_, r) in enumerate(t1.iterrows()):
        level = "" if pd.isna(r["level"]) else str(r["level"])
        row: dict[str, Any] = {"Characteristic": level or str(r["variable"])}
        if level:
            indent.append(i)
        for c in value_cols:
            row[c] = "" if pd.isna(r[c]) else str(r[c])
        for c in p_cols:
            p = float(r[c]) if pd.notna(r[c]) else math.nan
            row[_p_header(c)] = format_p_value(p)
            if math.isfinite(p) and p < 0.05:
                bold.append((i, _p_header(c)))
        row["Test"] = _short_test("" if pd.isna(r["test"]) else str(r["test"]))
        rows.append(row)
    return pd.DataFrame(rows), indent, bold


#: Table 2 columns shown with their Wilson 95% CI (computed in evaluation/metrics.csv).
_T2_CI = ("acc", "sen", "spe", "ppv", "npv")


def table2_display(
    t2: pd.DataFrame, metrics: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    df = t2.copy()
    if metrics is not None and not metrics.empty:
        label_to_split = {v: k for k, v in SPLIT_LABELS.items()}
        m = metrics.set_index(["model", "split"])
        for name in _T2_CI:  # read back from CSV these are floats; they become "x (lo–hi)"
            if name.upper() in df.columns:
                df[name.upper()] = df[name.upper()].astype(object)
        for i, r in df.iterrows():
            key = (r["Model"], label_to_split.get(str(r["Set"]), str(r["Set"])))
            if key not in m.index:
                continue
            mr = m.loc[key]
            for name in _T2_CI:
                col = name.upper()
                if col in df.columns and math.isfinite(float(mr[name])):
                    df.at[i, col] = ci_text(mr[name], mr[f"{name}_low"], mr[f"{name}_high"])
    df.insert(0, "Group", df["Model"] + " (" + df["Family"] + ")")
    df = df.drop(columns=["Model", "Family"])
    bold = []
    cols = ["AUC (95% CI)", *[m.upper() for m in METRIC_NAMES]]
    for split in df["Set"].unique():
        idx = df.index[df["Set"] == split]
        for c in cols:
            vals = pd.to_numeric(df.loc[idx, c].astype(str).str.split(" ").str[0], errors="coerce")
            if vals.notna().sum() > 1:
                best = vals.max()
                bold.extend((int(i), c) for i in idx[vals == best])
    return df, bold


def metrics_display(metrics: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, r in metrics.iterrows():
        row = {
            "Model": r["model"],
            "Selected": "yes" if bool(r["selected"]) else "",
            "Set": SPLIT_LABELS.get(r["split"], r["split"]),
            "n": int(r["n"]),
            "Events": int(r["n_pos"]),
        }
        for m in ("auc", *METRIC_NAMES):
            row[f"{m.upper()} (95% CI)"] = ci_text(r[m], r[f"{m}_low"], r[f"{m}_high"])
        row["Brier"] = f"{float(r['brier']):.3f}"
        row["Threshold"] = f"{float(r['threshold']):.3f}"
        rows.append(row)
    return pd.DataFrame(rows)


#: Display headers of the coefficient tables (the CSVs keep the machine names).
_COEF_HEADERS = {
    "term": "Term",
    "feature": "Term",
    "coef": "Coefficient",
    "odds_ratio": "Odds ratio",
    "ci_low": "OR 95% CI low",
    "ci_high": "OR 95% CI high",
    "p_value": "P",
}


def coef_display(coefs: pd.DataFrame) -> pd.DataFrame:
    disp = coefs.copy()
    if "term" in disp:  # a radiomics term in words; clinical terms are left as they are
        disp["term"] = [readable_feature_name(str(t)) for t in disp["term"]]
    if "p_value" in disp:
        disp["p_value"] = [format_p_value(float(p)) for p in disp["p_value"]]
    return disp.rename(columns=_COEF_HEADERS)


def pmatrix_display(mat: pd.DataFrame) -> pd.DataFrame:
    out = mat.map(lambda p: "—" if pd.isna(p) else format_p_value(float(p)))
    for i, name in enumerate(mat.index):
        out.iloc[i, i] = "—"
        del name
    out.insert(0, "Model", list(mat.index))
    return out.reset_index(drop=True)
