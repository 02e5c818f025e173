"""The model card of a bundle: what its models were trained on and how well they did.

Written into ``bundle.json`` (key ``card``) by :func:`radfusion.bundle.export_bundle` from the
run folder, so that whoever scores a new patient sees, next to the result, the cohort
(size, centres, dates when the manifest records them), each model's test AUC with its
95 % CI, the clinical values seen in training (the web form's ranges and categories) and
the intended use. Only aggregate numbers are stored: no case id, no patient id.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from radfusion.config import StudyConfig
from radfusion.layout import RunLayout

__all__ = ["model_card"]

#: Manifest columns read as acquisition dates when present.
DATE_COLUMNS = ("date", "exam_date", "study_date", "acquisition_date")


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _clinical_ranges(train: pd.DataFrame, cfg: StudyConfig) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for col in cfg.data.clinical.numeric:
        if col not in train.columns:
            continue
        v = pd.to_numeric(train[col], errors="coerce")
        out[col] = {
            "kind": "numeric",
            "min": _num(v.min()),
            "max": _num(v.max()),
            "median": _num(v.median()),
            "missing": int(v.isna().sum()),
        }
    for col in cfg.data.clinical.categorical:
        if col not in train.columns:
            continue
        v = train[col].dropna().astype(str)
        v = v[v.str.strip() != ""]
        out[col] = {
            "kind": "categorical",
            "categories": sorted(v.unique().tolist()),
            "missing": int(len(train) - len(v)),
        }
    return out


def _split_metrics(run_dir: Path, split: str) -> dict[str, dict[str, Any]]:
    path = RunLayout(run_dir).metrics
    if not path.is_file():
        return {}
    m = pd.read_csv(path)
    m = m[m["split"] == split]
    return {
        str(r["model"]): {
            "auc": _num(r.get("auc")),
            "auc_low": _num(r.get("auc_low")),
            "auc_high": _num(r.get("auc_high")),
            "brier": _num(r.get("brier")),
            "n": int(r["n"]),
            "n_positive": int(r["n_pos"]),
        }
        for _, r in m.iterrows()
    }


def model_card(run_dir: str | Path) -> dict[str, Any]:
    """Aggregate facts about a finished run for its bundle's model card.

    Parameters
    ----------
    run_dir : Path
        A run folder with ``config.yaml``, ``cases.csv``, ``fingerprint.json`` and (after
        the evaluation stage) ``evaluation/metrics.csv``.

    Returns
    -------
    dict
        ``created``, ``cohort`` (images, groups, per label, per split, per centre, date range),
        ``test`` (model -> AUC, CI, Brier, n), ``validation`` (the same on the split
        the thresholds were chosen on), ``clinical`` (training ranges / categories),
        ``intended_use``, ``caveats`` and, when the run checked its radiomics against the
        IBSI digital phantom, ``feature_standardisation`` (the report's one-line statement).
        JSON-serialisable.
    """
    run_dir = Path(run_dir)
    layout = RunLayout(run_dir)
    cfg = StudyConfig.from_yaml(layout.config)
    fp_path = layout.fingerprint
    fp = json.loads(fp_path.read_text()) if fp_path.is_file() else {}
    cases = pd.read_csv(layout.cases, dtype=str, keep_default_na=False)
    train = cases[cases["split"] == "train"] if "split" in cases.columns else cases
    train = train.replace("", float("nan"))
    negative, positive = cfg.evaluation.class_names
    cohort: dict[str, Any] = {
        "images": int(fp.get("n_cases", len(cases))),
        "groups": fp.get("n_groups"),
        "group_column": fp.get("group_column"),
        "per_label": {
            (positive if k == "1" else negative): int(v)
            for k, v in fp.get("cases_per_label", {}).items()
        },
        "per_split": {s: int(sum(d.values())) for s, d in fp.get("cases_per_split", {}).items()},
    }
    if "center" in cases.columns:
        cohort["centres"] = {str(k): int(v) for k, v in cases["center"].value_counts().items()}
    for col in DATE_COLUMNS:
        if col in cases.columns:
            d = pd.to_datetime(cases[col], errors="coerce").dropna()
            if len(d):
                cohort["dates"] = [d.min().date().isoformat(), d.max().date().isoformat()]
            break
    test = _split_metrics(run_dir, "test")
    n_test_pos = max((t["n_positive"] for t in test.values()), default=0)
    caveats = [
        f"Trained and tested on {cohort['images']} images"
        + (f" from {len(cohort['centres'])} centre(s)" if "centres" in cohort else "")
        + "; performance on other scanners, centres or populations is unknown.",
        f"The threshold was chosen on the {cfg.evaluation.threshold_source} split "
        f"({cfg.evaluation.threshold} rule), never on test.",
        "Scores depend on the ROI: outline the lesion as in the training data.",
    ]
    if n_test_pos < 10:
        caveats.append(
            f"The test set holds only {n_test_pos} {positive} case(s): test AUCs are imprecise "
            "(see their confidence intervals)."
        )
    card: dict[str, Any] = {
        "created": fp.get("created"),
        "cohort": cohort,
        "test": test,
        # the split the thresholds were chosen on: what may rank and flag models
        "validation": _split_metrics(run_dir, cfg.evaluation.threshold_source),
        "clinical": _clinical_ranges(train, cfg),
        "intended_use": (
            f"Research decision support: estimates the probability of {positive} "
            f"(versus {negative}) for a lesion outlined on an ultrasound image. "
            "Not a diagnosis; not a medical device."
        ),
        "caveats": caveats,
    }
    ibsi = _ibsi_line(layout)
    if ibsi:
        card["feature_standardisation"] = ibsi
    return card


def _ibsi_line(layout: RunLayout) -> str | None:
    """The IBSI digital-phantom statement the radiomics stage wrote (``radiomics/ibsi.json``)."""
    try:
        line = json.loads(layout.radiomics_ibsi_summary.read_text()).get("line")
    except (OSError, ValueError, AttributeError):
        return None
    return str(line) if line else None
