"""Where ComBat sits in radfusion's model pipelines, and the case metadata it reads.

The harmoniser is inserted right after the ICC filter of a selection chain (the ICC
measures agreement between two readers of the *same* image, on raw features, so it
must see them unharmonised) and before the z-score: ICC -> ComBat -> z-score ->
Spearman -> LASSO -> classifier. In a Merged model it goes into the radiomics block's
chain (and the deep block's with ``harmonization.features: all``). Because it lives
inside the fitted pipeline, it is refitted on every inner-CV training fold, saved with
the model and applied by ``radfusion predict``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

from radfusion.config import StudyConfig
from radfusion.errors import ConfigError
from radfusion.harmonization.combat import ComBatHarmonizer, UnadjustedCaseWarning

log = logging.getLogger("radfusion.harmonization")

#: Name of the harmonisation step in model pipelines.
HARMONIZE_STEP = "harmonize"


def make_harmonizer(cfg: StudyConfig, case_meta: pd.DataFrame) -> ComBatHarmonizer | None:
    """The configured harmoniser (unfitted), or None with ``harmonization.method: none``.

    ``case_meta`` (the study's cases) only tells numeric covariates from categorical
    ones; the harmoniser reads the cases' centres when it is fitted and applied.
    """
    h = cfg.harmonization
    if h.method == "none":
        return None
    continuous = [c for c in h.covariates if _is_numeric(cfg, case_meta, c)]
    return ComBatHarmonizer(
        batch_column=h.batch_column,
        continuous=continuous,
        categorical=[c for c in h.covariates if c not in continuous],
    )


def _is_numeric(cfg: StudyConfig, case_meta: pd.DataFrame, column: str) -> bool:
    """A covariate is continuous when declared numeric, or undeclared and all numbers."""
    if column in cfg.data.clinical.numeric:
        return True
    if column in cfg.data.clinical.categorical:
        return False
    values = case_meta[column].dropna() if column in case_meta.columns else pd.Series([])
    return len(values) > 0 and bool(pd.to_numeric(values, errors="coerce").notna().all())


def add_harmonizer(
    model: Pipeline, harmonizer: ComBatHarmonizer | None, blocks: Iterable[str] | None = None
) -> Pipeline:
    """Insert a copy of ``harmonizer`` into a model pipeline (after its ICC step).

    Parameters
    ----------
    model : Pipeline
        A :func:`radfusion.models.build_model` pipeline, or a Merged model whose first
        step is a ColumnTransformer of selection chains.
    harmonizer : ComBatHarmonizer or None
        None returns ``model`` unchanged.
    blocks : iterable of str, optional
        Merged models: the blocks to harmonise (default: every block).

    Returns
    -------
    Pipeline
        ``model``, changed in place.
    """
    if harmonizer is None:
        return model
    from sklearn.base import clone

    first = model.steps[0][1]
    if isinstance(first, ColumnTransformer):
        wanted = None if blocks is None else set(blocks)
        for name, chain, _ in first.transformers:
            if isinstance(chain, Pipeline) and (wanted is None or name in wanted):
                _insert(chain, clone(harmonizer))
        return model
    _insert(model, clone(harmonizer))
    return model


def _insert(chain: Pipeline, step: ComBatHarmonizer) -> None:
    names = [n for n, _ in chain.steps]
    at = names.index("icc") + 1 if "icc" in names else 0
    chain.steps.insert(at, (HARMONIZE_STEP, step))


def study_case_meta(
    cfg: StudyConfig, table: pd.DataFrame, cases: pd.DataFrame, augmentation: pd.DataFrame
) -> pd.DataFrame:
    """Centre and covariates of every case and augmented copy, indexed by case id.

    Parameters
    ----------
    cfg : StudyConfig
    table : DataFrame
        The manifest rows (``Cohort.table``: text, one row per case).
    cases : DataFrame
        ``cases.csv`` (case_id, label, parsed clinical columns ...).
    augmentation : DataFrame
        ``augmentation.csv``: copies inherit their source case's metadata.

    Raises
    ------
    ConfigError
        When the batch or a covariate column is not in the manifest.
    """
    h = cfg.harmonization
    cols = [h.batch_column, *h.covariates]
    src = table.set_index(table["case_id"].astype(str))
    cases = cases.set_index(cases["case_id"].astype(str))
    meta = pd.DataFrame(index=src.index)
    for col in cols:
        if col in cases.columns:  # parsed values (numeric clinical columns)
            meta[col] = cases[col].reindex(meta.index)
        elif col in src.columns:
            meta[col] = src[col].replace("", np.nan)
        else:
            raise ConfigError(
                f"harmonization: column {col!r} is not in the manifest; set "
                "harmonization.batch_column / covariates to manifest columns"
            )
    if len(augmentation):
        copies = meta.reindex(augmentation["source_case_id"].astype(str).to_numpy())
        copies.index = augmentation["case_id"].astype(str).to_numpy()
        meta = pd.concat([meta, copies])
    return meta


def cases_meta(cfg: StudyConfig, cases: Sequence[Any]) -> pd.DataFrame:
    """Centre and covariates of new cases (:class:`radfusion.data.manifest.Case`)."""
    h = cfg.harmonization
    rows = {}
    for c in cases:
        known = {"center": c.center, "patient_id": c.patient_id, **c.clinical}
        rows[c.case_id] = {col: known.get(col) for col in [h.batch_column, *h.covariates]}
    return pd.DataFrame.from_dict(rows, orient="index")


@contextmanager
def logged_harmonization_warnings(level: int = logging.WARNING) -> Iterator[None]:
    """Turn :class:`UnadjustedCaseWarning` into one log record per distinct message.

    Parameters
    ----------
    level : int
        Level of the records (scoring new cases logs them at DEBUG: each case then
        carries its own ``unharmonised_center`` warning, :mod:`radfusion.predict`).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnadjustedCaseWarning)
        yield
    seen: set[str] = set()
    for w in caught:
        if not issubclass(w.category, UnadjustedCaseWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        elif str(w.message) not in seen:
            seen.add(str(w.message))
            log.log(level, "harmonization: %s", w.message)
