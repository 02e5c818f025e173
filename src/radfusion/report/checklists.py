"""Reporting checklists filled from the run: TRIPOD+AI, CLAIM 2024 and METRICS.

Each checklist's items are data, one CSV per checklist in ``radfusion/report/checklist_items/``
(``item, section, topic, answer, anchor``; METRICS adds ``weight`` and ``condition``): the
official item number, a short topic (not the official wording, which the authors should read
in the source paper), the key of the run fact that answers it and the report section that
shows it. An empty ``answer`` means the run cannot know: the item is marked "author to
complete", never guessed.

Sources: TRIPOD+AI (Collins GS et al., BMJ 2024;385:e078378; 27 items, 52 sub-items);
CLAIM 2024 Update (Tejani AS et al., Radiol Artif Intell 2024;6(4):e240300; 44 items: the
2020 items renumbered, with image acquisition protocol (13), annotation of the test set (17),
internal and external testing (32, 33), registration (34) and availability of software, model
and data (43)); METRICS (Kocak B et al., Insights Imaging 2024;15:8; 30 items, weights of the
official METRICS Tool v1.0, score = sum of weights answered "yes" / sum of weights answered
"yes" or "no").

The filled tables go to ``RUN/report/checklists/<name>.csv`` and ``.md`` and into the report's
"Reporting checklists" section.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

from radfusion.evaluation.palette import SPLIT_LABELS
from radfusion.evaluation.run import EvaluationResult
from radfusion.evaluation.runfolder import RunArtifacts
from radfusion.families import FAMILY_LABELS
from radfusion.layout import RunLayout
from radfusion.report.calibration import calibration_summary, flagged_models
from radfusion.report.flow import flow_table
from radfusion.report.html import esc
from radfusion.report.methods import _group_column, methods_summary, selection_rule_text
from radfusion.report.samplesize import RILEY_TOPIC, events_per_variable, training_events
from radfusion.utils import atomic_path, atomic_write_text

__all__ = [
    "AUTHOR",
    "CHECKLISTS",
    "FILLED",
    "NOT_APPLICABLE",
    "PARTLY",
    "FilledChecklist",
    "checklists_section",
    "fill_checklists",
    "load_checklist",
    "metrics_score",
    "write_checklists",
]

#: Checklist file stem -> display name.
CHECKLISTS = {
    "tripod_ai": "TRIPOD+AI (2024)",
    "claim_2024": "CLAIM 2024",
    "metrics": "METRICS (2024)",
}
FILLED = "filled from the run"
PARTLY = "partly: author to complete"
AUTHOR = "author to complete"
NOT_APPLICABLE = "not applicable"

#: METRICS verdicts (the official tool's Yes / No; "unknown" items are left out of the score).
YES, NO, UNKNOWN, NA = "yes", "no", "unknown", "n/a"


def load_checklist(name: str) -> pd.DataFrame:
    """The item table of one checklist (``name`` a key of :data:`CHECKLISTS`)."""
    if name not in CHECKLISTS:
        raise ValueError(f"unknown checklist {name!r}; one of {', '.join(CHECKLISTS)}")
    text = (
        resources.files("radfusion.report").joinpath("checklist_items", f"{name}.csv").read_text()
    )
    rows = list(csv.DictReader(text.splitlines()))
    return pd.DataFrame(rows).fillna("")


@dataclass
class _Facts:
    """What the run knows, gathered once, for the answer functions."""

    run: RunArtifacts
    ev: EvaluationResult
    methods: dict[str, str]
    calibration: pd.DataFrame
    flow: pd.DataFrame


def _m(topic: str, status: str = FILLED) -> Callable[[_Facts], tuple[str, str]]:
    """An answer read from the methods summary's item ``topic``."""
    return lambda f: (status, f.methods.get(topic, "")) if f.methods.get(topic) else (AUTHOR, "")


