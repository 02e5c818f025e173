"""The methods summary, generated from the run's own records.

Every sentence is derived from ``config.yaml``, ``fingerprint.json``, ``versions.json``, the
selection records, ``cases.csv`` and the evaluation, never typed by hand, so the report cannot
drift from what was run. Items follow the topics a model-development study reports under
TRIPOD+AI (Collins GS et al., BMJ 2024;385:e078378); what the run folder cannot know (accrual
dates, eligibility criteria applied before the manifest) is stated as "not recorded".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from radfusion.config import StudyConfig
from radfusion.data.validate import duplicate_links
from radfusion.evaluation.metrics import families_present
from radfusion.evaluation.palette import SPLIT_LABELS, SPLITS
from radfusion.evaluation.run import EvaluationResult
from radfusion.evaluation.runfolder import RunArtifacts
from radfusion.families import (
    DEEP_ARMS,
    FAMILY_LABELS,
    MERGED_ARMS,
    SELECTION_FAMILIES,
)
from radfusion.layout import SYNTH_PARAMS_NAME
from radfusion.report.ibsi import ibsi_sentence
from radfusion.report.samplesize import (
    RILEY_TOPIC,
    riley_statement,
    riley_table,
    sample_size_statement,
    sample_size_table,
)
from radfusion.reproducibility import scope_sentence

__all__ = [
    "MEMORISED_AUC",
    "MethodsItem",
    "memorisation_warnings",
    "methods_summary",
    "selection_rule_text",
    "selection_table",
    "stacking_text",
    "subgroups_text",
    "synthetic_cohort",
    "synthetic_sentence",
]

NOT_RECORDED = "not recorded"
_SELECTION_STEPS = (
    ("input", "Input"),
    ("icc", "ICC"),
    ("spearman", "Spearman"),
    ("lasso", "LASSO"),
)


@dataclass(frozen=True)
class MethodsItem:
    """One reporting item: a topic, plain-text statements and optionally a table."""

    topic: str
    text: str
    table: pd.DataFrame | None = None
    table_name: str | None = None


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def selection_table(run: RunArtifacts) -> pd.DataFrame:
    """Features kept after each selection step, per family (the paper's 567 -> 77).

    Returns
    -------
    pandas.DataFrame
        ``Family, Input, ICC, Spearman, LASSO, C, ICC note``; steps not run are blank.
    """
    rows = []
    for fam in SELECTION_FAMILIES:
        sel = run.selections.get(fam)
        if sel is None:
            continue
        counts = sel.get("counts") or {}
        row: dict[str, Any] = {"Family": FAMILY_LABELS.get(fam, fam)}
        for key, name in _SELECTION_STEPS:
            v = counts.get(key)
            row[name] = "" if v is None else int(v)
        c = sel.get("C")
        row["LASSO C"] = f"{float(c):.3g}" if c is not None else ""
        row["ICC note"] = sel.get("icc_skipped") or ""
        rows.append(row)
    return pd.DataFrame(rows)


def synthetic_cohort(run: RunArtifacts) -> dict[str, Any] | None:
    """The ``synth.json`` beside the run's manifest when ``radfusion synth`` wrote the cohort.

    Returns
    -------
    dict or None
        The generator's recorded arguments and counts; None for a real cohort (or when the
        manifest is no longer where the fingerprint says).
    """
    manifest = run.fingerprint.get("manifest") or run.config.data.manifest
    if not manifest:
        return None
    params = Path(str(manifest)).parent / SYNTH_PARAMS_NAME
    data = _read_source(params) if params.is_file() else {}
    return data or None


def synthetic_sentence(run: RunArtifacts) -> str:
    """A plain statement that the cohort is simulated (empty for a real cohort)."""
    if synthetic_cohort(run) is None:
        return ""
    return (
        "SYNTHETIC DATA: the cohort was simulated by radfusion synth (no patient data); the "
        "numbers demonstrate the software, not a diagnostic accuracy."
    )


def subgroups_text(run: RunArtifacts) -> str:
    """What the report says about subgroup performance, matching what it shows."""
    if not run.layout.subgroups.is_file():
        return (
            "Performance by subgroup was not analysed (no centre or subgroup column in the cases)."
        )
    cols = list(dict.fromkeys(["center", *run.config.evaluation.subgroups]))
    bins = run.config.evaluation.subgroup_bins
    banded = "".join(
        f"; {c} in bands at {', '.join(f'{e:g}' for e in edges)}" for c, edges in bins.items()
    )
    return (
        f"AUC (95% DeLong CI), sensitivity and specificity of the selected models per centre "
        f"and subgroup ({', '.join(cols)}{banded}), where present in the cases; subgroups with "
        f"fewer than {run.config.evaluation.min_subgroup_events} cases of a class get no AUC. "
        "Descriptive only: no test of heterogeneity (section 'Per-centre and subgroup "
        "performance')."
    )


def _group_column(run: RunArtifacts, cfg: StudyConfig) -> str | None:
    if run.fingerprint.get("group_column"):
        return str(run.fingerprint["group_column"])
    if cfg.data.group_column:
        return cfg.data.group_column
    if run.cases is not None and "patient_id" in run.cases.columns:
        return "patient_id"
    return None


def _split_text(run: RunArtifacts, cfg: StudyConfig) -> str:
    s = cfg.split
    group = _group_column(run, cfg)
    grouped = f", grouped by {group} so no group straddles sets" if group else ""
    if s.method == "stratified":
        how = (
            f"Random split stratified by label into training / validation / test "
            f"({_pct(s.train)} / {_pct(s.val)} / {_pct(s.test)}){grouped}"
        )
    elif s.method == "column":
        how = "Fixed assignment from the manifest's split column"
    elif s.method == "center":
        held = s.test_center or "each centre in turn"
        how = f"Leave-centre-out: {held} held out as the external test set{grouped}"
    else:
        how = (
            f"Repeated stratified k-fold cross-validation ({s.n_splits} folds x "
            f"{s.n_repeats} repeats){grouped}"
        )
    links = duplicate_links(run.validation) if s.join_duplicates and s.method != "column" else []
    if links:
        how += (
            f"; {len(links)} cluster(s) of exact or near-duplicate images (pixel / perceptual "
            f"hash) with different {group or 'case'} identifiers were each kept in one group, "
            "so no image has a copy in another set"
        )
    chooser = (
        "The validation set served the networks' early stopping; the best classifier per "
        f"family was chosen by {selection_rule_text(cfg)}"
        if cfg.evaluation.selection_split != "val"
        else "The validation set chose the best classifier per family (by validation AUC) "
        "and the networks' early stopping"
    )
    return (
        f"{how}; seed {cfg.seed}. Every fitted step (feature selection, scaling, classifiers, "
        f"networks) was fitted on the training set only. {chooser}; the test set was used "
        "only for evaluation."
    )


def selection_rule_text(cfg: StudyConfig) -> str:
    """How the best classifier of each family was chosen, in words."""
    e = cfg.evaluation
    if e.selection_split == "cv":
        text = "the inner cross-validated AUC on the training set"
        if e.selection_rule == "1se":
            text += (
                " with the one-standard-error rule (the simplest classifier, in the order "
                "LR, SVM, KNN, RF, MLP, XGBoost, LightGBM, within one standard error of the best)"
            )
        return text
    return {"val": "validation AUC", "train": "training AUC"}[e.selection_split]


def stacking_text(run: RunArtifacts) -> str:
    """How the stacked fusion model was fitted (from ``models/stacked/source.json``)."""
    src = _read_source(run.layout.model_source("stacked"))
    if not src:
        return ""
    arms = ", ".join(
        f"{FAMILY_LABELS.get(a['family'], a['family'])} ({a['model']})" for a in src["arms"]
    )
    text = (
        f"Stacked fusion: a ridge-penalised logistic regression on the standardised logits of "
        f"the scores of {arms}"
        + (" and the clinical columns" if src.get("clinical") else "")
        + ", "
    )
    if src.get("mode") == "crossfit":
        text += (
            f"fitted on cross-fitted out-of-fold training scores ({src.get('folds')} folds "
            "grouped by patient and stratified by label: each arm refit, its hyperparameters "
            "re-tuned, and each network retrained, without the fold it scores). Validation, "
            "test and new cases are scored "
            "by each arm's model fitted on the whole training set."
        )
    else:
        text += (
            "fitted on the arms' validation scores (blend). The validation set is therefore no "
            "longer an unbiased estimate for the stacked model; its test metrics are."
        )
    return text


def memorisation_warnings(ev: EvaluationResult) -> list[str]:
    """Fused models whose training AUC is near 1 while an input arm's training AUC is too.

    A fused model that reaches training AUC ~1 on top of an arm that has memorised its
    training cases has learnt to trust that arm's in-sample evidence, which does not
    transfer; its validation and test AUC are what count.
    """
    m = ev.metrics
    tr = m[(m["split"] == "train") & m["model"].isin(ev.main_models)].set_index("family")["auc"]
    inputs = {**{f: [arm] for f, arm in MERGED_ARMS.items()}, "stacked": list(DEEP_ARMS)}
    out = []
    for fam, arms in inputs.items():
        if fam not in tr.index or not tr[fam] >= MEMORISED_AUC:
            continue
        hot = [a for a in arms if a in tr.index and tr[a] >= MEMORISED_AUC]
        if hot:
            names = ", ".join(f"{FAMILY_LABELS[a]} {tr[a]:.3f}" for a in hot)
            out.append(
                f"{FAMILY_LABELS[fam]}: training AUC {tr[fam]:.3f} while its input arm reaches "
                f"training AUC near 1 ({names}): the fused classifier can lean on memorised "
                "deep evidence; judge it on validation and test AUC."
            )
    return out


#: Training AUC at or above which a model is taken to have memorised its training cases.
MEMORISED_AUC = 0.98


def _radiomics_text(run: RunArtifacts, cfg: StudyConfig) -> str:
    params = cfg.radiomics.params
    if params == "paper":
        pfile = (
            "radiomics_paper.yaml (shipped with radfusion: shape2D 9 features + 93 "
            "first-order / GLCM / GLRLM / GLSZM / GLDM / NGTDM features on each of 6 images, "
            "Original and LoG sigma 1-5 mm = 567 features, as in the paper)"
        )
    else:
        pfile = Path(params).name
    n_in = (run.selections.get("radiomics") or {}).get("counts", {}).get("input")
    got = f"; {n_in} features per case were extracted" if n_in else ""
    version = (
        run.versions.get("pyradiomics") or run.versions.get("pyradiomics-bhklab") or NOT_RECORDED
    )
    return (
        f"PyRadiomics {version}, parameter file {pfile}, on the 2D ROI crop{got}."
        + ibsi_sentence(run)
    )


def _deep_text(run: RunArtifacts, cfg: StudyConfig, arms: list[str]) -> str:
    d = cfg.deep
    if not arms:
        return "No deep-learning arm in this run."
    init = (
        f"ImageNet weights from the local file {Path(d.pretrained_weights).name} (first "
        "convolution adapted to the input channels)"
        if d.pretrained_weights
        else "random initialisation (no pretrained weight file configured)"
    )
    parts = [
        f"ResNet{d.depth} (MONAI) arms: {', '.join(FAMILY_LABELS.get(a, a) for a in arms)}. "
        "1ch: the whole grey-scale image; 2ch: the image and its ROI mask stacked as channels.",
        f"Input {d.image_size} x {d.image_size} ({d.resize_mode}); {init}.",
        f"Up to {d.epochs} epochs, batch {d.batch_size}, {d.optimizer} (learning rate {d.lr:g}, "
        f"weight decay {d.weight_decay:g}), {d.scheduler} schedule, early stopping on "
        f"validation AUC (patience {d.patience}); class imbalance: {d.imbalance}.",
    ]
    for arm, h in run.histories.items():
        if "val_auc" in h and h["val_auc"].notna().any():
            best = h.loc[h["val_auc"].idxmax()]
            parts.append(
                f"{FAMILY_LABELS.get(arm, arm)}: {len(h)} epochs run, best validation AUC "
                f"{best['val_auc']:.3f} at epoch {int(best['epoch'])}."
            )
    sel = [run.selections.get(a) for a in arms]
    counts = [s.get("counts", {}).get("input") for s in sel if s]
    if counts:
        parts.append(
            f"Global-average-pool features ({counts[0]} per image) were z-scored, then "
            "filtered by Spearman, ICC and LASSO on the training set."
        )
    return " ".join(parts)


def _selection_text(cfg: StudyConfig) -> str:
    s = cfg.selection
    uni = (
        f" A Mann-Whitney U filter (p < {s.univariate_alpha:g}) was added." if s.univariate else ""
    )
    cap = f", at most {s.max_features} features kept" if s.max_features else ""
    return (
        f"Fitted on the training set only: ICC filter ({s.icc_form}, keep ICC > "
        f"{s.icc_threshold:g}, from the second reader's delineations), Spearman redundancy "
        f"filter (drop one of each pair with |rho| > {s.spearman_threshold:g}), then LASSO "
        f"(L1 logistic regression, {s.lasso_cs} penalties, {s.lasso_cv}-fold inner CV, "
        f"'{s.lasso_rule}' rule{cap}).{uni} Counts per step are in the table."
        + _harmonization_text(cfg)
    )


def _harmonization_text(cfg: StudyConfig) -> str:
    h = cfg.harmonization
    if h.method == "none":
        return ""
    cov = f", preserving {', '.join(h.covariates)}" if h.covariates else ""
    what = "radiomics features" if h.features == "radiomics" else "radiomics and deep features"
    return (
        f" After the ICC filter, the {what} were harmonised across centres ({h.batch_column}) "
        f"with ComBat (parametric empirical Bayes{cov}), fitted on the training cases only "
        "(and within every inner-CV fold) and applied unchanged to validation, test and new "
        "cases; cases from a centre unseen in training were not adjusted."
    )


def _models_text(run: RunArtifacts, cfg: StudyConfig) -> str:
    m = cfg.models
    text = (
        f"Classifiers: {', '.join(m.classifiers)}. Hyperparameters tuned by randomised search "
        f"({m.n_iter} draws per classifier, grid when smaller) with {m.cv}-fold stratified "
        f"(grouped) cross-validation inside the training set, scored by AUC; class weights "
        f"'{m.class_weight}'"
        + (
            "; sigmoid calibration cross-fitted on the training set (3 stratified folds, "
            "grouped by patient)"
            if m.calibrate
            else ""
        )
        + f". The best classifier per family was selected by {selection_rule_text(cfg)}."
    )
    if cfg.fusion.enabled:
        text += (
            " Early fusion: Merged model 1 = selected radiomics + 1ch deep features, Merged "
            "model 2 = selected radiomics + 2ch deep features, each through the classifier zoo."
        )
    if "clinical" in set(run.predictions["family"]):
        cols = ", ".join(cfg.data.clinical.all) or "none configured"
        text += (
            f" Clinical + imaging model: logistic regression on clinical columns ({cols}) and "
            "an imaging score"
        )
        src = _read_source(run.layout.model_source("clinical"))
        if src.get("imaging_family"):
            fam = FAMILY_LABELS.get(src["imaging_family"], src["imaging_family"])
            text += f" (the selected {fam} model, {src.get('imaging_classifier', '')}"
            text += f"; training scores {src['score']})" if src.get("score") else ")"
        text += "."
    stacked = stacking_text(run)
    if stacked:
        text += " " + stacked
    return text


def _read_source(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _imbalance_text(run: RunArtifacts, cfg: StudyConfig) -> str:
    a = cfg.augment
    if not a.enabled:
        aug = "No minority-class augmentation."
    else:
        where = (
            "training AND validation sets (as in the paper; validation metrics therefore "
            "include augmented copies of the same lesions and are optimistic)"
            if a.augment_validation
            else "training set only (validation and test sets hold original images only)"
        )
        aug = (
            f"The minority class was expanded {a.factor}x by horizontal flip, vertical flip "
            f"and Gaussian noise (SD {a.noise_std:g} of the intensity range) in the {where}."
        )
        copies = run.fingerprint.get("augmented_copies") or {}
        if copies:
            listed = ", ".join(
                f"{SPLIT_LABELS[k].lower()} {int(copies[k])}" for k in SPLITS if k in copies
            )
            aug += f" Augmented copies added: {listed}."
    return (
        f"{aug} Classifier class weights: '{cfg.models.class_weight}'; deep arms: "
        f"'{cfg.deep.imbalance}'. Metrics are computed on original (non-augmented) cases only."
    )


def _threshold_text(ev: EvaluationResult, cfg: StudyConfig) -> str:
    e = cfg.evaluation
    if e.threshold == "fixed":
        rule = f"A fixed threshold of {e.fixed_threshold:g} for every model"
    else:
        src = SPLIT_LABELS[e.threshold_source].lower()
        rule = f"Youden's J maximised on each model's {src}-set predictions"
    c1 = e.class_names[1]
    return (
        f"{rule}; the threshold is fixed before the test set is scored and never tuned on "
        f"it. A case is called {c1} when its probability is at or above the threshold "
        "(thresholds in the supplementary table)."
    )


def _performance_text(cfg: StudyConfig) -> str:
    e = cfg.evaluation
    auc_ci = (
        "DeLong's asymptotic interval"
        if e.ci_method == "delong"
        else f"a percentile bootstrap ({e.n_bootstrap} stratified resamples)"
    )
    return (
        f"AUC with 95% CI by {auc_ci}; ACC, SEN, SPE, PPV and NPV with Wilson score "
        f"intervals; F1 with a bootstrap interval ({e.n_bootstrap} resamples). AUCs compared by "
        "the two-sided paired DeLong test (no adjustment for multiple comparisons). Table 1: "
        "Shapiro-Wilk, then Welch's t-test or Mann-Whitney U for continuous variables; "
        "chi-square or Fisher's exact test for categorical ones. Significance at P < 0.05."
    )


def _eligibility_text(run: RunArtifacts) -> str:
    fp = run.fingerprint
    dropped = run.dropped or fp.get("dropped") or fp.get("excluded")
    if isinstance(dropped, dict) and dropped:
        items = [f"{k} ({v})" for k, v in list(dropped.items())[:8]]
        more = f" and {len(dropped) - 8} more" if len(dropped) > 8 else ""
        radf = f"{len(dropped)} case(s) dropped by input validation: {'; '.join(items)}{more}."
    elif isinstance(dropped, list) and dropped:
        more = f" and {len(dropped) - 8} more" if len(dropped) > 8 else ""
        listed = ", ".join(map(str, dropped[:8]))
        radf = f"{len(dropped)} case(s) dropped by input validation: {listed}{more}."
    else:
        radf = "No case was dropped by radfusion's input validation."
    originals = set(run.cases["case_id"]) if run.cases is not None else set()
    failed = {c: e for c, e in run.radiomics_failures.items() if c in originals}
    if failed:
        items = [f"{k} ({v})" for k, v in list(failed.items())[:8]]
        more = f" and {len(failed) - 8} more" if len(failed) > 8 else ""
        radf += (
            f" {len(failed)} case(s) excluded from the analysis because radiomics feature "
            f"extraction failed (run with --allow-failures): {'; '.join(items)}{more}. They "
            "and their augmented copies are left out of every model (radiomics, deep, "
            "fusion) and of the evaluation, so all models are compared on the same cases."
        )
    val = run.validation
    if val:
        radf += (
            f" Input validation checked {val.get('n_rows', NOT_RECORDED)} manifest rows: "
            f"{val.get('n_errors', 0)} error(s), {val.get('n_warnings', 0)} warning(s) "
            "(validation.json)."
        )
    return (
        f"Clinical inclusion and exclusion criteria: {NOT_RECORDED} in the run (applied before "
        f"the manifest; state them from the study protocol). {radf}"
    )


def _missing_text(run: RunArtifacts, cfg: StudyConfig) -> str:
    if run.cases is None:
        return f"{NOT_RECORDED} (no cases.csv)."
    cols = [c for c in cfg.data.clinical.all if c in run.cases.columns]
    if not cols:
        return "No clinical columns configured; images and ROIs are complete for every case."
    miss = {c: int(run.cases[c].isna().sum()) for c in cols}
    listed = ", ".join(f"{c} {k}" for c, k in miss.items())
    return (
        f"Missing values per clinical column: {listed}. Table 1 excludes missing values per "
        "variable (counts shown as 'Missing' rows). Every case has an image and an ROI "
        "(checked before the run)."
    )


def methods_summary(run: RunArtifacts, ev: EvaluationResult) -> list[MethodsItem]:
    """The methods summary of a run, one item per reporting topic.

    Parameters
    ----------
    run : RunArtifacts
    ev : EvaluationResult

    Returns
    -------
    list of MethodsItem
    """
    cfg = run.config
    fp = run.fingerprint
    preds = run.predictions
    c0, c1 = cfg.evaluation.class_names
    families = families_present(preds)
    arms = [a for a in ("1ch", "2ch") if a in families or a in run.histories]
    n_cases = fp.get("n_cases") or preds["case_id"].nunique()
    centers = ""
    if run.cases is not None and "center" in run.cases.columns:
        counts = run.cases["center"].value_counts().sort_index()
        centers = f" Centres: {', '.join(f'{k} (n={v})' for k, v in counts.items())}."
    manifest = fp.get("manifest") or (str(cfg.data.manifest) if cfg.data.manifest else None)
    sha = fp.get("manifest_sha256")
    dates = fp.get("data_dates") or fp.get("date_range")
    items = [
        MethodsItem(
            "Study type and objective",
            f"Development and internal validation of diagnostic prediction models "
            f"({', '.join(FAMILY_LABELS.get(f, f) for f in families)}) that classify "
            f"{c0} (label 0) versus {c1} (label 1) from one ultrasound image and lesion ROI "
            f"per case. Study name: {cfg.name}.",
        ),
        MethodsItem(
            "Data source",
            f"Cohort manifest {Path(manifest).name if manifest else NOT_RECORDED}"
            + (f" (SHA-256 {sha[:16]}...)" if sha else "")
            + f", {n_cases} images.{centers} Run created {fp.get('created', NOT_RECORDED)}."
            + (f" {synthetic_sentence(run)}" if synthetic_cohort(run) is not None else ""),
        ),
        MethodsItem(
            "Data dates",
            f"Start and end of data collection: {dates if dates else NOT_RECORDED}.",
        ),
        MethodsItem("Eligibility", _eligibility_text(run)),
        MethodsItem(
            "Outcome",
            f"Binary label from the manifest's label column: 0 = {c0}, 1 = {c1} (positive "
            "class). Reference standard as recorded by the investigators (histopathology in "
            "the paper); model outputs played no part in it.",
        ),
        MethodsItem(
            "Predictors",
            "The ultrasound image and the reader's ROI (radiomics and 2ch arms), the whole image "
            "(1ch arm)"
            + (
                f"; clinical columns {', '.join(cfg.data.clinical.all)} (Table 1"
                + (", clinical + imaging model)" if "clinical" in families else ")")
                if cfg.data.clinical.all
                else ""
            )
            + ".",
        ),
        MethodsItem(
            "Sample size and events",
            "Cases (images) and outcome events per set. " + sample_size_statement(run, cfg),
            sample_size_table(run, cfg),
            "sample_size",
        ),
        MethodsItem(
            RILEY_TOPIC, riley_statement(run, cfg), riley_table(run, cfg), "sample_size_riley"
        ),
        MethodsItem("Missing data", _missing_text(run, cfg)),
        MethodsItem("Data splitting", _split_text(run, cfg)),
        MethodsItem(
            "Preprocessing",
            "ROI bounding box from the mask's extreme points (top, bottom, left, right)"
            + (f" with a {cfg.preprocess.margin:.0%} margin" if cfg.preprocess.margin else "")
            + f", cropped and resized to {cfg.preprocess.size} x {cfg.preprocess.size} pixels, "
            + {
                "minmax": "intensities scaled to [0, 255] between the crop's 0.5th and 99.5th "
                "percentiles.",
                "zscore": "intensities z-scored within the crop.",
                "none": "raw intensities.",
            }[cfg.preprocess.normalization],
        ),
        MethodsItem("Class imbalance", _imbalance_text(run, cfg)),
        MethodsItem("Radiomics feature extraction", _radiomics_text(run, cfg)),
        MethodsItem("Deep learning", _deep_text(run, cfg, arms)),
        MethodsItem(
            "Feature selection",
            _selection_text(cfg),
            selection_table(run) if run.selections else None,
            "feature_selection" if run.selections else None,
        ),
        MethodsItem("Models and tuning", _models_text(run, cfg)),
        MethodsItem("Operating threshold", _threshold_text(ev, cfg)),
        MethodsItem("Performance measures", _performance_text(cfg)),
        MethodsItem(
            "Calibration and clinical utility",
            f"Reliability curves ({cfg.evaluation.calibration_bins} "
            f"{cfg.evaluation.calibration_strategy} bins, Wilson intervals in calibration.csv); "
            "Brier score, calibration-in-the-large and calibration slope with Wald 95% CIs "
            "(logistic recalibration on the logit), and a flag for poorly calibrated models; "
            "decision curves (net benefit against threshold probability, with treat-all and "
            "treat-none).",
        ),
        MethodsItem("Fairness and subgroups", subgroups_text(run)),
        MethodsItem(
            "Software and reproducibility",
            f"radfusion {run.versions.get('radfusion', NOT_RECORDED)}, Python "
            f"{run.versions.get('python', NOT_RECORDED)} on "
            f"{run.versions.get('platform', NOT_RECORDED)}; global seed "
            f"{run.versions.get('seed', cfg.seed)}. The full configuration is reproduced in the "
            "supplement; the run folder holds every intermediate result. "
            + scope_sentence(cfg.reproducibility),
            _versions_table(run),
            "software_versions",
        ),
    ]
    return items


def _versions_table(run: RunArtifacts) -> pd.DataFrame | None:
    v = {k: x for k, x in run.versions.items() if k != "compute"}
    if not v:
        return None
    compute = run.versions.get("compute") or {}
    if compute:  # what decides the last digits (reproducibility.compute_environment)
        v["CPU"] = compute.get("cpu", NOT_RECORDED)
        v["PyTorch CPU kernels"] = compute.get("torch_cpu_capability", NOT_RECORDED)
        v["PyTorch threads"] = compute.get("torch_threads", NOT_RECORDED)
        v["reproducibility mode"] = (compute.get("reproducibility") or {}).get("mode", NOT_RECORDED)
    return pd.DataFrame({"Component": list(v), "Version": [str(x) for x in v.values()]})
