"""The study's model families: codes, display order, names in the paper's words.

One source of truth for the pipeline (which writes the codes into ``predictions.parquet``) and
for evaluation and the report (which show the display names). Deliberately free of imports
from the rest of radfusion, so any module can use it.

Two kinds of names must not be confused:

* :data:`FAMILY_LABELS` -- how a family is *shown* (tables, figure titles, the report);
  free to follow the paper's wording.
* :func:`model_name` / :func:`deep_model_name` / :data:`CLINICAL_MODEL_NAME` -- the model names
  the pipeline *writes* into predictions ("Radiomics-LR", "Merged1-XGBoost", "1ch_ResNet18",
  "Clinical+imaging"). Runs, bundles and tests refer to models by these, so they never change.
"""

from __future__ import annotations

__all__ = [
    "CLINICAL_MODEL_NAME",
    "DEEP_ARMS",
    "FAMILIES",
    "FAMILY_LABELS",
    "MERGED_ARMS",
    "MODEL_NAME_PREFIXES",
    "SELECTION_FAMILIES",
    "STACKED_MODEL_NAME",
    "deep_model_name",
    "model_name",
]

#: Model families in the paper's order (Table 2, Figure 4), then radfusion's score-level
#: (stacked) fusion and the clinical model.
FAMILIES = ("radiomics", "1ch", "2ch", "merged1", "merged2", "stacked", "clinical")

#: Family code -> display name, in the paper's words.
FAMILY_LABELS = {
    "radiomics": "Radiomics",
    "1ch": "1ch ResNet",
    "2ch": "2ch ResNet",
    "merged1": "Merged model 1",
    "merged2": "Merged model 2",
    "stacked": "Stacked fusion",
    "clinical": "Clinical + imaging",
}

#: Families with a feature-selection stage (``stages/selection_<family>.json``). The deep arms
#: learn their features end to end and have no selection record.
SELECTION_FAMILIES = ("radiomics", "merged1", "merged2")

#: The deep arms: families scored by a network's own probability.
DEEP_ARMS = ("1ch", "2ch")

#: Early fusion: each Merged family -> the deep arm whose features join the radiomics ones.
MERGED_ARMS = {"merged1": "1ch", "merged2": "2ch"}

#: Prefix of the names of the zoo models of a family: ``<prefix>-<classifier>``.
MODEL_NAME_PREFIXES = {"radiomics": "Radiomics", "merged1": "Merged1", "merged2": "Merged2"}

#: Name of the one model of the ``clinical`` family.
CLINICAL_MODEL_NAME = "Clinical+imaging"

#: Name of the one model of the ``stacked`` family (a logistic meta-learner on the arms' scores).
STACKED_MODEL_NAME = "Stacked"


def model_name(family: str, classifier: str) -> str:
    """Name of a classifier-zoo model of a family, as written into predictions.

    Parameters
    ----------
    family : str
        A family with zoo models: a key of :data:`MODEL_NAME_PREFIXES`.
    classifier : str
        Zoo classifier ("LR", "XGBoost", ...).

    Returns
    -------
    str
        E.g. ``model_name("merged1", "XGBoost") == "Merged1-XGBoost"``.

    Raises
    ------
    KeyError
        For a family without zoo models (the deep arms, clinical).
    """
    return f"{MODEL_NAME_PREFIXES[family]}-{classifier}"


def deep_model_name(arm: str, depth: int) -> str:
    """Name of a deep arm's network, as written into predictions (the paper's names).

    Parameters
    ----------
    arm : {"1ch", "2ch"}
        The deep arm (family code).
    depth : int
        ResNet depth (18, 34, 50, 101, 152).

    Returns
    -------
    str
        E.g. ``deep_model_name("1ch", 101) == "1ch_ResNet101"``.
    """
    return f"{arm}_ResNet{depth}"
