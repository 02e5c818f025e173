"""The study's model families: codes, display order, names in the paper's words.

One source of truth for the pipeline (which writes the codes into ``predictions.parquet``) and
for evaluation and the report (which show the display names). Deliberately free of imports
from the rest of radfusion, so any module can use it.

Two kinds of names must not be confused:

* :data:`FAMILY_LABELS` -- how a family is *shown* (tables, figure titles, the report);
  free to follow the paper's wording.
* :attr:`ModelId.name` -- the model names the pipeline *writes* into predictions
  ("Radiomics-LR", "Merged1-XGBoost", "1ch_ResNet18", "Clinical+imaging"), derived from the
  model's identity (family, classifier). Runs, bundles and tests refer to models by these,
  so they never change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "DEEP_ARMS",
    "DEEP_CLASSIFIER",
    "FAMILIES",
    "FAMILY_LABELS",
    "MERGED_ARMS",
    "SELECTION_FAMILIES",
    "SINGLE_CLASSIFIER",
    "ModelId",
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
_NAME_PREFIXES = {"radiomics": "Radiomics", "merged1": "Merged1", "merged2": "Merged2"}

#: The families with one logistic model, and that model's name.
_SINGLE_MODEL_NAMES = {"stacked": "Stacked", "clinical": "Clinical+imaging"}

#: The classifier of a deep arm's one model (its network), of a one-model family's model.
DEEP_CLASSIFIER = "ResNet"
SINGLE_CLASSIFIER = "LR"

#: Model files whose name is not the classifier's alone (run folders and bundles written
#: by every radfusion so far name the clinical model ``ClinicalLR.skops``).
_FILE_PREFIXES = {"clinical": "Clinical"}


@dataclass(frozen=True, order=True)
class ModelId:
    """Who a model of a study is: its family and its classifier.

    The one identity of a model: the run folder's and the bundle's model files
    (:attr:`file_stem`), the name written into predictions, thresholds and tables
    (:attr:`name`) and the models a score-level model reads are all derived from it.

    Parameters
    ----------
    family : str
        A family code of :data:`FAMILIES`.
    classifier : str
        The zoo classifier ("LR", "XGBoost", ...); :data:`DEEP_CLASSIFIER` for a deep arm,
        :data:`SINGLE_CLASSIFIER` for the stacked and clinical models.
    depth : int, optional
        A deep arm's ResNet depth (18, 34, 50, 101, 152): part of its name only, not of
        its identity (a study has one network per arm).

    Examples
    --------
    >>> ModelId("merged1", "XGBoost").name
    'Merged1-XGBoost'
    >>> ModelId.network("1ch", 101).name
    '1ch_ResNet101'
    >>> ModelId.single("clinical").name, ModelId.single("clinical").file_stem
    ('Clinical+imaging', 'ClinicalLR')
    """

    family: str
    classifier: str
    depth: int | None = field(default=None, compare=False)

    @classmethod
    def network(cls, arm: str, depth: int) -> ModelId:
        """The model of a deep arm (``"1ch"``, ``"2ch"``): its ResNet of depth ``depth``."""
        return cls(arm, DEEP_CLASSIFIER, depth)

    @classmethod
    def single(cls, family: str) -> ModelId:
        """The one (logistic) model of the ``stacked`` or ``clinical`` family."""
        return cls(family, SINGLE_CLASSIFIER)

    @classmethod
    def from_record(cls, family: str, classifier: str, name: str) -> ModelId:
        """The identity of a model as recorded (predictions, ``bundle.json``), checked.

        Raises
        ------
        ValueError
            When ``name`` is not the name of (``family``, ``classifier``).
        """
        depth = None
        if family in DEEP_ARMS:
            digits = name.removeprefix(f"{family}_{classifier}")
            depth = int(digits) if digits.isdigit() else None
        model = cls(family, classifier, depth)
        try:
            expected = model.name
        except ValueError:
            expected = None
        if name != expected:
            raise ValueError(
                f"model {name!r} is not the name of a {family!r} model with classifier "
                f"{classifier!r}"
            )
        return model

    @property
    def name(self) -> str:
        """The model's name as written into predictions (the paper's names), e.g.
        ``Radiomics-LR``, ``Merged1-XGBoost``, ``1ch_ResNet18``, ``Clinical+imaging``.

        Runs, bundles and thresholds refer to models by it, so it never changes.
        """
        if self.family in _NAME_PREFIXES:
            return f"{_NAME_PREFIXES[self.family]}-{self.classifier}"
        if self.family in DEEP_ARMS and self.depth is not None:
            return f"{self.family}_{self.classifier}{self.depth}"
        if self.family in _SINGLE_MODEL_NAMES:
            return _SINGLE_MODEL_NAMES[self.family]
        raise ValueError(f"{self} has no model name (a deep arm needs its depth)")

    @property
    def file_stem(self) -> str:
        """The fitted model's file name without suffix (run folder and bundle)."""
        return f"{_FILE_PREFIXES.get(self.family, '')}{self.classifier}"