def _dates(f: _Facts) -> tuple[str, str]:
    fp = f.run.fingerprint
    dates = fp.get("data_dates") or fp.get("date_range")
    return (FILLED, f"Data collected {dates}.") if dates else (AUTHOR, "Not recorded in the run.")


def _centres(f: _Facts) -> list[str]:
    cases = f.run.cases
    if cases is None or "center" not in cases.columns:
        return []
    return sorted(map(str, cases["center"].dropna().unique()))


def _setting(f: _Facts) -> tuple[str, str]:
    c = _centres(f)
    where = f"{len(c)} centre(s): {', '.join(c)}." if c else "Centres not recorded."
    return PARTLY, where + " Care setting (primary/secondary) and location: author to state."


def _flow(f: _Facts) -> tuple[str, str]:
    parts = []
    for r in f.flow.itertuples():
        pat = "" if pd.isna(r.patients) else f", {int(r.patients)} patients"
        ev = "" if pd.isna(r.events) else f", {int(r.events)} events"
        parts.append(f"{r.stage}: {int(r.images)} images{pat}{ev}")
    return FILLED, "; ".join(parts) + "."


def _n_events(f: _Facts) -> tuple[str, str]:
    rows = f.flow[f.flow["stage"].isin(SPLIT_LABELS.values())]
    text = "; ".join(
        f"{r.stage}: {int(r.images)} images, {int(r.events)} events" for r in rows.itertuples()
    )
    return FILLED, text + "."


def _characteristics(f: _Facts) -> tuple[str, str]:
    if f.ev.table1 is None or f.ev.table1.empty:
        return AUTHOR, "No cases.csv: Table 1 not available."
    return FILLED, "Table 1: baseline characteristics per set, with between-set tests."


def _performance(f: _Facts) -> tuple[str, str]:
    m = f.ev.metrics
    split = "test" if "test" in set(m["split"]) else str(m["split"].iloc[-1])
    rows = m[(m["split"] == split) & m["model"].isin(f.ev.main_models)]
    aucs = "; ".join(
        f"{r.model} AUC {r.auc:.3f} ({r.auc_low:.3f}-{r.auc_high:.3f})"
        for r in rows.itertuples()
        if math.isfinite(r.auc)
    )
    cal = "calibration intercept/slope with CIs in 'Calibration'"
    flagged = flagged_models(f.calibration)
    flag = f"; poorly calibrated: {'; '.join(flagged)}" if flagged else ""
    return FILLED, f"{SPLIT_LABELS.get(split, split)} set: {aucs}; Table 2 CIs; {cal}{flag}."


def _sample_size(f: _Facts) -> tuple[str, str]:
    # TRIPOD+AI 10 / CLAIM 2024 21: how the size was arrived at and whether it suffices.
    parts = [f.methods.get(t, "") for t in ("Sample size and events", RILEY_TOPIC)]
    text = " ".join(p for p in parts if p)
    return (FILLED, text) if text else (AUTHOR, "")


def _heterogeneity(f: _Facts) -> tuple[str, str]:
    if not f.run.layout.subgroups.is_file():
        return AUTHOR, "No centre or subgroup column in the cases."
    return FILLED, f.methods.get("Fairness and subgroups", "")


def _fairness(f: _Facts) -> tuple[str, str]:
    status, text = _heterogeneity(f)
    return (PARTLY if status == FILLED else AUTHOR), text + (
        " Which groups matter for fairness, and why: author to state."
    )


def _icc(f: _Facts) -> tuple[str, str]:
    sel = f.run.selections.get("radiomics") or {}
    if sel.get("icc_skipped"):
        return AUTHOR, f"ICC filter skipped: {sel['icc_skipped']}."
    counts = sel.get("counts") or {}
    if counts.get("icc") is None:
        return AUTHOR, "No ICC record."
    return FILLED, (
        f"Inter-reader ICC ({f.run.config.selection.icc_form}) on the second reader's ROIs: "
        f"{counts['icc']} of {counts.get('input')} radiomics features kept (ICC > "
        f"{f.run.config.selection.icc_threshold:g})."
    )


