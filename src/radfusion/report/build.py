"""Write a run's study report: one self-contained HTML file plus every table as CSV.

``RUN/report/report.html`` mirrors the paper's Results (Table 1, Figure 3, Table 2, Figure 4,
Figure 5, Figures S1-S2) and adds calibration, decision curves, feature importance, Grad-CAM,
a methods summary generated from the run's records and a caveats box. Figures are embedded as
base64 PNG data URIs and the stylesheet is inline: no JavaScript, no external URL, so the file
opens offline and can be archived or emailed as is. ``RUN/report/tables/*.csv`` holds every
table shown.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

import radfusion
from radfusion.evaluation.metrics import family_models, splits_present
from radfusion.evaluation.palette import SPLIT_LABELS
from radfusion.evaluation.run import EvaluationResult, evaluate_run, load_evaluation
from radfusion.evaluation.runfolder import RunArtifacts
from radfusion.families import FAMILY_LABELS
from radfusion.report.calibration import calibration_summary, flagged_models
from radfusion.report.cases import cases_section
from radfusion.report.caveats import caveats
from radfusion.report.checklists import checklists_section, fill_checklists, write_checklists
from radfusion.report.figures import export_journal_figures, journal_copies_present
from radfusion.report.flow import flow_diagram, flow_table
from radfusion.report.html import (
    details,
    esc,
    figure,
    figure_row,
    page,
    section,
)
from radfusion.report.ibsi import ibsi_supplement
from radfusion.report.methods import (
    MEMORISED_AUC,
    memorisation_warnings,
    methods_summary,
    stacking_text,
    synthetic_sentence,
)
from radfusion.report.tables import (
    ReportTables,
    ci_text,
    coef_display,
    metrics_display,
    pmatrix_display,
    table1_display,
    table2_display,
)
from radfusion.utils import atomic_path, atomic_write_text

__all__ = ["write_report"]

_GRID_WIDTH = 900  # embedded width of figures shown two or three per row
_WIDE_WIDTH = 1500  # LASSO and history figures, one per row


def _fig(ev: EvaluationResult, key: str, width: int = _GRID_WIDTH) -> str | None:
    info = ev.figures.get(key)
    if info is None or not info.path.is_file():
        return None
    return figure(info.path, info.caption, max_width=width)


def _row(ev: EvaluationResult, keys: Iterable[str], columns: int | None = None) -> str:
    items = [f for f in (_fig(ev, k) for k in keys) if f]
    return figure_row(items, columns=columns or len(items))


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------
def _key_results(ev: EvaluationResult) -> str:
    m = ev.metrics
    splits = [s for s in ("test", "val", "train") if s in set(m["split"])]
    if not splits:
        return ""
    split = splits[0]
    rows = m[(m["split"] == split) & m["model"].isin(ev.main_models)]
    rows = rows.set_index("model").reindex(ev.main_models).dropna(subset=["n"])
    items = []
    for model, r in rows.iterrows():
        auc = ci_text(r["auc"], r["auc_low"], r["auc_high"])
        items.append(
            f"<li><b>{esc(model)}</b>: AUC {esc(auc)}, SEN {r['sen']:.3f}, SPE {r['spe']:.3f}</li>"
            if math.isfinite(r["sen"]) and math.isfinite(r["spe"])
            else f"<li><b>{esc(model)}</b>: AUC {esc(auc)}</li>"
        )
    if rows.empty:
        return ""
    n, k = int(rows["n"].max()), int(rows["n_pos"].max())
    return (
        f'<div class="box key"><b>{SPLIT_LABELS[split]} set ({n} cases, {k} events)</b>, '
        f"selected model of each family:<ul>{''.join(items)}</ul></div>"
    )


def _caveats_box(items: list[str]) -> str:
    lis = "".join(f"<li>{esc(t)}</li>" for t in items)
    return (
        '<div class="box caveats" id="caveats"><h2>Caveats and limitations</h2>'
        f"<ul>{lis}</ul></div>"
    )


def _methods_section(run: RunArtifacts, ev: EvaluationResult, tables: ReportTables) -> str:
    rows = []
    for item in methods_summary(run, ev):
        inner = f"<p>{esc(item.text)}</p>"
        if item.table is not None and item.table_name:
            inner += tables(item.table_name, item.table)
        rows.append(f"<tr><th>{esc(item.topic)}</th><td>{inner}</td></tr>")
    intro = (
        '<p class="note">Generated from the run\'s configuration, data fingerprint, selection '
        "records and software versions; items follow the topics of TRIPOD+AI for model "
        "development (Collins et al., BMJ 2024). Anything the run cannot know is marked "
        "'not recorded'.</p>"
    )
    return intro + f'<table class="methods"><tbody>{"".join(rows)}</tbody></table>'


def _unit_note(run: RunArtifacts) -> tuple[str, str]:
    """How Table 1 and Table 2 count: (Table 1's unit, Table 2's unit), said plainly."""
    cases = run.cases
    if cases is not None and "patient_id" in cases.columns and cases["patient_id"].notna().all():
        n_img, n_pat = len(cases), int(cases["patient_id"].nunique())
        if n_pat < n_img:
            return (
                f"one row per patient: {n_pat} patients, the first image of each; the "
                f"{n_img} images are in the flow diagram",
                f"{n_img} images of {n_pat} patients; a patient with several images counts "
                "several times",
            )
        return (f"{n_pat} patients, one image each", f"{n_img} images, one per patient")
    n = len(cases) if cases is not None else run.predictions["case_id"].nunique()
    return (f"{n} images; no patient_id recorded", f"{n} images; no patient_id recorded")


def _calibration_section(
    ev: EvaluationResult, splits: list[str], tables: ReportTables, calibration: pd.DataFrame
) -> str:
    html = "".join(_row(ev, [f"calibration_{s}", f"decision_curve_{s}"], 2) for s in splits)
    if calibration.empty:
        return html
    rows = []
    for r in calibration.itertuples():
        rows.append(
            {
                "Model": r.model,
                "Set": SPLIT_LABELS.get(r.split, r.split),
                "n": int(r.n),
                "Events": int(r.events),
                "Brier": f"{r.brier:.3f}",
                "Calibration-in-the-large (95% CI)": ci_text(r.citl, r.citl_low, r.citl_high),
                "Calibration slope (95% CI)": ci_text(r.slope, r.slope_low, r.slope_high),
                "Flag": r.flag,
            }
        )
    html += tables(
        "calibration",
        pd.DataFrame(rows),
        csv=calibration,
        caption="Calibration of the selected models: Brier score, intercept and slope",
        note="Calibration-in-the-large: intercept of a logistic regression of the outcome with "
        "the model's logit as offset (ideal 0; below 0 = risks overestimated). Slope: "
        "coefficient of the logit (ideal 1; below 1 = predictions too extreme). Wald 95% CIs; "
        "NA when undefined (one class, or perfect separation). Flag: Brier >= 0.25, worse than "
        "predicting the prevalence, or every probability on the far side of 0.5 from the "
        "prevalence.",
        css_class="compact",
    )
    return html


def _table1_section(
    run: RunArtifacts, ev: EvaluationResult, tables: ReportTables, unit_note: str = ""
) -> str:
    flow = flow_table(run)
    path = tables.layout.report_table("participant_flow")
    with atomic_path(path) as tmp:
        flow.to_csv(tmp, index=False)
    tables.written.append(path)
    html = (
        "<h3>Participant flow</h3>"
        + flow_diagram(flow, run.config.evaluation.class_names[1])
        + '<p class="note">Events: cases of the positive class. Exclusions are those made by '
        "radfusion's input validation; clinical eligibility criteria applied before the "
        "manifest are not known to the run.</p>"
    )
    if ev.table1 is None or ev.table1.empty:
        return html + "<p>No cases.csv in the run: Table 1 not available.</p>"
    disp, indent, bold = table1_display(ev.table1)
    return html + tables(
        "table1",
        disp,
        csv=ev.table1,
        caption="Table 1. Baseline characteristics of the study sets",
        note=f"Counted per patient ({unit_note}). "
        "Data are n (%), mean ± SD or median (Q1, Q3). Each P compares two sets (bold: "
        "P < 0.05). Test, per comparison in column order when they differ: MWU = Mann-Whitney "
        "U, t = Welch's t-test, χ² = chi-square, Fisher = Fisher's exact test.",
        indent_rows=indent,
        bold_cells=bold,
    )


def _family_figures(ev: EvaluationResult, fam: str, splits: list[str]) -> str:
    rows = [_row(ev, [f"roc_{fam}_{s}", f"delong_{fam}_{s}"], columns=2) for s in splits]
    return "".join(rows)


def _comparison_section(
    ev: EvaluationResult,
    splits: list[str],
    tables: ReportTables,
    calibration: pd.DataFrame,
    unit_note: str,
) -> str:
    disp, bold = table2_display(ev.table2, ev.metrics)
    flagged = flagged_models(calibration)
    flag_note = (
        " Poorly calibrated (probabilities not to be read as risks; see Calibration): "
        + "; ".join(flagged)
        + "."
        if flagged
        else ""
    )
    html = tables(
        "table2",
        disp,
        csv=ev.table2[["Model", "Family"]].join(disp.drop(columns="Group")),
        caption="Table 2. Performance of the selected model of each family",
        note=f"Counted per image ({unit_note}). AUC with 95% CI (DeLong or bootstrap, see "
        "Methods); ACC, SEN, SPE, PPV and NPV with Wilson 95% CIs and F1, at each model's "
        "threshold (chosen on training/validation data, never on test). Bold: highest per "
        "set. Every model and metric with CIs, Brier score and threshold: supplementary table "
        "'All models'." + flag_note,
        group_col="Group",
        bold_cells=bold,
        bold_class="best",
        css_class="table2",
    )
    html += "<h3>Figure 4. ROC curves, performance radar plots and DeLong tests</h3>"
    for s in splits:
        # Two per row: three abreast shrink the legends below legibility.
        html += f"<h4>{SPLIT_LABELS[s]} set</h4>"
        html += _row(ev, [f"roc_{s}", f"radar_{s}", f"delong_{s}"], columns=2)
    return html


def _importance_section(run: RunArtifacts, ev: EvaluationResult, tables: ReportTables) -> str:
    keys = [k for k in ev.figures if k.startswith("importance_")]
    # One per row: long radiomics feature names need the width.
    html = (
        "".join(figure_row([f], 1, "mid") for f in (_fig(ev, k) for k in keys) if f)
        or "<p>No feature importances recorded.</p>"
    )
    coefs = run.clinical_coefficients
    if coefs is not None and not coefs.empty:
        html += tables(
            "clinical_coefficients",
            coef_display(coefs),
            csv=coefs,
            caption="Clinical + imaging model: logistic regression coefficients",
            note="Odds ratio = exp(coefficient) per unit (or per category); Wald 95% CI of "
            "the odds ratio and Wald P.",
        )
    return html


def _fusion_section(run: RunArtifacts, ev: EvaluationResult, tables: ReportTables) -> str:
    """Stacked fusion (how it was fitted, its weights) and the early-fusion diagnosis."""
    import json

    html = ""
    text = stacking_text(run)
    if text:
        html += f"<p>{esc(text)}</p>"
        coef_path = run.layout.stacking_coefficients
        if coef_path.is_file():
            coefs = pd.read_csv(coef_path)
            html += tables(
                "stacking_coefficients",
                coef_display(coefs),
                csv=coefs,
                caption="Stacked fusion: meta-learner coefficients",
                note="score_<arm>: per standard deviation of that arm's logit; "
                "odds ratio = exp(coefficient), Wald 95% CI.",
            )
        src = json.loads(run.layout.model_source("stacked").read_text())
        transfer = src.get("transfer") or {}
        if transfer:
            rows = [
                {
                    "Arm scores for new cases": label,
                    "Validation AUC": f"{transfer.get(f'{key}_val_auc', float('nan')):.3f}",
                    "Test AUC": f"{transfer.get(f'{key}_test_auc', float('nan')):.3f}",
                }
                for key, label in (
                    ("full_model", "each arm's model fitted on the whole training set (used)"),
                    ("fold_mean", "mean of the arm's cross-fitting fold models"),
                )
            ]
            html += tables(
                "stacking_transfer",
                pd.DataFrame(rows),
                caption="Stacked fusion: which arm models to apply to new cases",
            )
    m = ev.metrics
    sel = m[m["model"].isin(ev.main_models)]
    auc = sel.pivot_table(index="model", columns="split", values="auc", aggfunc="first")
    rows = []
    for model in ev.main_models:
        if model not in auc.index:
            continue
        tr = auc.loc[model].get("train", float("nan"))
        va = auc.loc[model].get("val", float("nan"))
        rows.append(
            {
                "Model": model,
                "Training AUC": f"{tr:.3f}",
                "Validation AUC": f"{va:.3f}",
                "Gap": f"{tr - va:+.3f}",
                f"Memorised (training AUC >= {MEMORISED_AUC:.2f})": (
                    "yes" if tr >= MEMORISED_AUC else ""
                ),
            }
        )
    if rows:
        html += tables(
            "train_vs_val_auc",
            pd.DataFrame(rows),
            caption="Training vs validation AUC of the selected model of each family",
            note="Training AUC of the stacked model comes from out-of-fold scores when it was "
            "cross-fitted; a large gap means the model learnt its training cases rather than "
            "the task.",
        )
    warn = memorisation_warnings(ev)
    if warn:
        html += "<ul>" + "".join(f"<li>{esc(w)}</li>" for w in warn) + "</ul>"
    return html


def _deep_section(run: RunArtifacts, ev: EvaluationResult) -> str:
    html = ""
    fig = _fig(ev, "training_history", _WIDE_WIDTH)
    html += figure_row([fig], 1, "wide") if fig else "<p>No training history recorded.</p>"
    n = run.config.deep.gradcam_cases
    cams = []
    for arm in ("1ch", "2ch"):
        for p in run.gradcam_images(arm)[: max(n, 0)]:
            cams.append(
                figure(p, f"Grad-CAM, {FAMILY_LABELS.get(arm, arm)}: case {p.stem}", max_width=900)
            )
    if cams:
        html += "<h3>Grad-CAM</h3>" + figure_row(cams, columns=2)
    return html


def _supplement(
    run: RunArtifacts, ev: EvaluationResult, splits: list[str], tables: ReportTables
) -> str:
    html = details(
        "All models, every metric with 95% CI",
        tables(
            "metrics_all",
            metrics_display(ev.metrics),
            csv=ev.metrics,
            caption="Every model on every set",
            css_class="compact",
        ),
    )
    thr = pd.DataFrame(
        {
            "Model": list(ev.thresholds),
            "Threshold": [f"{v:.4f}" for v in ev.thresholds.values()],
            "Rule": ev.threshold_rule.get("rule", ""),
            "Chosen on": SPLIT_LABELS.get(str(ev.threshold_rule.get("source_split")), "fixed"),
        }
    )
    html += details("Operating thresholds", tables("thresholds", thr))
    for s in splits:
        mat = ev.delong["main"].get(s)
        if mat is not None:
            html += details(
                f"DeLong p-values, selected models, {SPLIT_LABELS[s].lower()} set",
                tables(f"delong_{s}", pmatrix_display(mat), csv=mat.reset_index()),
            )
    if run.cv_results:
        parts = []
        for fam, df in run.cv_results.items():
            parts.append(df.assign(family=FAMILY_LABELS.get(fam, fam)))
        cv = pd.concat(parts, ignore_index=True)
        cv = cv[["family", *[c for c in cv.columns if c != "family"]]]
        if "tuning_note" in cv:  # empty when every inner-CV fit worked
            cv["tuning_note"] = cv["tuning_note"].fillna("")
        shown = cv.rename(
            columns={
                "family": "Family",
                "classifier": "Classifier",
                "cv_auc": "Mean inner-CV AUC",
                "best_params": "Chosen hyperparameters",
                "fit_seconds": "Fit time (s)",
                "failed_fits": "Failed inner-CV fits",
                "tuning_note": "Tuning note",
            }
        )
        if "Fit time (s)" in shown:
            shown["Fit time (s)"] = [f"{float(v):.1f}" for v in shown["Fit time (s)"]]
        html += details(
            "Hyperparameter tuning (inner cross-validation on the training set)",
            tables("cv_results", shown, csv=cv, caption="Tuning results per family"),
        )
    html += ibsi_supplement(run, tables)
    html += details("Configuration (config.yaml)", f"<pre>{esc(run.config.to_yaml())}</pre>")
    if ev.notes:
        lis = "".join(f"<li>{esc(n)}</li>" for n in ev.notes)
        html += details("Outputs skipped or partial", f"<ul>{lis}</ul>")
    return html


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------
def _multicentre_sections(
    run: RunArtifacts, ev: EvaluationResult, preds: pd.DataFrame, tables: ReportTables
) -> list[tuple[str, str, str]]:
    """Per-centre/subgroup performance and, for a held-out centre, external validation."""
    from radfusion.report import multicentre as mc

    out: list[tuple[str, str, str]] = []
    ext = mc.run_external_validation(preds, run.cases)
    if ext is not None:
        fig = mc.external_forest(ext, "External validation: AUC per held-out centre")
        figs = []
        if fig is not None:
            from radfusion.evaluation.figures import save_figure

            path = save_figure(fig, run.layout.figure("external_validation"))
            figs.append(figure(path, "AUC (95% CI) of the held-out centre(s)."))
        out.append(
            (
                "external",
                "External validation (held-out centre)",
                mc.external_section(ext, figs, tables),
            )
        )
    sg = run.layout.subgroups
    if sg.is_file():
        figs = [f for f in (_fig(ev, "subgroups_test", _WIDE_WIDTH),) if f]
        table = pd.read_csv(sg, dtype={"subgroup": str})
        out.append(
            (
                "subgroups",
                "Per-centre and subgroup performance",
                mc.subgroups_section(table, figs, tables),
            )
        )
    return out


def write_report(run_dir: str | Path, evaluation: EvaluationResult | None = None) -> Path:
    """Write ``RUN/report/report.html`` (self-contained) and ``RUN/report/tables/*.csv``.

    Parameters
    ----------
    run_dir : str or Path
        The run folder.
    evaluation : EvaluationResult, optional
        A result of :func:`radfusion.evaluation.evaluate_run` for this run. Default: the
        run's ``evaluation/`` when it matches the current predictions, else it is recomputed.

    Returns
    -------
    Path
        The HTML file.

    Raises
    ------
    RadfusionError
        The run folder lacks ``config.yaml`` or ``predictions.parquet``, or they are invalid.
    """
    run = RunArtifacts(Path(run_dir))
    cfg = run.config
    ev = evaluation or load_evaluation(run.path) or evaluate_run(run.path)
    tables = ReportTables(run.layout)
    preds = run.predictions
    splits = splits_present(preds)
    fams = list(dict.fromkeys(preds["family"]))

    t1_unit, t2_unit = _unit_note(run)
    calibration = calibration_summary(preds, ev.main_models)
    sections: list[tuple[str, str, str]] = []
    sections.append(("methods", "Methods summary (TRIPOD+AI)", _methods_section(run, ev, tables)))
    sections.append(
        ("table1", "Participants (flow, Table 1)", _table1_section(run, ev, tables, t1_unit))
    )
    if len(family_models(preds, "radiomics")) >= 2:
        fig3 = (
            "<p>ROC curves and pairwise DeLong tests of the radiomics classifiers "
            "(the selected one drawn thicker).</p>" + _family_figures(ev, "radiomics", splits)
        )
        sections.append(("figure3", "Radiomics classifiers (Figure 3)", fig3))
    sections.append(
        (
            "comparison",
            "Model comparison (Table 2, Figure 4)",
            _comparison_section(ev, splits, tables, calibration, t2_unit),
        )
    )
    sections += _multicentre_sections(run, ev, preds, tables)
    sections.append(
        ("fusion", "Fusion: stacked and early fusion", _fusion_section(run, ev, tables))
    )
    sections.append(("cases", "Example test cases (Figure 5)", cases_section(run, ev, tables)))
    cal = _calibration_section(ev, splits, tables, calibration)
    sections.append(("calibration", "Calibration and decision curves", cal))
    lasso = [
        f for f in (_fig(ev, k, _WIDE_WIDTH) for k in ev.figures if k.startswith("lasso_")) if f
    ]
    sections.append(
        (
            "selection",
            "Feature selection (Figure S1)",
            "".join(figure_row([f], 1, "wide") for f in lasso) or "<p>No LASSO records.</p>",
        )
    )
    sections.append(
        ("importance", "Feature importance and coefficients", _importance_section(run, ev, tables))
    )
    if any(f in fams for f in ("1ch", "2ch")) or run.histories:
        sections.append(
            ("deep", "Deep-learning training (Figure S2) and Grad-CAM", _deep_section(run, ev))
        )
    other = [f for f in fams if f != "radiomics" and len(family_models(preds, f)) >= 2]
    if other:
        html = ""
        for fam in other:
            html += f"<h3>{esc(FAMILY_LABELS.get(fam, fam))}</h3>" + _family_figures(
                ev, fam, splits
            )
        sections.append(("families", "Classifiers of the other families (Appendix 3)", html))
    sections.append(("supplement", "Supplementary tables", _supplement(run, ev, splits, tables)))
    filled = fill_checklists(run, ev)
    write_checklists(run.layout, filled)
    sections.append(("checklists", "Reporting checklists", checklists_section(filled)))

    created = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t, _ in sections)
    nav = f'<nav><a href="#caveats">Caveats and limitations</a>{nav}</nav>'
    head = (
        f"<h1>{esc(cfg.name)}: study report</h1>"
        f'<p class="meta">Radiomics, deep-learning and fusion models · run folder '
        f"{esc(run.path.name)} · generated {esc(created)} by radfusion "
        f"{esc(radfusion.__version__)}</p>"
    )
    synthetic = synthetic_sentence(run)
    if synthetic:
        head += f'<div class="box synthetic"><b>{esc(synthetic)}</b></div>'
    body = head + _key_results(ev) + _caveats_box(caveats(run, ev)) + nav
    body += "".join(section(a, t, inner) for a, t, inner in sections)
    shown = {k: i.path for k, i in ev.figures.items()}
    if any(a == "external" for a, _, _ in sections):
        shown["external_validation"] = run.layout.figure("external_validation")
    export_journal_figures(run.layout, shown)
    # An evaluation drawn by an older radfusion has no SVG / 300-dpi copies; redrawing it here
    # would rewrite a finished stage's files behind its record, so the report says so instead.
    old = [k for k, p in shown.items() if not journal_copies_present({k: p})]
    redo = (
        f" {len(old)} figure(s) have no journal copy: the evaluation predates them; rerun it "
        "with `radfusion run CONFIG --run-dir RUN --from evaluation`."
        if old
        else ""
    )
    body += (
        "<footer>Self-contained report: figures are embedded, nothing is loaded from the "
        "network. Tables are also in report/tables/*.csv; every figure as SVG and 300-dpi PNG "
        f"in report/figures/.{esc(redo)}</footer>"
    )
    path = run.layout.report
    atomic_write_text(path, page(f"{cfg.name}: study report", body))
    return path
