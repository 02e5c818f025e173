"""Multi-centre report sections: subgroup performance and leave-centre-out validation.

* :func:`subgroups_section` -- every report: ``evaluation/subgroups.csv`` as a table
  with its forest plots (per centre and per configured subgroup).
* :func:`external_section` -- a run whose test set is one held-out centre
  (``split.method: center`` with ``test_center``): that centre's performance.
* :func:`write_external_validation` -- leave-each-centre-out (``split.method: center``
  without ``test_center``): ``RUN/evaluation/external_validation.csv``, the forest
  plot, ``RUN/evaluation/subgroups.csv`` of the pooled held-out predictions and
  ``RUN/report/report.html`` with both sections; each centre's own sub-run keeps its
  full report under ``RUN/folds/``.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd

import radfusion
from radfusion.config import StudyConfig
from radfusion.evaluation.subgroups import (
    TOO_SMALL,
    external_validation,
    plot_forest,
    subgroup_columns,
    subgroup_table,
)
from radfusion.families import FAMILIES, FAMILY_LABELS
from radfusion.layout import RunLayout
from radfusion.report.html import esc, figure, figure_row, frame_table, page, section
from radfusion.utils import atomic_path, atomic_write_text

_HEADERS = {
    "subgroup_column": "Column",
    "subgroup": "Subgroup",
    "model": "Model",
    "split": "Set",
    "n": "n",
    "events": "Events",
    "auc": "AUC (95% CI)",
    "sen": "SEN",
    "spe": "SPE",
    "note": "Note",
}


def _ci(auc: float, low: float, high: float) -> str:
    if not math.isfinite(auc):
        return ""
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{auc:.3f}"
    return f"{auc:.3f} ({low:.3f}–{high:.3f})"


def _figures_and_table(
    figures: list[str], name: str, disp: pd.DataFrame, write_table: Callable[..., str] | None
) -> str:
    """A section's figures in one row, then its table: ``write_table(name, disp)`` when
    given (the report's table writer), else inline."""
    html = figure_row(figures, 1) if figures else ""
    return html + (write_table(name, disp) if write_table else frame_table(disp))


def subgroup_display(table: pd.DataFrame) -> pd.DataFrame:
    """``subgroups.csv`` rows in display form (AUC with CI in one cell)."""
    df = table.copy()
    df["auc"] = [
        _ci(a, lo, hi) for a, lo, hi in zip(df["auc"], df["auc_low"], df["auc_high"], strict=True)
    ]
    for col in ("sen", "spe"):
        df[col] = [f"{v:.3f}" if math.isfinite(v) else "" for v in df[col].astype(float)]
    df["note"] = df["note"].fillna("")
    return df[list(_HEADERS)].rename(columns=_HEADERS)


def subgroups_section(
    table: pd.DataFrame,
    figures: list[str],
    write_table: Callable[..., str] | None = None,
    split: str = "test",
) -> str:
    """HTML of the per-centre and subgroup performance (forest plots + table)."""
    rows = table[table["split"] == split]
    if rows.empty:
        return "<p>No subgroup performance: no test predictions.</p>"
    small = rows[rows["note"].fillna("") == TOO_SMALL]
    html = (
        "<p>AUC (95% DeLong CI), sensitivity and specificity at each model's operating "
        "threshold of the selected model of every family, per centre and per configured "
        "subgroup (test set; the validation set is in evaluation/subgroups.csv). Small "
        "subgroups give wide intervals; differences between subgroups are descriptive.</p>"
    )
    html += _figures_and_table(figures, "subgroups", subgroup_display(rows), write_table)
    if len(small):
        listed = sorted(
            {f"{c} = {s}" for c, s in zip(small.subgroup_column, small.subgroup, strict=True)}
        )
        html += (
            f"<p>Too small for an AUC (fewer cases of a class than the minimum): "
            f"{esc(', '.join(listed))}.</p>"
        )
    return html


def external_display(ext: pd.DataFrame) -> pd.DataFrame:
    """External-validation rows in display form."""
    out = []
    for _, r in ext.iterrows():
        het = ""
        if r["row"] == "pooled" and math.isfinite(float(r.get("i2", math.nan))):
            het = (
                f"I² = {100 * r['i2']:.0f}%, τ² = {r['tau2']:.4f}, Q = {r['q']:.2f} "
                f"(p = {r['q_p']:.3f})"
            )
        out.append(
            {
                "Family": FAMILY_LABELS.get(r["family"], r["family"]),
                "Held-out centre": r["centre"],
                "n": int(r["n"]),
                "Events": int(r["events"]),
                "AUC (95% CI)": _ci(float(r["auc"]), float(r["auc_low"]), float(r["auc_high"])),
                "Heterogeneity": het,
                "Models": r["models"],
            }
        )
    return pd.DataFrame(out)


def external_section(ext: pd.DataFrame, figures: list[str], write_table=None) -> str:
    """HTML of the leave-centre-out external validation."""
    k = int(ext[ext["row"] == "centre"]["centre"].nunique())
    html = (
        f"<p>Each centre in turn was held out as the external test set; models (and any "
        f"harmonisation) were fitted on the other centres only. {k} held-out centre(s). "
        "Per-centre AUCs with 95% DeLong CIs; the pooled AUC is a DerSimonian-Laird "
        "random-effects estimate over the centres' AUCs (weights 1/(SE² + τ²)), and I² "
        "is the share of the variation between centres beyond chance (Cochran's Q). "
        "A centre unseen in training is not harmonised by ComBat: its features are used "
        "as measured.</p>"
    )
    html += _figures_and_table(figures, "external_validation", external_display(ext), write_table)
    return html


def _family_order(ext: pd.DataFrame) -> pd.DataFrame:
    order = {f: i for i, f in enumerate(FAMILIES)}
    return ext.assign(_o=ext["family"].map(order).fillna(99)).sort_values(["_o"], kind="stable")


def external_forest(ext: pd.DataFrame, title: str) -> object:
    """Forest plot: per-centre AUCs and the pooled diamond, per family."""
    from radfusion.evaluation.palette import FAMILY_COLORS

    rows = _family_order(ext).copy()
    rows["label"] = [
        f"{FAMILY_LABELS.get(f, f)}: {c}"
        for f, c in zip(rows["family"], rows["centre"], strict=True)
    ]
    return plot_forest(
        rows,
        "label",
        title=title,
        color_by="family",
        colors={f: c for f, c in FAMILY_COLORS.items()},
        pooled_mask=(rows["row"] == "pooled").tolist(),
        legend_labels=FAMILY_LABELS,
    )


def write_external_validation(
    run_dir: Path, cfg: StudyConfig, folds: list[tuple[str, Path]]
) -> Path:
    """Leave-each-centre-out summary of a fold run: tables, forest plots and a report.

    Parameters
    ----------
    run_dir : Path
        The top-level run folder (holding ``cv_predictions.parquet``).
    cfg : StudyConfig
        The study config.
    folds : list of (name, folder)
        The sub-runs, named ``center=<c>``.

    Returns
    -------
    Path
        ``RUN/report/report.html``.
    """
    import json

    from radfusion.evaluation.figures import save_figure

    layout = RunLayout(run_dir)
    pooled = pd.read_parquet(layout.cv_predictions)
    centre_of = {name: name.split("=", 1)[1] if "=" in name else name for name, _ in folds}
    ext = _family_order(external_validation(pooled, centre_of)).drop(columns="_o")
    layout.evaluation_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(layout.external_validation) as tmp:
        ext.to_csv(tmp, index=False)
    figs: list[str] = []
    fig = external_forest(ext, "Leave-centre-out: AUC per held-out centre")
    if fig is not None:
        path = save_figure(fig, layout.figure("external_validation"))
        figs.append(
            figure(
                path, "AUC (95% CI) per held-out centre; diamonds: pooled random-effects estimate."
            )
        )
    # subgroups of the pooled held-out predictions, each at its own fold's threshold
    parts = []
    for name, d in folds:
        thr = json.loads(RunLayout(d).thresholds.read_text())["thresholds"]
        sub = pooled[pooled["fold"] == name].copy()
        sub["threshold"] = sub["model"].map(thr)
        parts.append(sub)
    allp = pd.concat(parts, ignore_index=True)
    # one row per family: the model selected within each fold may differ between folds
    allp["model"] = allp["family"].map(lambda f: FAMILY_LABELS.get(f, f))
    cases = pd.read_csv(RunLayout(folds[0][1]).cases, dtype={"case_id": str, "center": str})
    groups, _ = subgroup_columns(cases, cfg.evaluation.subgroups, cfg.evaluation.subgroup_bins)
    table = subgroup_table(
        allp,
        groups,
        {},
        list(allp["model"].unique()),
        splits=("test",),
        min_events=cfg.evaluation.min_subgroup_events,
    )
    with atomic_path(layout.subgroups) as tmp:
        table.to_csv(tmp, index=False)
    sg_figs: list[str] = []
    rows = table.assign(label=table["subgroup_column"] + " = " + table["subgroup"])
    fig = plot_forest(
        rows,
        "label",
        title="AUC by centre and subgroup (held-out centres)",
        color_by="model",
        colors={FAMILY_LABELS.get(f, f): c for f, c in _family_colors().items()},
    )
    if fig is not None:
        path = save_figure(fig, layout.figure("subgroups_test"))
        sg_figs.append(
            figure(path, "AUC (95% CI) per centre and subgroup of the pooled held-out predictions.")
        )

    def write_table(name: str, df: pd.DataFrame) -> str:
        with atomic_path(layout.report_table(name)) as tmp:
            df.to_csv(tmp, index=False)
        return frame_table(df)

    created = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    body = (
        f"<h1>{esc(cfg.name)}: leave-centre-out study</h1>"
        f'<p class="meta">{len(folds)} held-out centres · generated {esc(created)} by '
        f"radfusion {esc(radfusion.__version__)} · each centre's full report: "
        f"folds/&lt;centre&gt;/report/report.html</p>"
    )
    body += section(
        "external",
        "External validation (leave-centre-out)",
        external_section(ext, figs, write_table),
    )
    body += section(
        "subgroups",
        "Per-centre and subgroup performance",
        subgroups_section(table, sg_figs, write_table),
    )
    path = layout.report
    atomic_write_text(path, page(f"{cfg.name}: leave-centre-out study", body))
    return path


def _family_colors() -> Mapping[str, str]:
    from radfusion.evaluation.palette import FAMILY_COLORS

    return FAMILY_COLORS


def run_external_validation(preds: pd.DataFrame, cases: pd.DataFrame | None) -> pd.DataFrame | None:
    """External validation of a single run whose test centres were not in training.

    Returns
    -------
    DataFrame or None
        :func:`external_validation` of the selected models' test predictions, one fold
        per test centre; None when the run has no centres or a test centre also
        contributed training cases (then it is not an external validation).
    """
    if cases is None or "center" not in cases.columns or cases["center"].isna().all():
        return None
    centre = cases.set_index(cases["case_id"].astype(str))["center"].astype(str)
    split = cases.set_index(cases["case_id"].astype(str))["split"]
    test_c, train_c = set(centre[split == "test"]), set(centre[split == "train"])
    if not test_c or test_c & train_c:
        return None
    test = preds[(preds["split"] == "test") & preds["selected"]].copy()
    if test.empty:
        return None
    test["fold"] = "center=" + test["case_id"].astype(str).map(centre)
    return _family_order(
        external_validation(test, {f"center={c}": c for c in sorted(test_c)})
    ).drop(columns="_o")
