"""The report's sample-size items: cases and events per set, events per variable and the
minimum sample size of Riley et al. for each family's candidate and selected predictors.

The Riley criteria (:mod:`radfusion.stats.samplesize`) are computed after the fact from the
cohort's prevalence, the number of candidate predictors at each stage and an anticipated
Cox-Snell R² (``evaluation.sample_size_r2``, else a conservative 15% of its maximum), and
compared with the training set, on which every model was developed.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from radfusion.config import StudyConfig
from radfusion.evaluation.palette import SPLIT_LABELS, SPLITS
from radfusion.evaluation.runfolder import RunArtifacts
from radfusion.families import FAMILY_LABELS, SELECTION_FAMILIES
from radfusion.stats.samplesize import DEFAULT_R2_FRACTION, RileySampleSize, riley_binary

__all__ = [
    "RILEY_TOPIC",
    "events_per_variable",
    "riley_results",
    "riley_statement",
    "riley_table",
    "sample_size_statement",
    "sample_size_table",
    "training_events",
]

#: Methods topic (and checklist source) of the Riley criteria.
RILEY_TOPIC = "Minimum sample size (Riley et al.)"
_STAGES = (("input", "candidate"), ("lasso", "selected"))


def sample_size_table(run: RunArtifacts, cfg: StudyConfig) -> pd.DataFrame:
    """Cases and events per split (from ``cases.csv``, else the predictions).

    Returns
    -------
    pandas.DataFrame
        ``Set, Cases, Events (<class 1>), Non-events (<class 0>), Prevalence`` and a
        ``Patients`` column when ``cases.csv`` has ``patient_id``.
    """
    c0, c1 = cfg.evaluation.class_names
    df = run.cases if run.cases is not None else run.predictions.drop_duplicates("case_id")
    rows = []
    for split in [*SPLITS, "all"]:
        sub = df if split == "all" else df[df["split"].astype(str) == split]
        if sub.empty:
            continue
        n = len(sub)
        k = int(pd.to_numeric(sub["label"]).sum())
        row: dict[str, Any] = {"Set": "All" if split == "all" else SPLIT_LABELS[split]}
        row["Cases"] = n
        if "patient_id" in sub.columns and sub["patient_id"].notna().all():
            row["Patients"] = int(sub["patient_id"].nunique())
        row[f"Events ({c1})"] = k
        row[f"Non-events ({c0})"] = n - k
        row["Prevalence"] = f"{100 * k / n:.1f}%"
        rows.append(row)
    return pd.DataFrame(rows)


def training_events(run: RunArtifacts, cfg: StudyConfig) -> tuple[int, int]:
    """Training cases and events of the smaller class (for events per variable)."""
    sizes = sample_size_table(run, cfg)
    ev_col = next(c for c in sizes.columns if c.startswith("Events"))
    ne_col = next(c for c in sizes.columns if c.startswith("Non-events"))
    tr = sizes[sizes["Set"] == "Training"]
    if tr.empty:
        return 0, 0
    return int(tr["Cases"].iloc[0]), int(min(tr[ev_col].iloc[0], tr[ne_col].iloc[0]))


def events_per_variable(run: RunArtifacts, cfg: StudyConfig) -> pd.DataFrame:
    """Candidate and selected predictors per family with events per variable (EPV).

    EPV = training events of the smaller class / predictors; below 10 is a classic warning
    sign of overfitting (Peduzzi 1996), which penalised selection only partly offsets.

    Returns
    -------
    pandas.DataFrame
        ``Family, Candidate predictors, EPV (candidates), Selected predictors,
        EPV (selected)``; empty without selection records.
    """
    _, events = training_events(run, cfg)
    rows = []
    for fam in SELECTION_FAMILIES:
        counts = (run.selections.get(fam) or {}).get("counts") or {}
        cand, kept = counts.get("input"), counts.get("lasso")
        if not cand:
            continue
        rows.append(
            {
                "Family": FAMILY_LABELS.get(fam, fam),
                "Candidate predictors": int(cand),
                "EPV (candidates)": f"{events / int(cand):.2f}",
                "Selected predictors": "" if kept is None else int(kept),
                "EPV (selected)": f"{events / int(kept):.1f}" if kept else "",
            }
        )
    return pd.DataFrame(rows)


def sample_size_statement(run: RunArtifacts, cfg: StudyConfig) -> str:
    """The sample-size sentence: no planned size, and events per variable per family."""
    n, events = training_events(run, cfg)
    epv = events_per_variable(run, cfg)
    text = (
        f"No sample size was planned before the study (the cohort size was fixed by the "
        f"available data; see '{RILEY_TOPIC}' for what it supports). The training set has {n} "
        f"cases and {events} events of the smaller class"
    )
    if epv.empty:
        return text + "."
    parts = [
        f"{r['Family']} {r['Candidate predictors']} candidate features (EPV "
        f"{r['EPV (candidates)']})"
        + (
            f", {r['Selected predictors']} selected (EPV {r['EPV (selected)']})"
            if r["EPV (selected)"]
            else ""
        )
        for _, r in epv.iterrows()
    ]
    low = (epv["EPV (selected)"].replace("", "nan").astype(float) < 10).any()
    return (
        text
        + "; events per variable (EPV): "
        + "; ".join(parts)
        + (
            ". An EPV below 10 after selection signals a high risk of overfitting; the "
            "internal test-set estimates are the guard against it."
            if low
            else "."
        )
    )


def _prevalence(run: RunArtifacts, cfg: StudyConfig) -> float:
    """Outcome proportion of the whole cohort (all sets)."""
    sizes = sample_size_table(run, cfg)
    ev_col = next(c for c in sizes.columns if c.startswith("Events"))
    all_row = sizes[sizes["Set"] == "All"]
    if all_row.empty or not int(all_row["Cases"].iloc[0]):
        return float("nan")
    return int(all_row[ev_col].iloc[0]) / int(all_row["Cases"].iloc[0])


def riley_results(
    run: RunArtifacts, cfg: StudyConfig
) -> list[tuple[str, str, RileySampleSize]] | str:
    """Riley et al.'s criteria per family, for its candidate and its selected predictors.

    Returns
    -------
    list of (family, stage, RileySampleSize) or str
        ``stage`` is "candidate" or "selected"; a one-sentence reason instead when the
        criteria cannot be computed (one class, or an anticipated R² no model can reach).
    """
    phi = _prevalence(run, cfg)
    if not 0 < phi < 1:
        return "Riley et al.'s criteria need both classes in the cohort."
    out = []
    for fam in SELECTION_FAMILIES:
        counts = (run.selections.get(fam) or {}).get("counts") or {}
        for key, stage in _STAGES:
            p = counts.get(key)
            if not p:
                continue
            try:
                r = riley_binary(
                    parameters=int(p), prevalence=phi, r2_cs=cfg.evaluation.sample_size_r2
                )
            except ValueError as exc:
                return f"Riley et al.'s criteria not computed: {exc}."
            out.append((fam, stage, r))
    return out


def riley_table(run: RunArtifacts, cfg: StudyConfig) -> pd.DataFrame | None:
    """Required development-set size by each Riley criterion, per family and stage."""
    results = riley_results(run, cfg)
    if isinstance(results, str) or not results:
        return None
    n, events = training_events(run, cfg)
    rows = []
    for fam, stage, r in results:
        unmet = r.unmet(n)
        rows.append(
            {
                "Family": FAMILY_LABELS.get(fam, fam),
                "Predictors": f"{r.parameters} {stage}",
                "(i) shrinkage >= 0.9": r.n_shrinkage,
                "(ii) R² gap <= 0.05": r.n_r2_difference,
                "(iii) risk ± 0.05": r.n_overall_risk,
                "Required n": r.n_required,
                "Required events": f"{r.events:.0f}",
                "EPP": f"{r.epp:.1f}",
                f"Training set (n={n}, {events} events)": (
                    "meets all" if not unmet else "misses " + ", ".join(f"({c})" for c in unmet)
                ),
            }
        )
    return pd.DataFrame(rows)


def riley_statement(run: RunArtifacts, cfg: StudyConfig) -> str:
    """What the Riley criteria ask of this cohort and what follows, in plain sentences."""
    results = riley_results(run, cfg)
    if isinstance(results, str):
        return results
    if not results:
        return (
            "Riley et al.'s criteria not computed: no feature-selection record gives the "
            "number of candidate predictors."
        )
    r0 = results[0][2]
    r2 = cfg.evaluation.sample_size_r2
    source = (
        f"anticipated Cox-Snell R² {r2:g} (evaluation.sample_size_r2)"
        if r2 is not None
        else f"a conservative anticipated Cox-Snell R² of {r0.r2_cs:.3f}, "
        f"{DEFAULT_R2_FRACTION:.0%} of its maximum {r0.max_r2_cs:.3f} at this prevalence "
        "(set evaluation.sample_size_r2 from earlier models)"
    )
    n, events = training_events(run, cfg)
    head = (
        "Riley et al.'s minimum sample size for a binary-outcome prediction model (BMJ "
        "2020;368:m441; Stat Med 2019, doi 10.1002/sim.7992), computed after the fact: "
        f"outcome proportion {r0.prevalence:.3f}, {source}; criteria (i) expected shrinkage "
        ">= 0.9, (ii) apparent minus adjusted Nagelkerke R² <= 0.05, (iii) overall risk "
        f"within ± 0.05 (needs {r0.n_overall_risk})."
    )
    cand = [(f, r) for f, s, r in results if s == "candidate"]
    sel = [(f, r) for f, s, r in results if s == "selected"]
    need = "; ".join(
        f"{FAMILY_LABELS.get(f, f)}: {r.parameters} candidate features need n >= "
        f"{r.n_required} ({r.events:.0f} events, EPP {r.epp:.1f})"
        for f, r in cand
    )
    short_cand = [f for f, r in cand if r.unmet(n)]
    short_sel = [f for f, r in sel if r.unmet(n)]
    if not short_cand:
        verdict = f"The training set ({n} cases, {events} events) meets every criterion."
    else:
        names = ", ".join(FAMILY_LABELS.get(f, f) for f in short_cand)
        verdict = (
            f"The training set ({n} cases, {events} events of the smaller class) is below the "
            f"criteria for the candidate features of {names}"
            + (
                ", and still below them for the selected features"
                if short_sel
                else "; it meets them for the selected features only, but selection on the "
                "same data does not remove the optimism the candidate count brings"
            )
            + ". Expect optimism: training-set performance overstates what new patients will "
            "see and predicted risks are likely too extreme (calibration slope below 1). The "
            "internal test-set estimates are the ones to read."
        )
    return f"{head} {need}. {verdict} The criteria concern regression-type models; for the " + (
        "networks, with millions of weights, only the held-out test set speaks."
    )