def _software(f: _Facts) -> tuple[str, str]:
    v = f.run.versions
    keys = ("radfusion", "python", "scikit-learn", "torch", "monai", "pyradiomics", "SimpleITK")
    listed = ", ".join(f"{k} {v[k]}" for k in keys if v.get(k))
    return (
        (FILLED, listed + "; full list in 'Software and reproducibility'.")
        if listed
        else (
            AUTHOR,
            "versions.json missing.",
        )
    )


def _selection_rule(f: _Facts) -> tuple[str, str]:
    return FILLED, f"Best classifier per family by {selection_rule_text(f.run.config)}."


def _ensembling(f: _Facts) -> tuple[str, str]:
    fams = set(f.run.predictions["family"])
    used = [FAMILY_LABELS[x] for x in ("merged1", "merged2", "stacked") if x in fams]
    if not used:
        return FILLED, "No ensembling."
    return FILLED, f"Fusion models: {', '.join(used)} (see 'Fusion')."


def _explainability(f: _Facts) -> tuple[str, str]:
    parts = []
    if any(k.startswith("importance_") for k in f.ev.figures):
        parts.append("feature importances")
    if any(f.run.gradcam_images(a) for a in ("1ch", "2ch")):
        parts.append("Grad-CAM maps")
    if f.run.clinical_coefficients is not None:
        parts.append("logistic-regression odds ratios")
    return (FILLED, ", ".join(parts).capitalize() + ".") if parts else (AUTHOR, "")


def _internal_test(f: _Facts) -> tuple[str, str]:
    if "test" not in set(f.run.predictions["split"]):
        return FILLED, "No internal test set in this run."
    return FILLED, "Internal test set held out before any fitting (Table 2, test rows)."


def _external_test(f: _Facts) -> tuple[str, str]:
    if f.run.config.split.method == "center":
        return FILLED, "Held-out centre(s) as external test set (leave-centre-out)."
    return FILLED, (
        "No external test set in this run; `radfusion evaluate` tests the saved bundle on an "
        "external cohort."
    )


def _predictor_choice(f: _Facts) -> tuple[str, str]:
    text = f.methods.get("Feature selection", "")
    return PARTLY, (
        "Candidates: every extracted radiomics feature and every deep feature; no outcome-"
        "based pre-selection before model building (selection steps run inside the training "
        f"set). {text} Choice of clinical predictors: author to state."
    )


def _epv(f: _Facts) -> list[float]:
    df = events_per_variable(f.run, f.run.config)
    return [float(x) for x in df.get("EPV (selected)", []) if str(x)]


# METRICS verdicts ---------------------------------------------------------------------------
def _v_multicentre(f: _Facts) -> tuple[str, str]:
    c = _centres(f)
    if not c:
        return UNKNOWN, "Centres not recorded in the cases."
    return (YES if len(c) > 1 else NO), f"{len(c)} centre(s): {', '.join(c)}."


def _v_selection_step(step: str, what: str) -> Callable[[_Facts], tuple[str, str]]:
    def answer(f: _Facts) -> tuple[str, str]:
        sel = f.run.selections.get("radiomics") or {}
        counts = sel.get("counts") or {}
        if counts.get(step) is None or (step == "icc" and sel.get("icc_skipped")):
            return NO, f"No {what} step recorded."
        return YES, f"{what}: {counts.get(step)} features kept (training set only)."

    return answer


def _v_dimensionality(f: _Facts) -> tuple[str, str]:
    epv = _epv(f)
    if not epv:
        return UNKNOWN, "No selection record."
    _, events = training_events(f.run, f.run.config)
    ok = min(epv) >= 10
    return (YES if ok else NO), (
        f"Lowest events per selected feature {min(epv):.1f} ({events} training events of the "
        "smaller class); 10 or more counts as appropriate."
    )


