"""Names, display order and colours of the study's models, shared by every figure.

A model keeps one colour in every figure of a run: the model selected in each family (the
paper's five main models plus the clinical + imaging model) takes its family's colour, every
other model its classifier's colour. The two palettes are disjoint, so Figure 3 (the seven
radiomics classifiers, one of them selected) and Figure 4 (the selected model per family)
never give two models the same colour, and the selected radiomics model looks the same in both.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import pandas as pd

from radfusion.config import CLASSIFIERS
from radfusion.families import FAMILIES, FAMILY_LABELS

__all__ = [
    "CLASSIFIER_COLORS",
    "FAMILIES",
    "FAMILY_COLORS",
    "FAMILY_LABELS",
    "SPLITS",
    "SPLIT_LABELS",
    "model_colors",
    "model_order",
]

# FAMILIES (display order) and FAMILY_LABELS (display names) come from radfusion.families
# and are re-exported here, next to the splits and colours they go with.
SPLITS = ("train", "val", "test")
SPLIT_LABELS = {"train": "Training", "val": "Validation", "test": "Test"}

# Saturated, colour-blind-distinguishable hues for the selected (main) models.
FAMILY_COLORS = {
    "radiomics": "#1f5fa8",  # blue
    "1ch": "#e08214",  # orange
    "2ch": "#1b9e4b",  # green
    "merged1": "#d62728",  # red
    "merged2": "#7b3294",  # purple
    "stacked": "#c51b7d",  # magenta
    "clinical": "#222222",  # near black
}
# Hues not used by any family: non-selected classifiers (Figure 3, Appendix 3).
CLASSIFIER_COLORS = {
    "LR": "#17becf",  # cyan
    "SVM": "#e377c2",  # pink
    "KNN": "#bcbd22",  # olive
    "RF": "#8c564b",  # brown
    "MLP": "#7f7f7f",  # grey
    "XGBoost": "#f2b701",  # amber
    "LightGBM": "#3b3eac",  # indigo
}
# Fallback for classifiers outside the zoo (e.g. a user-added one), chosen by name hash.
_EXTRA_COLORS = ("#80b1d3", "#fb8072", "#b3de69", "#bc80bd", "#ffb347", "#8dd3c7", "#a6761d")


def _classifier_rank(name: str) -> int:
    return CLASSIFIERS.index(name) if name in CLASSIFIERS else len(CLASSIFIERS)


def model_order(preds: pd.DataFrame) -> list[str]:
    """Models of a predictions table in display order.

    Families in :data:`FAMILIES` order (unknown families last, alphabetically), then the
    classifier zoo's order within a family, then the model name.

    Parameters
    ----------
    preds : pandas.DataFrame
        Predictions with ``model``, ``family`` and ``classifier`` columns.

    Returns
    -------
    list of str
    """
    meta = preds[["model", "family", "classifier"]].drop_duplicates("model")
    fam_rank = {f: i for i, f in enumerate(FAMILIES)}
    keyed = sorted(
        meta.itertuples(index=False),
        key=lambda r: (
            fam_rank.get(r.family, len(FAMILIES)),
            str(r.family),
            _classifier_rank(str(r.classifier)),
            str(r.model),
        ),
    )
    return [str(r.model) for r in keyed]


def _fallback(name: str) -> str:
    return _EXTRA_COLORS[zlib.crc32(name.encode()) % len(_EXTRA_COLORS)]


def model_colors(preds: pd.DataFrame, models: Iterable[str] | None = None) -> dict[str, str]:
    """One colour per model, the same in every figure of a run.

    Parameters
    ----------
    preds : pandas.DataFrame
        Predictions with ``model``, ``family``, ``classifier`` and ``selected`` columns.
    models : iterable of str, optional
        Restrict to these models (default: all).

    Returns
    -------
    dict
        Model name -> hex colour. The selected model of a family gets
        :data:`FAMILY_COLORS` ``[family]``; any other model
        :data:`CLASSIFIER_COLORS` ``[classifier]``; names outside both a fixed colour
        derived from the name (so still stable between figures and runs).
    """
    meta = preds.drop_duplicates("model").set_index("model")
    wanted = model_order(preds) if models is None else list(models)
    out: dict[str, str] = {}
    for name in wanted:
        if name not in meta.index:
            out[name] = _fallback(name)
            continue
        row = meta.loc[name]
        family, clf = str(row["family"]), str(row["classifier"])
        if bool(row["selected"]) and family in FAMILY_COLORS:
            out[name] = FAMILY_COLORS[family]
        elif clf in CLASSIFIER_COLORS:
            out[name] = CLASSIFIER_COLORS[clf]
        else:
            out[name] = _fallback(name)
    return out
