"""How the clinician page names and ranks things: plain feature names, clinical labels and
units, and which single model's answer heads the result.

Pure functions of names and of the bundle's model card, so the page, the printout and
``GET /api/bundle`` say the same thing.
"""

from __future__ import annotations

import re
from typing import Any

from radfusion.families import FAMILIES

__all__ = [
    "CLINICAL_LABELS",
    "clinical_label",
    "headline_model",
    "model_flags",
    "readable_feature_name",
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
#: Brier score at or above which a model is flagged as poorly calibrated (0.25 is what a
#: constant guess of 0.5 scores).
POOR_BRIER = 0.25

_FEATURE_CLASSES = {
    "firstorder": "First order",
    "shape": "Shape",
    "shape2D": "Shape 2D",
    "glcm": "GLCM",
    "glrlm": "GLRLM",
    "glszm": "GLSZM",
    "gldm": "GLDM",
    "ngtdm": "NGTDM",
}
_IMAGE_TYPES = {
    "original": "",
    "square": "Square",
    "squareroot": "Square root",
    "logarithm": "Logarithm",
    "exponential": "Exponential",
    "gradient": "Gradient",
}
#: Feature-name words kept in capitals (PyRadiomics' abbreviations).
_ACRONYMS = {"imc1": "IMC1", "imc2": "IMC2", "idm": "IDM", "idmn": "IDMN", "idn": "IDN",
             "id": "ID", "mcc": "MCC", "2d": "2D", "3d": "3D"}  # fmt: skip
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z0-9])|(?<=[0-9])(?=[A-Z][a-z])|(?<=[A-Z])(?=[A-Z][a-z])")


def _words(camel: str) -> str:
    if camel.lower() in _ACRONYMS:  # Imc1, Idmn: one abbreviation, not words
        return _ACRONYMS[camel.lower()]
    words = _CAMEL.sub(" ", camel).split()
    out = []
    for i, w in enumerate(words):
        low = w.lower()
        if low in _ACRONYMS:
            out.append(_ACRONYMS[low])
        elif re.fullmatch(r"\d+", w) and i + 1 < len(words) and words[i + 1] == "Percentile":
            out.append(f"{w}th")
        else:
            out.append(w.capitalize() if i == 0 else low)
    return " ".join(out)


def _image_type(code: str) -> str | None:
    if code in _IMAGE_TYPES:
        return _IMAGE_TYPES[code]
    if m := re.fullmatch(r"log-sigma-(\d+)-(\d+)-mm-[23]D", code):
        sigma = m.group(1) + ("" if m.group(2) == "0" else "." + m.group(2))
        return f"LoG σ={sigma}"
    if m := re.fullmatch(r"wavelet-([LH]+)", code):
        return f"Wavelet {m.group(1)}"
    if m := re.fullmatch(r"lbp-([23]D)(?:-(.+))?", code):
        return f"LBP {m.group(1)}" + (f" {m.group(2)}" if m.group(2) else "")
    return None


def readable_feature_name(name: str) -> str:
    """A PyRadiomics feature name in words a clinician can read.

    ``log-sigma-5-0-mm-3D_glrlm_RunVariance`` -> ``LoG σ=5 · GLRLM · Run variance``;
    ``original_firstorder_10Percentile`` -> ``First order · 10th percentile``. Names that are
    not PyRadiomics' (deep features, clinical columns) come back unchanged.
    """
    parts = name.split("_")
    if len(parts) != 3 or parts[1] not in _FEATURE_CLASSES:
        return name
    image = _image_type(parts[0])
    if image is None:
        return name
    pieces = [image, _FEATURE_CLASSES[parts[1]], _words(parts[2])]
    return " · ".join(p for p in pieces if p)


def clinical_label(column: str) -> dict[str, str | None]:
    """``label`` and ``unit`` of a clinical column (its own name and no unit by default)."""
    label, unit = CLINICAL_LABELS.get(column.lower(), (column, None))
    return {"label": label, "unit": unit}


def model_flags(entry: dict[str, Any], checked: dict[str, Any] | None) -> list[str]:
    """Why a model's answer should not be trusted at face value (empty when none).

    Parameters
    ----------
    entry : dict
        The bundle's model entry (``threshold``).
    checked : dict, optional
        The model card's metrics on the split the threshold was chosen on (``brier``).
        Test metrics are never used: flags decide which model heads the result.
    """
    flags = []
    t = float(entry["threshold"])
    if t <= DEGENERATE_THRESHOLD or t >= 1 - DEGENERATE_THRESHOLD:
        flags.append(
            f"degenerate threshold ({t:.4g}): its probabilities sit at one end of the scale"
        )
    brier = (checked or {}).get("brier")
    if brier is not None and brier >= POOR_BRIER:
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