def _v_partitioning(f: _Facts) -> tuple[str, str]:
    group = _group_column(f.run, f.run.config)
    text = f.methods.get("Data splitting", "")
    return (YES if group else NO), text or "Split recorded in config.yaml."


def _v_external(f: _Facts) -> tuple[str, str]:
    ext = f.run.config.split.method == "center"
    return (YES if ext else NO), ("Held-out centre." if ext else "No external test set.")


def _v_internal(f: _Facts) -> tuple[str, str]:
    has = "test" in set(f.run.predictions["split"])
    return (YES if has else NO), ("Held-out internal test set." if has else "No test set.")


def _v_simple(f: _Facts) -> tuple[str, str]:
    clfs = set(f.run.predictions["classifier"].astype(str))
    if "LR" in clfs:
        return YES, "Logistic regression compared with the other classifiers by DeLong tests."
    return NO, "No logistic-regression baseline in this run."


def _v_feature_software(f: _Facts) -> tuple[str, str]:
    v = f.run.versions
    version = v.get("pyradiomics") or v.get("pyradiomics-bhklab")
    if not version:
        return UNKNOWN, "PyRadiomics version not recorded."
    return YES, f"PyRadiomics {version} (IBSI-aligned; phantom check in the supplement)."


def _v_const(verdict: str, text: str) -> Callable[[_Facts], tuple[str, str]]:
    return lambda f: (verdict, text)


# Answers the run can give only in part: fixed text, the author completes it.
_SEGMENTATION = (
    "Lesion ROIs supplied by the investigators with the manifest (one mask per image; a "
    "second reader's masks feed the ICC filter when given). Who drew them, their "
    "experience and the tool used: author to state."
)
_INPUT_CHECKS = (
    "radfusion validates every image and ROI before use and refuses unreadable or "
    "mismatched inputs with a named error; clinical handling of such cases: author to state."
)
_MODEL_SPEC = (
    "The fitted models are saved in the run's model bundle (features, coefficients or "
    "weights, thresholds); coefficients of the logistic models are tabulated. How readers "
    "obtain the bundle: author to state."
)
_CODE = (
    "radfusion is open source; the run folder holds config.yaml, versions.json and the "
    "saved model bundle, which reproduce every number. Repository / DOI where the authors "
    "deposit them: author to state."
)
_LIMITATIONS = "Run-derived caveats listed in 'Caveats and limitations'; author to discuss."
_FAILURE = (
    "Example test cases include the case the models disagree on most (Figure 5); a "
    "systematic review of misclassified cases: author to complete."
)

