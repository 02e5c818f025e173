"""The tables, figures and the self-contained "External validation" report of
:func:`radfusion.external.evaluate_external`.

Figures are the study's own (:mod:`radfusion.evaluation.figures`, the forest plot of
:mod:`radfusion.report.multicentre`), the page the study report's
(:func:`radfusion.report.html.page`: same look, print stylesheet, embedded PNGs, every
table also as CSV).
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

import radfusion
from radfusion.bundle import Bundle
from radfusion.evaluation import main_models, model_colors
from radfusion.evaluation.figures import (
    plot_calibration,
    plot_decision_curve,
    plot_delong_heatmap,
    plot_roc,
    save_figure,
)
from radfusion.external import tables
from radfusion.families import FAMILY_LABELS
from radfusion.layout import RunLayout
from radfusion.report.html import esc, figure, figure_row, frame_table, page, section
from radfusion.report.multicentre import external_display, external_forest, subgroup_display
from radfusion.stats import Estimate, format_p_value
from radfusion.utils import atomic_path, atomic_write_text

if TYPE_CHECKING:
    from radfusion.external.run import ExternalValidation

__all__ = ["MIN_CALIBRATION_EVENTS", "TRIPOD_ITEMS", "write_external_report"]

#: TRIPOD+AI items (Collins GS et al., BMJ 2024;385:e078378) this report answers.
TRIPOD_ITEMS = (
    (
        "12d",
        "Heterogeneity across clusters",
        "With a centre column: per-centre AUCs pooled by random effects (tau-squared, I-squared).",
    ),
    (
        "12e",
        "Performance measures and plots",
        "Discrimination (AUC, DeLong CI), classification at the frozen threshold, calibration "
        "(Brier, calibration-in-the-large, slope, plot) and clinical utility (decision curve).",
    ),
    (
        "12f",
        "Model updating",
        "Logistic recalibration (intercept; intercept and slope) fitted on the external "
        "cases, reported apart from the frozen result; reference-batch ComBat for new centres.",
    ),
    (
        "12g",
        "How predictions were calculated",
        "The saved bundle, unchanged, through radfusion's predict code (bundle SHA-256 in "
        "external_validation.json).",
    ),
    (
        "15",
        "Model output and thresholds",
        "Probabilities, and classes at each model's threshold as frozen at development "
        "(its rule is stated in Methods); never re-chosen here.",
    ),
    ("21", "Participants and outcome events", "External cases and events, overall and per centre."),
    (
        "23a",
        "Model performance with CIs",
        "Every model of the bundle on the external cases, beside its development test result.",
    ),
    ("23b", "Heterogeneity in performance across clusters", "Per-centre table and forest plot."),
    (
        "24",
        "Model updating results",
        "The fitted maps and their effect on calibration; the updated bundle's provenance.",
    ),
)
_TABLE_DIR = ("report", "tables")
#: Cases of each class below which calibration estimates are flagged as imprecise
#: (Van Calster et al. 2016: at least 100 events and 100 non-events to assess calibration).
MIN_CALIBRATION_EVENTS = 100


class _Writer:
    """Writes the output folder's CSVs, figures and report tables (under ``root``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.figures: dict[str, str] = {}

    def csv(self, rel: str, df: pd.DataFrame, index: bool = False) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=index)

    def table(self, name: str, df: pd.DataFrame, **kwargs: Any) -> str:
        self.csv("/".join((*_TABLE_DIR, f"{name}.csv")), df)
        return frame_table(df, **kwargs)

    def figure(self, key: str, fig: Any, caption: str) -> None:
        if fig is None:
            return
        path = self.root / "evaluation" / "figures" / f"{key}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_figure(fig, path)
        self.figures[key] = figure(path, caption, max_width=900)

    def row(self, keys: list[str], columns: int | None = None) -> str:
        items = [self.figures[k] for k in keys if k in self.figures]
        return figure_row(items, columns or len(items))


def _ci(value: float, low: float, high: float) -> str:
    """``0.905 (0.864–0.941)``; ``-0.46 (-1.58 to 0.66)`` when a bound is negative."""
    text = Estimate(float(value), float(low), float(high)).format(3)
    if "(" not in text:
        return text
    sep = " to " if float(low) < 0 else "–"
    return f"{float(value):.3f} ({float(low):.3f}{sep}{float(high):.3f})"


