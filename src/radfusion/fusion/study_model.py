"""The fitted study as one object: its models, what each one reads, and how cases are scored.

Training (the fusion, stacking and clinical-model stages of :mod:`radfusion.pipeline`) and
prediction (:func:`radfusion.bundle.predict_bundle`, hence ``radfusion predict`` and
``radfusion serve``) build every model's input table here, so the two cannot drift apart:

``radiomics``
    the radiomics feature table;
``merged1`` / ``merged2`` (early fusion)
    the radiomics features joined with the 1ch / 2ch network's deep features, for the
    cases that have both, as two blocks (each with its own selection chain);
``1ch`` / ``2ch``
    the network's own probability;
``stacked`` / ``clinical`` (score level)
    other models' probabilities, each in its own column, plus clinical columns; they are
    scored after the models they read.

A bundle is this object saved (:mod:`radfusion.bundle`): its ``bundle.json`` lists the
:class:`ModelSpec` of every model, the fitted estimators sit next to it.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from radfusion.families import DEEP_ARMS, MERGED_ARMS, ModelId
from radfusion.fusion.clinical import SCORE_COLUMN
from radfusion.fusion.stacking import score_column

__all__ = ["CaseInputs", "ModelSpec", "ScoreInputs", "StudyModel"]

#: Columns of :meth:`StudyModel.score`'s table.
_SCORE_COLUMNS = (
    "case_id",
    "family",
    "model",
    "classifier",
    "selected",
    "probability",
    "threshold",
    "predicted_class",
)


@dataclass
class CaseInputs:
    """What the study's feature-level models read for a set of cases (index ``case_id``).

    Parameters
    ----------
    radiomics : DataFrame, optional
        The radiomics features.
    deep : dict
        Arm (``"1ch"``, ``"2ch"``) -> that network's deep features (no probability column).
    """

    radiomics: pd.DataFrame | None = None
    deep: dict[str, pd.DataFrame] = field(default_factory=dict)

    def features(self, family: str) -> pd.DataFrame:
        """The input table of a feature-level family (radiomics or a Merged model).

        A Merged model reads the cases that have both radiomics and deep features (an
        inner join: a case whose radiomics extraction failed has no Merged input).
        """
        if self.radiomics is None:
            raise ValueError(f"{family} reads radiomics features, and none were given")
        if family == "radiomics":
            return self.radiomics
        if family in MERGED_ARMS:
            return self.radiomics.join(self._deep(MERGED_ARMS[family]), how="inner")
        raise ValueError(f"{family!r} is not a feature-level family")

    def blocks(self, family: str) -> dict[str, list[str]]:
        """A Merged model's blocks: source name -> its columns in :meth:`features`."""
        if family not in MERGED_ARMS:
            raise ValueError(f"{family!r} is not a Merged (early-fusion) family")
        arm = MERGED_ARMS[family]
        rad = self.radiomics if self.radiomics is not None else pd.DataFrame()
        return {"radiomics": list(rad.columns), arm: list(self._deep(arm).columns)}

    def _deep(self, arm: str) -> pd.DataFrame:
        if arm not in self.deep:
            raise ValueError(f"the {arm} network's deep features were not given")
        return self.deep[arm]