_ANSWERS: dict[str, Callable[[_Facts], tuple[str, str]]] = {
    "objective": _m("Study type and objective", PARTLY),
    "data_source": _m("Data source", PARTLY),
    "data_dates": _dates,
    "setting": _setting,
    "eligibility": _m("Eligibility", PARTLY),
    "preprocessing": _m("Preprocessing"),
    "outcome": _m("Outcome", PARTLY),
    "predictors": _m("Predictors"),
    "segmentation": _v_const(PARTLY, _SEGMENTATION),
    "sample_size": _sample_size,
    "missing": _m("Missing data"),
    "partitioning": _m("Data splitting"),
    "partition_level": _m("Data splitting"),
    "predictor_handling": _m("Feature selection"),
    "models": _m("Models and tuning"),
    "heterogeneity": _heterogeneity,
    "performance_measures": _m("Performance measures"),
    "not_applicable_development": lambda f: (NOT_APPLICABLE, "Model development study."),
    "model_output": _m("Operating threshold"),
    "class_imbalance": _m("Class imbalance"),
    "fairness": _fairness,
    "training_vs_evaluation": _characteristics,
    "code_availability": _v_const(PARTLY, _CODE),
    "flow": _flow,
    "characteristics": _characteristics,
    "n_events": _n_events,
    "model_specification": _v_const(PARTLY, _MODEL_SPEC),
    "performance": _performance,
    "limitations": _v_const(PARTLY, _LIMITATIONS),
    "input_checks": _v_const(PARTLY, _INPUT_CHECKS),
    "icc": _icc,
    "software": _software,
    "initialisation": _m("Deep learning"),
    "training_details": _m("Deep learning"),
    "final_model_selection": _selection_rule,
    "ensembling": _ensembling,
    "uncertainty": _m("Performance measures"),
    "explainability": _explainability,
    "internal_test": _internal_test,
    "external_test": _external_test,
    "predictor_choice": _predictor_choice,
    "failure_analysis": _v_const(PARTLY, _FAILURE),
    # METRICS verdicts
    "multicentre": _v_multicentre,
    "not_applicable_manual_segmentation": _v_const(NA, "ROIs drawn by readers, not automated."),
    "metrics_preprocessing": lambda f: (YES, f.methods.get("Preprocessing", "")),
    "feature_software": _v_feature_software,
    "feature_parameters": lambda f: (YES, "PyRadiomics parameter file named and shipped."),
    "icc_removal": _v_selection_step("icc", "ICC filter"),
    "redundancy_removal": _v_selection_step("spearman", "Spearman redundancy filter"),
    "dimensionality": _v_dimensionality,
    "proper_partitioning": _v_partitioning,
    "appropriate_metrics": _v_const(YES, "AUC, confusion-matrix metrics, Brier score."),
    "uncertainty_yes": _v_const(YES, "95% CIs for every metric (DeLong/bootstrap, Wilson)."),
    "calibration_yes": _v_const(YES, "Reliability curves, intercept and slope with CIs."),
    "uniparametric": _v_const(YES, "One ultrasound image per case (uni-parametric)."),
    "simple_model": _v_simple,
    "internal_testing": _v_internal,
    "external_testing": _v_external,
}


@dataclass(frozen=True)
class FilledChecklist:
    """One checklist with every item's status, value and report section."""

    name: str
    title: str
    table: pd.DataFrame  # item, section, topic, status, value, report section (+ METRICS cols)
    score: dict[str, float] | None = None  # METRICS only


def metrics_score(table: pd.DataFrame) -> dict[str, float]:
    """METRICS score over the items the run answers, plus its bounds over the unknown ones.

    ``score`` = sum of weights answered yes / sum of weights answered yes or no (the official
    tool's formula; "n/a" items are left out). ``low`` counts every unknown item as "no",
    ``high`` as "yes": the authors' answers can only move the score within [low, high].
    """
    w = pd.to_numeric(table["weight"])
    v = table["verdict"]
    yes, no, unk = w[v == YES].sum(), w[v == NO].sum(), w[v == UNKNOWN].sum()
    total = yes + no + unk
    return {
        "score": 100 * yes / (yes + no) if yes + no else math.nan,
        "low": 100 * yes / total if total else math.nan,
        "high": 100 * (yes + unk) / total if total else math.nan,
        "answered": int((v.isin([YES, NO])).sum()),
        "unknown": int((v == UNKNOWN).sum()),
    }


def fill_checklists(run: RunArtifacts, ev: EvaluationResult) -> list[FilledChecklist]:
    """Fill TRIPOD+AI, CLAIM 2024 and METRICS from the run.

    Parameters
    ----------
    run : RunArtifacts
    ev : EvaluationResult

    Returns
    -------
    list of FilledChecklist
    """
    facts = _Facts(
        run=run,
        ev=ev,
        methods={i.topic: i.text for i in methods_summary(run, ev)},
        calibration=calibration_summary(run.predictions, ev.main_models),
        flow=flow_table(run),
    )
    out = []
    for name, title in CHECKLISTS.items():
        items = load_checklist(name)
        rows = []
        for r in items.itertuples():
            fn = _ANSWERS.get(r.answer) if r.answer else None
            if r.answer and fn is None:
                raise KeyError(f"checklist {name} item {r.item}: unknown answer key {r.answer!r}")
            status, value = fn(facts) if fn else (AUTHOR, "")
            row = {"item": r.item, "section": r.section, "topic": r.topic}
            if name == "metrics":
                verdict = status if status in (YES, NO, NA) else UNKNOWN
                row |= {"weight": float(r.weight), "verdict": verdict}
                status = FILLED if verdict in (YES, NO, NA) else AUTHOR
            # Only a filled item points at a section (an absent one would be a dead link).
            anchor = r.anchor if status in (FILLED, PARTLY) else ""
            row |= {"status": status, "value": value, "report section": anchor}
            rows.append(row)
        table = pd.DataFrame(rows)
        score = metrics_score(table) if name == "metrics" else None
        out.append(FilledChecklist(name, title, table, score))
    return out