def _num(value: Any, digits: int = 3) -> str:
    v = float(value)
    return f"{v:.{digits}f}" if math.isfinite(v) else "NA"


def _display(table: pd.DataFrame, row: Callable[[Any], dict[str, Any]]) -> pd.DataFrame:
    """A table in display form: ``row`` of each of its rows (a named tuple), in order."""
    return pd.DataFrame([row(r) for r in table.itertuples(index=False)])


def _model_columns(r: Any, *, family: bool = True) -> dict[str, str]:
    """A model row's first columns: its name (* the study's selected model of its family)
    and, with ``family``, its family."""
    out = {"Model": r.model + (" *" if r.selected else "")}
    if family:
        out["Family"] = FAMILY_LABELS.get(r.family, r.family)
    return out


def performance_display(metrics: pd.DataFrame) -> pd.DataFrame:
    """Every model's external performance in display form (selected models marked *)."""
    return _display(
        metrics,
        lambda r: {
            **_model_columns(r),
            "n": int(r.n),
            "Events": int(r.n_pos),
            "AUC (95% CI)": _ci(r.auc, r.auc_low, r.auc_high),
            "Threshold": _num(r.threshold),
            "ACC": _ci(r.acc, r.acc_low, r.acc_high),
            "SEN": _ci(r.sen, r.sen_low, r.sen_high),
            "SPE": _ci(r.spe, r.spe_low, r.spe_high),
            "PPV": _ci(r.ppv, r.ppv_low, r.ppv_high),
            "NPV": _ci(r.npv, r.npv_low, r.npv_high),
            "F1": _ci(r.f1, r.f1_low, r.f1_high),
            "Brier": _num(r.brier),
            "CITL (95% CI)": _ci(r.citl, r.citl_low, r.citl_high),
            "Slope (95% CI)": _ci(r.slope, r.slope_low, r.slope_high),
        },
    )


def comparison_display(comp: pd.DataFrame) -> pd.DataFrame:
    """Development test AUC beside the external AUC, and their difference."""
    return _display(
        comp,
        lambda r: {
            **_model_columns(r),
            "Development test AUC (95% CI)": _ci(
                r.internal_auc, r.internal_auc_low, r.internal_auc_high
            ),
            "n (development test)": "" if pd.isna(r.internal_n) else int(r.internal_n),
            "External AUC (95% CI)": _ci(r.external_auc, r.external_auc_low, r.external_auc_high),
            "n (external)": int(r.external_n),
            "Difference (95% CI)": _ci(r.difference, r.difference_low, r.difference_high),
            "p": format_p_value(r.p_value) if math.isfinite(r.p_value) else "",
        },
    )


def recalibration_display(recal: pd.DataFrame) -> pd.DataFrame:
    """The updating maps and their apparent effect."""
    return _display(
        recal,
        lambda r: {
            "Model": r.model,
            "Method": "intercept" if r.method == "intercept" else "intercept + slope",
            "Map": (
                f"expit({_num(r.intercept)} + {_num(r.slope)} × logit p)" if not r.note else ""
            ),
            "Brier frozen": _num(r.brier_frozen),
            "Brier recalibrated": _num(r.brier_recalibrated),
            "Note": r.note,
        },
    )


def harmonised_display(comp: pd.DataFrame) -> pd.DataFrame:
    """Frozen and harmonised results side by side."""
    return _display(
        comp,
        lambda r: {
            **_model_columns(r, family=False),
            "AUC frozen": _ci(r.auc_frozen, r.auc_low_frozen, r.auc_high_frozen),
            "AUC harmonised": _ci(r.auc_harmonised, r.auc_low_harmonised, r.auc_high_harmonised),
            "DeLong p": format_p_value(r.delong_p) if math.isfinite(r.delong_p) else "",
            "SEN frozen / harmonised": f"{_num(r.sen_frozen)} / {_num(r.sen_harmonised)}",
            "SPE frozen / harmonised": f"{_num(r.spe_frozen)} / {_num(r.spe_harmonised)}",
            "Brier frozen / harmonised": f"{_num(r.brier_frozen)} / {_num(r.brier_harmonised)}",
            "Slope frozen / harmonised": (
                f"{_num(r.slope_frozen, 2)} / {_num(r.slope_harmonised, 2)}"
            ),
        },
    )