@dataclass(frozen=True)
class ScoreInputs:
    """The input table of a score-level model: other models' probabilities + clinical values.

    Parameters
    ----------
    scores : dict
        Input column -> the model whose probability fills it.
    numeric, categorical : list of str
        Clinical columns the model also reads.
    """

    scores: dict[str, ModelId]
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)

    @classmethod
    def for_stacked(
        cls,
        arms: Mapping[str, str],
        numeric: Sequence[str] = (),
        categorical: Sequence[str] = (),
    ) -> ScoreInputs:
        """Stacked fusion: arm -> its chosen classifier, one ``score_<arm>`` column each."""
        return cls(
            {score_column(a): ModelId(a, c) for a, c in arms.items()},
            list(numeric),
            list(categorical),
        )

    @classmethod
    def for_clinical(
        cls,
        imaging: ModelId,
        numeric: Sequence[str] = (),
        categorical: Sequence[str] = (),
    ) -> ScoreInputs:
        """The clinical + imaging model: the imaging model's score and the clinical columns."""
        return cls({SCORE_COLUMN: imaging}, list(numeric), list(categorical))

    @property
    def clinical_columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @property
    def reads(self) -> list[ModelId]:
        """The models whose scores this model reads."""
        return list(self.scores.values())

    def frame(
        self,
        index: Sequence[str] | pd.Index,
        scores: Mapping[ModelId, pd.Series],
        clinical: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """The model's input table for the cases ``index``.

        Parameters
        ----------
        index : sequence of str
            Case ids, in the order of the rows.
        scores : mapping
            Model -> its probabilities by case id; every model of
            :attr:`reads` must be there.
        clinical : DataFrame, optional
            Clinical values by case id; a column it lacks is all missing (the model
            imputes it).
        """
        index = pd.Index(index)
        X = pd.DataFrame(
            {col: scores[ref].reindex(index).to_numpy() for col, ref in self.scores.items()},
            index=index,
        )
        cols = self.clinical_columns
        if cols:
            values = clinical if clinical is not None else pd.DataFrame(index=index)
            values = values.reindex(index=index, columns=cols)
            X = X.join(values)
        return X


@dataclass(frozen=True)
class ModelSpec:
    """One model of the study: who it is, its threshold, and (score level) what it reads."""

    id: ModelId
    selected: bool
    threshold: float
    inputs: ScoreInputs | None = None

    @property
    def family(self) -> str:
        return self.id.family

    @property
    def classifier(self) -> str:
        return self.id.classifier

    @property
    def model(self) -> str:
        """The model's name (:attr:`radfusion.families.ModelId.name`)."""
        return self.id.name


class StudyModel:
    """Every model of a fitted study, scored in the order their inputs allow.

    Parameters
    ----------
    models : sequence of ModelSpec
    estimator : callable
        ModelSpec -> its fitted estimator (``predict_proba``); called for the feature- and
        score-level models (a bundle loads them from its verified files).
    """

    def __init__(self, models: Sequence[ModelSpec], estimator: Callable[[ModelSpec], Any]):
        self.models = list(models)
        self._estimator = estimator

    def ordered(self) -> list[ModelSpec]:
        """The models in an order that scores every model after the models it reads.

        Raises
        ------
        ValueError
            When a score-level model reads a model the study lacks (or a cycle).
        """
        done: set[ModelId] = set()
        out: list[ModelSpec] = []
        pending = list(self.models)
        while pending:
            ready = [m for m in pending if m.inputs is None or set(m.inputs.reads) <= done]
            if not ready:
                missing = {m.model: sorted(set(m.inputs.reads) - done) for m in pending}  # type: ignore[union-attr]
                raise ValueError(f"models read scores the study does not have: {missing}")
            out += ready
            done |= {m.id for m in ready}
            pending = [m for m in pending if m not in ready]
        return out

    def prepare(self) -> None:
        """Load every feature-level model and fingerprint its selection chain now, so that
        the first :meth:`score` does not pay for it (a server calls this while loading)."""
        for spec in self.models:
            if spec.family not in DEEP_ARMS and spec.inputs is None:
                _prefix_key(self._estimator(spec))

    def score(
        self,
        inputs: CaseInputs,
        deep_probability: Mapping[str, pd.Series],
        index: Sequence[str],
        *,
        clinical: pd.DataFrame | None = None,
        case_meta: pd.DataFrame | None = None,
        unadjusted_log_level: int = logging.WARNING,
    ) -> pd.DataFrame:
        """Probabilities of every model for the cases ``index``.

        Parameters
        ----------
        inputs : CaseInputs
            Radiomics and deep features of the cases.
        deep_probability : mapping
            Arm -> the network's probability by case id.
        index : sequence of str
            Case ids, in the order of the rows.
        clinical : DataFrame, optional
            Clinical values by case id (score-level models).
        case_meta : DataFrame, optional
            The cases' centre / device (ComBat-harmonized models adjust with them).
        unadjusted_log_level : int
            Level of the log record naming cases ComBat could not adjust (a caller that
            reports them itself lowers it).

        Returns
        -------
        DataFrame
            One row per case and model: case_id, family, model, classifier, selected,
            probability, threshold, predicted_class (1 when probability >= threshold).
        """
        from radfusion.harmonization.pipeline import logged_harmonization_warnings

        ids = list(index)
        scores: dict[ModelId, pd.Series] = {}
        shared = _SharedPrefixes(case_meta)
        parts = []
        for spec in self.ordered():
            if spec.family in DEEP_ARMS:
                prob = deep_probability[spec.family].reindex(ids).to_numpy()
            elif spec.inputs is not None:
                X = spec.inputs.frame(ids, scores, clinical)
                prob = self._estimator(spec).predict_proba(X)[:, 1]
            else:
                pipe = self._estimator(spec)
                # ComBat reads these cases' centres as routed metadata: the (shared)
                # loaded model is not changed
                with logged_harmonization_warnings(unadjusted_log_level):
                    X = inputs.features(spec.family).loc[ids]
                    prob = shared.positive_proba(pipe, X, table=spec.family)
            prob = np.asarray(prob, dtype=float)
            scores[spec.id] = pd.Series(prob, index=ids)
            parts.append(
                pd.DataFrame(
                    {
                        "case_id": ids,
                        "family": spec.family,
                        "model": spec.model,
                        "classifier": spec.classifier,
                        "selected": spec.selected,
                        "probability": prob,
                        "threshold": spec.threshold,
                        "predicted_class": (prob >= spec.threshold).astype(int),
                    }
                )
            )
        if not parts:
            return pd.DataFrame(columns=list(_SCORE_COLUMNS))
        return pd.concat(parts, ignore_index=True)


#: Fitted pipeline -> fingerprint of its steps before the classifier (computed once per
#: loaded object; weak keys, so a dropped model frees its entry).
_PREFIX_KEYS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _prefix_key(pipe: Any) -> str | None:
    """Fingerprint of ``pipe``'s fitted steps before its classifier.

    None (score it alone) when ``pipe`` is not a pipeline or its steps cannot be
    pickled (e.g. a class defined inside a function).
    """
    import pickle

    from sklearn.pipeline import Pipeline

    if not isinstance(pipe, Pipeline) or len(pipe.steps) < 2:
        return None
    if pipe not in _PREFIX_KEYS:
        import joblib

        try:
            _PREFIX_KEYS[pipe] = joblib.hash(pipe[:-1])
        except (pickle.PicklingError, TypeError, AttributeError):
            _PREFIX_KEYS[pipe] = ""
    return _PREFIX_KEYS[pipe] or None


class _SharedPrefixes:
    """Scores pipelines on one table, transforming it once per distinct fitted prefix.

    The classifiers of one family share a feature-selection chain fitted on the same
    rows with the same seed, so their fitted prefixes are equal (same fingerprint): a
    served prediction ran the same ICC / scaling / Spearman / LASSO chain seven times
    per family. The result is exactly ``Pipeline.predict_proba``'s: the same transform,
    then the classifier, with ``case_meta`` routed to the steps that request it.
    """

    def __init__(self, case_meta: pd.DataFrame | None) -> None:
        self.case_meta = case_meta
        self._done: dict[tuple[str, str], Any] = {}

    def positive_proba(self, pipe: Any, X: pd.DataFrame, *, table: str) -> np.ndarray:
        """Probability of the positive class of ``pipe`` on ``X`` (the rows of ``table``)."""
        from radfusion.models.routing import positive_proba, routed_call

        key = _prefix_key(pipe)
        if key is None:
            return positive_proba(pipe, X, case_meta=self.case_meta)
        if (table, key) not in self._done:
            self._done[table, key] = routed_call(
                pipe[:-1], "transform", X, case_meta=self.case_meta
            )
        return positive_proba(pipe[-1], self._done[table, key], case_meta=self.case_meta)