def _markdown(c: FilledChecklist) -> str:
    cols = list(c.table.columns)
    lines = [f"# {c.title}: filled from the run", ""]
    if c.score:
        lines += [_score_sentence(c.score), ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in c.table.iterrows():
        cells = [str(r[k]).replace("|", "\\|").replace("\n", " ") for k in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _score_sentence(s: dict[str, float]) -> str:
    return (
        f"METRICS score over the {s['answered']} items the run answers: {s['score']:.1f}%. "
        f"{s['unknown']} items need the authors' answer; with them the score lies between "
        f"{s['low']:.1f}% (all no) and {s['high']:.1f}% (all yes)."
    )


def write_checklists(layout: RunLayout, filled: list[FilledChecklist]) -> list[Path]:
    """Write ``report/checklists/<name>.csv`` and ``.md`` for each checklist."""
    paths = []
    for c in filled:
        csv_path = layout.report_checklist(c.name, ".csv")
        with atomic_path(csv_path) as tmp:
            c.table.to_csv(tmp, index=False)
        md_path = layout.report_checklist(c.name, ".md")
        atomic_write_text(md_path, _markdown(c))
        paths += [csv_path, md_path]
    return paths


_STATUS_CLASS = {FILLED: "status-filled", PARTLY: "status-partly", AUTHOR: "status-author"}


def checklists_section(filled: list[FilledChecklist]) -> str:
    """HTML of the "Reporting checklists" section: one table per checklist."""
    html = (
        '<p class="note">Every item with its official number and a short topic (read the full '
        "wording in the checklist's paper). Status: filled from the run, partly filled (the "
        "author completes it), or for the author to complete; the last column names the report "
        "section that shows it. Also in report/checklists/*.csv and *.md.</p>"
    )
    for c in filled:
        counts = c.table["status"].value_counts()
        summary = ", ".join(f"{int(counts.get(s, 0))} {s}" for s in (FILLED, PARTLY, AUTHOR))
        html += f"<h3>{esc(c.title)}</h3><p class='note'>{esc(summary)}.</p>"
        if c.score:
            html += f"<p><b>{esc(_score_sentence(c.score))}</b></p>"
        head = ["Item", "Topic", "Status", "From the run", "Section"]
        if c.name == "metrics":
            head = ["Item", "Topic", "Weight", "Answer", "Status", "From the run", "Section"]
        rows = []
        for _, r in c.table.iterrows():
            sec = r["report section"]
            link = f'<a href="#{esc(sec)}">{esc(sec)}</a>' if sec else ""
            status = f'<span class="{_STATUS_CLASS.get(r.status, "")}">{esc(r.status)}</span>'
            cells = [esc(r["item"]), esc(r["topic"])]
            if c.name == "metrics":
                cells += [f"{r['weight']:.3f}", esc(r["verdict"])]
            cells += [status, esc(r["value"]), link]
            rows.append("<tr>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
        ths = "".join(f"<th>{h}</th>" for h in head)
        html += (
            f'<div class="tablewrap"><table class="checklist"><thead><tr>{ths}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>"
        )
    return html
