"""PyRadiomics feature names in words a clinician can read.

``log-sigma-5-0-mm-3D_glrlm_RunVariance`` -> ``LoG σ=5 · GLRLM · Run variance``. Pure
string work (no PyRadiomics import), used by the clinician page, its printout, and the
report's importance plots and tables.
"""

from __future__ import annotations

import re

__all__ = ["readable_feature_name"]

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
