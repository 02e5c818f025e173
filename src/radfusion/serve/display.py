"""How the clinician page names and ranks things: clinical labels and units, which models
are flagged, and which single model's answer heads the result (plain radiomics feature
names: :func:`radfusion.radiomics.names.readable_feature_name`).

Pure functions of names and of the bundle's model card, so the page, the printout and
``GET /api/bundle`` say the same thing.
"""

from __future__ import annotations

from typing import Any

from radfusion.families import FAMILIES

__all__ = [
    "CLINICAL_LABELS",
    "clinical_label",
    "headline_model",
    "model_flags",
]

#: Plain label and unit of the clinical columns of the built-in cohorts (the paper's Table 1
#: and ``radfusion synth``). A column not listed is shown by its own name, without a unit.
CLINICAL_LABELS: dict[str, tuple[str, str | None]] = {
    "age": ("Age", "years"),
    "sex": ("Sex", None),
    "calcium": ("Serum calcium", "mmol/L"),
    "phosphate": ("Serum phosphate", "mmol/L"),
    "ipth": ("Intact PTH (iPTH)", "pmol/L"),
    "center": ("Imaging centre", None),
}

#: A threshold this close to 0 or 1 means the model's probabilities are bunched at one end.
DEGENERATE_THRESHOLD = 0.01


def clinical_label(column: str) -> dict[str, str | None]:
    """``label`` and ``unit`` of a clinical column (its own name and no unit by default)."""
    label, unit = CLINICAL_LABELS.get(column.lower(), (column, None))
    return {"label": label, "unit": unit}


def model_flags(
    entry: dict[str, Any],
    checked: dict[str, Any] | None,
    miscalibration: list[str] | None = None,
) -> list[str]:
    """Why a model's answer should not be trusted at face value (empty when none).

    Parameters
    ----------
    entry : dict
        The bundle's model entry (``threshold``).
    checked : dict, optional
        The model card's metrics on the split the threshold was chosen on (``brier``).
        Test metrics are never used: flags decide which model heads the result.
    miscalibration : list of str, optional
        The model card's miscalibration reasons on that split (the report's flag,
        :func:`radfusion.stats.miscalibration_reasons`); None for a bundle that predates
        them, which is then flagged on its Brier score alone.
    """
    flags = []
    t = float(entry["threshold"])
    if t <= DEGENERATE_THRESHOLD or t >= 1 - DEGENERATE_THRESHOLD:
        flags.append(
            f"degenerate threshold ({t:.4g}): its probabilities sit at one end of the scale"
        )
    if miscalibration:
        flags.append("miscalibrated on validation: " + "; ".join(miscalibration))
    elif miscalibration is None:
        # (imported here: radfusion.stats imports SciPy's statistics, seconds at start-up)
        from radfusion.stats.calibration import BRIER_UNINFORMATIVE

        brier = (checked or {}).get("brier")
        if brier is not None and brier >= BRIER_UNINFORMATIVE:
            flags.append(f"poorly calibrated (Brier {brier:.2f} on validation; 0.25 = a coin)")
    return flags


def headline_model(models: list[dict[str, Any]]) -> tuple[str | None, str]:
    """The one model whose answer heads the result, and why.

    The study chose one model per family by validation AUC; the headline is the chosen
    model with the best validation AUC among those not flagged (ties: the family order of
    :data:`~radfusion.families.FAMILIES`). Test metrics play no part.

    Parameters
    ----------
    models : list of dict
        ``model``, ``family``, ``family_label``, ``selected``, ``flags`` and ``validation``
        (``auc`` or None) per model.

    Returns
    -------
    (model name or None, reason)
    """
    order = {f: i for i, f in enumerate(FAMILIES)}
    chosen = [m for m in models if m["selected"]]
    usable = [m for m in chosen if not m["flags"]]
    if not usable:
        return None, "every chosen model is flagged (see the table): no single answer"

    def key(m: dict[str, Any]) -> tuple[float, int]:
        auc = (m.get("validation") or {}).get("auc")
        return (-(auc if auc is not None else -1.0), order.get(m["family"], len(order)))

    best = min(usable, key=key)
    auc = (best.get("validation") or {}).get("auc")
    why = (
        f"the chosen model with the best validation AUC ({auc:.3f})"
        if auc is not None
        else "validation AUCs are not recorded in this bundle: the first chosen model"
    )
    skipped = len(chosen) - len(usable)
    if skipped:
        why += f"; {skipped} flagged model(s) set aside"
    return best["model"], why