def _harmonisation_section(result: ExternalValidation, w: _Writer) -> str:
    if result.harmonised is None:
        return (
            "<p>The bundle harmonises radiomics features with ComBat, but no external centre "
            "could be estimated (no centre column, every centre seen in training, or fewer "
            "cases than the minimum per centre): frozen results only.</p>"
        )
    centres = ", ".join(f"{c} (n={n})" for c, n in result.harmonised_centres.items())
    return (
        "<p>The bundle's ComBat steps know the training centres only, so the frozen models "
        "used the external cases' features unadjusted. Here each ComBat step estimated the "
        f"location and scale of the external centre(s) {esc(centres)} from their own "
        "features (the labels are not used) and mapped them onto the training reference "
        "(reference-batch ComBat with the training grand mean, covariate effects and pooled "
        "variance, empirical Bayes as in training). The thresholds stay frozen. The frozen "
        "result above remains the external validation; this one shows what harmonising the "
        "new centre changes (paired DeLong test on the same cases).</p>"
        + w.table(
            "frozen_vs_harmonised", harmonised_display(result.harmonised), css_class="compact"
        )
    )


def _caveats(b: Bundle, cases: pd.DataFrame, result: ExternalValidation) -> list[str]:
    out = []
    events = int(cases["label"].sum())
    non_events = len(cases) - events
    if min(events, non_events) < MIN_CALIBRATION_EVENTS:
        out.append(
            f"The external cohort has {events} positive and {non_events} negative case(s): "
            f"fewer than the {MIN_CALIBRATION_EVENTS} of each class recommended for a precise "
            "calibration "
            "assessment; read the intervals, not the point estimates."
        )
    card = b.meta.get("card") or {}
    dev = set(((card.get("cohort") or {}).get("centres") or {}).keys())
    if "center" in cases.columns:
        shared = sorted(set(cases["center"].dropna().astype(str)) & dev)
        if shared:
            out.append(
                f"Centre(s) {', '.join(shared)} also contributed development cases: for them "
                "this is a temporal or geographic re-validation, not a fully external one."
            )
    if b.config.harmonization.method != "none":
        out.append(
            "The bundle harmonises radiomics features with ComBat fitted on its training "
            "centres; in the frozen result, cases of a centre it never saw pass through "
            "unadjusted (see 'Harmonising the new centre(s)' for the harmonised result)."
        )
    n_warn = sum(1 for n in result.notes if n.startswith("["))
    if n_warn:
        out.append(f"{n_warn} case warning(s) from the input checks (listed below).")
    out.append(
        "Recalibrated results are apparent: the maps were fitted on the same external cases "
        "they are shown on. The frozen result is the validation; the recalibrated one shows "
        "what updating would change, to be confirmed on new cases."
    )
    return out


def _methods(b: Bundle, cases: pd.DataFrame, ev: Any) -> str:
    n, events = len(cases), int(cases["label"].sum())
    centres = f" from {cases['center'].nunique()} centre(s)" if "center" in cases.columns else ""
    return (
        f"<p>The saved models of the study {esc(b.meta.get('study'))} (bundle "
        f"{esc(b.path.resolve())}) were applied, unchanged, to {n} external images{centres} "
        f"({events} {esc(ev.class_names[1])}, {n - events} {esc(ev.class_names[0])}): the "
        "same input checks, preprocessing, feature extraction and models as at development. "
        "Each model's operating threshold is the one frozen in the bundle "
        f"({esc(b.meta.get('threshold_rule') or 'as recorded')}); it was not re-chosen on "
        "the external cases. Discrimination: AUC with 95% DeLong CI, and pairwise DeLong "
        "tests between the selected models. Classification at the frozen threshold: "
        "accuracy, sensitivity, specificity, PPV, NPV with Wilson 95% CIs, F1 with a "
        "bootstrap CI. Calibration: Brier score, calibration plot, calibration-in-the-large "
        "(logistic model of the outcome with the logit of the predicted probability as "
        "offset) and calibration slope (the logit as the only predictor), with 95% Wald CIs. "
        "Clinical utility: decision curves. The development test AUC (from the bundle's "
        "model card) is compared with the external AUC as two independent estimates. With "
        "a centre column, per-centre AUCs are pooled by DerSimonian-Laird random effects. "
        "Updating, separate from the frozen result: logistic recalibration of the intercept "
        "alone, and of the intercept and slope, fitted by maximum likelihood on the "
        "external cases.</p>"
    )


