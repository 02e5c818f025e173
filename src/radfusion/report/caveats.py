"""The caveats box: limitations a reader must know before trusting the numbers, derived from
the run's own records (configuration, selection records, tuning notes, the evaluation)."""

from __future__ import annotations

from radfusion.evaluation.run import EvaluationResult
from radfusion.evaluation.runfolder import RunArtifacts
from radfusion.families import FAMILY_LABELS, ModelId
from radfusion.report.calibration import calibration_summary, flagged_models
from radfusion.report.methods import _read_source, memorisation_warnings, synthetic_sentence
from radfusion.report.samplesize import riley_results, sample_size_table, training_events

__all__ = ["caveats"]


def _riley_caveat(run: RunArtifacts) -> list[str]:
    """One line when the training set is below Riley et al.'s criterion (i) for a family."""
    results = riley_results(run, run.config)
    if isinstance(results, str):
        return []
    n, _ = training_events(run, run.config)
    short = [
        f"{FAMILY_LABELS.get(f, f)} ({r.parameters} candidate features: n >= {r.n_shrinkage})"
        for f, stage, r in results
        if stage == "candidate" and "i" in r.unmet(n)
    ]
    if not short:
        return []
    return [
        f"Sample size: the training set ({n} cases) is below Riley et al.'s criterion (i) "
        f"(expected shrinkage >= 0.9) for {'; '.join(short)}. Expect optimism; the internal "
        "test-set estimates are the ones to read."
    ]


def caveats(run: RunArtifacts, ev: EvaluationResult) -> list[str]:
    """Limitations a reader must know before trusting the numbers.

    Parameters
    ----------
    run : RunArtifacts
    ev : EvaluationResult

    Returns
    -------
    list of str
    """
    cfg = run.config
    e = cfg.evaluation
    out: list[str] = []
    if synthetic_sentence(run):
        out.append(synthetic_sentence(run))
    for item in flagged_models(calibration_summary(run.predictions, ev.main_models)):
        out.append(
            f"Poorly calibrated: {item}. Its probabilities must not be read as risks; "
            "recalibrate before any clinical use."
        )
    if cfg.augment.enabled and cfg.augment.augment_validation:
        out.append(
            "The validation set was augmented (augment.augment_validation = true, as in the "
            "paper): models were selected, stopped early"
            + (" and thresholded" if e.threshold_source == "val" else "")
            + " on data containing flipped and noised copies of the same lesions. Validation "
            "metrics are optimistic; rely on the test set."
        )
    sizes = sample_size_table(run, cfg)
    ev_col = next(c for c in sizes.columns if c.startswith("Events"))
    ne_col = next(c for c in sizes.columns if c.startswith("Non-events"))
    for _, r in sizes.iterrows():
        if r["Set"] == "All":
            continue
        k = int(min(r[ev_col], r[ne_col]))
        if k < 10:
            out.append(
                f"{r['Set']} set: only {k} case(s) in the smaller class; confidence intervals "
                "are wide and DeLong tests have little power."
            )
    train_events = sizes.loc[sizes["Set"] == "Training", ev_col]
    if len(train_events):
        e_tr = int(min(train_events.iloc[0], sizes.loc[sizes["Set"] == "Training", ne_col].iloc[0]))
        for fam, sel in run.selections.items():
            k = (sel.get("counts") or {}).get("lasso")
            if k and e_tr / k < 10:
                out.append(
                    f"{FAMILY_LABELS.get(fam, fam)}: {k} selected features for {e_tr} training "
                    f"events of the smaller class ({e_tr / k:.1f} per feature, under 10): high "
                    "risk of overfitting."
                )
    out.extend(_riley_caveat(run))
    for fam, cv in run.cv_results.items():
        for _, r in cv.iterrows():
            note = r.get("tuning_note")
            if isinstance(note, str) and note:
                out.append(
                    f"{ModelId(fam, str(r['classifier'])).name} hyperparameter tuning: {note}; "
                    "its inner-CV AUC rests on those folds only."
                )
    src = _read_source(run.layout.model_source("stacked"))
    if src.get("mode") == "blend":
        out.append(
            "Stacked fusion was fitted on the validation set (fusion.stacking = blend): its "
            "validation metrics are no longer an unbiased estimate; use its test metrics."
        )
    out.extend(memorisation_warnings(ev))
    if e.selection_split == "val":
        out.append(
            "The best classifier of each family was chosen on validation AUC, so the selected "
            "models' validation metrics are optimistically biased; the test set is the unbiased "
            "estimate."
        )
    if e.threshold == "youden" and e.threshold_source == "train":
        m = ev.metrics
        overfit = m[(m["split"] == "train") & (m["auc"] >= 0.99) & m["model"].isin(ev.main_models)]
        if len(overfit):
            out.append(
                f"{', '.join(overfit['model'])}: training AUC >= 0.99, so the Youden threshold "
                "chosen on training scores may transfer poorly to new cases."
            )
    if cfg.split.method != "center":
        out.append(
            "Internal validation only: all sets come from one pooled cohort split at random, so "
            "performance on other centres, scanners or populations is unknown."
        )
    out.append(
        "Many pairwise DeLong tests are reported without adjustment for multiple comparisons."
    )
    fams = set(run.predictions["family"])
    missing = [FAMILY_LABELS[f] for f in ("1ch", "2ch", "merged1", "merged2") if f not in fams]
    if missing:
        out.append(f"Not in this run: {', '.join(missing)}.")
    if any(f in fams for f in ("1ch", "2ch")) and cfg.deep.pretrained_weights is None:
        out.append("The deep-learning arms were trained from random initialisation.")
    for fam, sel in run.selections.items():
        if sel.get("icc_skipped"):
            out.append(f"{FAMILY_LABELS.get(fam, fam)}: ICC filter skipped ({sel['icc_skipped']}).")
    fp = run.fingerprint
    if not (fp.get("data_dates") or fp.get("date_range")):
        out.append("Dates of data collection are not recorded in the run; report them.")
    return out