def write_external_report(
    b: Bundle,
    manifest: Path,
    cases: pd.DataFrame,
    result: ExternalValidation,
    root: Path,
) -> Path:
    """Write the CSVs, figures and ``report/report.html`` of an external validation under
    ``root`` (the folder that becomes ``OUT``).

    Returns
    -------
    Path
        The report under ``root``.
    """
    ev = b.config.evaluation
    w = _Writer(root)
    preds, metrics = result.predictions, result.metrics
    mains = main_models(preds)
    colors = model_colors(preds)

    out_preds = preds.drop(columns=["split"])
    if "center" in cases.columns:
        out_preds["center"] = out_preds["case_id"].map(
            dict(zip(cases["case_id"], cases["center"], strict=True))
        )
    w.csv("predictions.csv", out_preds)
    w.csv("evaluation/metrics.csv", metrics)
    w.csv("evaluation/internal_external.csv", result.comparison)
    delong, cal, dca = tables.delong_and_curves(preds, ev)
    w.csv("evaluation/delong.csv", delong, index=True)
    w.csv("evaluation/calibration.csv", cal)
    w.csv("evaluation/decision_curve.csv", dca)
    w.csv("evaluation/recalibration.csv", result.recalibration)
    if result.harmonised is not None:
        w.csv("evaluation/harmonised_metrics.csv", result.harmonised_metrics)
        w.csv("evaluation/frozen_vs_harmonised.csv", result.harmonised)
    if result.centres is not None:
        w.csv("evaluation/centres.csv", result.centres)
        w.csv("evaluation/centres_pooled.csv", result.pooled)

    main_metrics = metrics[metrics["model"].isin(mains)]
    w.figure(
        "roc_external",
        plot_roc(preds, mains, colors, main_metrics, title="ROC curves: external cohort"),
        "ROC curves of the selected model of each family on the external cohort; AUC with "
        "95% DeLong CI in the legend.",
    )
    w.figure(
        "delong_external",
        plot_delong_heatmap(delong, title="DeLong test: external cohort")
        if len(mains) > 1
        else None,
        "Two-sided DeLong p-values between the selected models on the external cases.",
    )
    w.figure(
        "calibration_external",
        plot_calibration(
            preds,
            mains,
            colors,
            ev.calibration_bins,
            ev.calibration_strategy,
            title="Calibration: external cohort (frozen)",
        ),
        f"Calibration curves ({ev.calibration_bins} {ev.calibration_strategy} bins) of the "
        "selected models as frozen; Brier score in the legend.",
    )
    w.figure(
        "decision_curve_external",
        plot_decision_curve(preds, mains, colors, title="Decision curves: external cohort"),
        "Net benefit against threshold probability on the external cases, with treat-all "
        "and treat-none.",
    )
    recal_keys = []
    for model in mains:
        rp = tables.recalibrated_predictions(preds, result.recalibration, [model])
        names = list(dict.fromkeys(rp["model"]))
        shades = dict(zip(names, [colors[model], "#8a8a8a", "#222222"], strict=False))
        key = f"recalibration_{len(recal_keys)}"
        w.figure(
            key,
            plot_calibration(
                rp,
                names,
                shades,
                ev.calibration_bins,
                ev.calibration_strategy,
                title=f"Recalibration: {model}",
            ),
            f"{model}: calibration as frozen and after each recalibration (apparent, on the "
            "cases the maps were fitted on).",
        )
        recal_keys.append(key)
    if result.pooled is not None and len(result.pooled):
        w.figure(
            "forest_centres",
            external_forest(result.pooled, "AUC per external centre"),
            "AUC (95% CI) per external centre of each family's selected model; diamonds: "
            "random-effects pooled estimate.",
        )

    created = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    title = f"External validation: {b.meta.get('study')}"
    n, events = len(cases), int(cases["label"].sum())
    head = (
        f"<h1>{esc(title)}</h1>"
        f'<p class="meta">bundle {esc(b.path.resolve())} · external cohort {esc(manifest.name)} '
        f"({n} images, {events} positive) · generated {esc(created)} by radfusion "
        f"{esc(radfusion.__version__)}</p>"
    )
    key = "".join(
        f"<li>{esc(r.model)}: external AUC "
        f"{esc(_ci(r.external_auc, r.external_auc_low, r.external_auc_high))} (development "
        f"test {esc(_ci(r.internal_auc, r.internal_auc_low, r.internal_auc_high))})</li>"
        for r in result.comparison.itertuples(index=False)
        if r.model in mains
    )
    body = head + f'<div class="box key"><h3>Key results (frozen models)</h3><ul>{key}</ul></div>'
    body += (
        '<div class="box caveats" id="caveats"><h2>Caveats and limitations</h2><ul>'
        + "".join(f"<li>{esc(c)}</li>" for c in _caveats(b, cases, result))
        + "</ul></div>"
    )
    sections: list[tuple[str, str, str]] = []
    tripod = pd.DataFrame(TRIPOD_ITEMS, columns=["TRIPOD+AI item", "Topic", "Where in this report"])
    sections.append(("methods", "Methods", _methods(b, cases, ev) + w.table("tripod_ai", tripod)))
    frozen = (
        "<p>Every model of the bundle at its frozen threshold (* the study's selected model "
        "of each family). CITL: calibration-in-the-large (0 is ideal); slope: calibration "
        "slope (1 is ideal).</p>"
        + w.table("external_performance", performance_display(metrics), css_class="compact")
        + w.row(["roc_external", "delong_external"], 2)
        + w.row(["calibration_external", "decision_curve_external"], 2)
    )
    sections.append(("frozen", "Frozen models on the external cohort", frozen))
    comp = (
        "<p>The development study's test AUC (bundle model card) beside the external AUC; "
        "the difference is external minus development, with a 95% CI for two independent "
        "estimates.</p>"
        + w.table("internal_external", comparison_display(result.comparison), css_class="compact")
    )
    sections.append(("comparison", "Development versus external performance", comp))
    if result.centres is not None:
        html = w.row(["forest_centres"], 1)
        html += w.table("centres_pooled", external_display(result.pooled))
        html += w.table("centres", subgroup_display(result.centres))
        sections.append(("centres", "Per-centre performance", html))
    if b.config.harmonization.method == "combat":
        sections.append(
            ("harmonisation", "Harmonising the new centre(s)", _harmonisation_section(result, w))
        )
    upd = (
        "<p>Separate from the validation above: logistic recalibration fitted on the external "
        "cases. <em>intercept</em>: p* = expit(a + logit p) corrects calibration-in-the-large; "
        "<em>intercept + slope</em>: p* = expit(a + b·logit p) also corrects predictions that "
        "are too extreme or too moderate. Both keep every case's rank (the AUC) and, with the "
        "threshold mapped alike, every decision.</p>"
        + w.table("recalibration", recalibration_display(result.recalibration))
        + w.row(recal_keys, min(3, max(1, len(recal_keys))))
    )
    sections.append(("updating", "Updating: recalibration", upd))
    if result.notes:
        sections.append(
            (
                "warnings",
                "Input warnings",
                "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in result.notes) + "</ul>",
            )
        )
    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t, _ in sections)
    body += f'<nav><a href="#caveats">Caveats and limitations</a>{nav}</nav>'
    body += "".join(section(a, t, inner) for a, t, inner in sections)
    body += (
        "<footer>Self-contained report: figures are embedded, nothing is loaded from the "
        "network. Tables as shown are in report/tables/*.csv, the full numbers in "
        "evaluation/*.csv, figures at full resolution in evaluation/figures/.</footer>"
    )
    path = RunLayout(root).report  # the output folder is laid out like a run folder
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, page(title, body))
    return path
