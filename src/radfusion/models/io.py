"""Saving and loading fitted scikit-learn pipelines without pickle.

radfusion stores every fitted pipeline with skops, whose loader only builds objects
of types it has been told to trust. The trusted list below is explicit and fixed:
a file that needs any other type (for instance a pickled payload smuggled into a
bundle) is refused before anything in it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import skops.io as sio

from radfusion.errors import RadfusionError
from radfusion.utils import atomic_path

#: Types beyond skops' own defaults that radfusion's pipelines legitimately contain.
TRUSTED_TYPES: tuple[str, ...] = (
    "radfusion.selection.icc.ICCFilter",
    "radfusion.selection.lasso.LassoSelector",
    "radfusion.selection.power.YeoJohnsonTransformer",
    "radfusion.selection.spearman.SpearmanFilter",
    "radfusion.selection.univariate.MannWhitneyFilter",
    "radfusion.fusion.clinical.ClinicalImagingModel",
    "radfusion.harmonization.combat.ComBatHarmonizer",
    "radfusion.fusion.clinical._logit",
    "radfusion.fusion.stacking.StackedFusionModel",
    "radfusion.models.calibration.GroupedCalibratedClassifierCV",
    "numpy.dtype",
    "xgboost.core.Booster",
    "xgboost.sklearn.XGBClassifier",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
    "collections.OrderedDict",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.tree._tree.Tree",
    "sklearn.compose._column_transformer._RemainderColsList",
)


def _icc_filters(pipeline: Any, *, fitted: bool) -> list[tuple[str | None, Any]]:
    """The ICC filters inside a pipeline, column transformers included, with their block.

    The block is the name of the enclosing ColumnTransformer part (a Merged model's
    ``radiomics`` / ``2ch`` ...), None outside one. ``fitted`` also walks the fitted
    copies that column transformers keep (``transformers_``), besides their unfitted
    templates.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    from radfusion.selection.icc import ICCFilter

    found: list[tuple[str | None, Any]] = []

    def walk(obj: Any, block: str | None) -> None:
        if isinstance(obj, ICCFilter):
            found.append((block, obj))
        elif isinstance(obj, Pipeline):
            for _, step in obj.steps:
                walk(step, block)
        elif isinstance(obj, ColumnTransformer):
            fitted_parts = getattr(obj, "transformers_", []) if fitted else []
            for part in [*obj.transformers, *fitted_parts]:
                walk(part[1], part[0])

    walk(pipeline, None)
    return found


def strip_training_data(pipeline: Any) -> Any:
    """A copy of ``pipeline`` without the training data it holds.

    The reader-2 features of its ICC filters (not needed to predict: the fitted
    ``support_`` is kept) and the case metadata (centres, covariates) of its ComBat
    harmonisers (patient data; ``predict`` gives them the new cases' own, see
    :func:`radfusion.harmonization.set_case_meta`) stay out of saved files. Walks
    pipelines and column transformers, fitted copies (``transformers_``) included.
    ``pipeline`` itself is left unchanged: it may still be refit (e.g. out of fold),
    which needs reader 2.
    """
    import copy

    from radfusion.harmonization import set_case_meta

    stripped = copy.deepcopy(pipeline)
    for _, icc in _icc_filters(stripped, fitted=True):
        icc.reader2 = None
    return set_case_meta(stripped, None)


def restore_training_data(pipeline: Any, reader2: Any) -> Any:
    """An unfitted clone of a (loaded) pipeline with reader 2's features back in its ICC filters.

    A saved pipeline carries no reader-2 training table (:func:`strip_training_data`), so a
    refit of a loaded pipeline would silently skip its ICC step. The clone follows the
    same recipe as the original fit: the same steps and hyperparameters, and the
    reader-2 tables.

    Parameters
    ----------
    pipeline : estimator
        A pipeline as saved by :func:`save_pipeline` (fitted or not); not changed.
    reader2 : DataFrame, dict or None
        Reader 2's feature table for a single selection chain, or block name -> table
        for the blocks of a Merged model's ColumnTransformer (a missing or None entry
        leaves that block's ICC filter skipped, as when it was fitted).

    Returns
    -------
    estimator
        Unfitted.
    """
    from sklearn.base import clone

    recipe = clone(pipeline)
    for block, icc in _icc_filters(recipe, fitted=False):
        icc.reader2 = reader2.get(block) if isinstance(reader2, dict) else reader2
    return recipe


def save_pipeline(pipeline: Any, path: str | Path) -> Path:
    """Write a fitted pipeline to a ``.skops`` file atomically, without its training data.

    The file holds :func:`strip_training_data`'s copy; ``pipeline`` is not changed.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        sio.dump(strip_training_data(pipeline), tmp)
    return path


def check_pipeline_file(path: str | Path) -> list[str]:
    """Read a ``.skops`` file's schema (nothing is built) and refuse untrusted types.

    Returns
    -------
    list of str
        The non-default types the file needs (all in :data:`TRUSTED_TYPES`).

    Raises
    ------
    RadfusionError
        The file is missing, not a (complete) skops file, or asks for an untrusted type.
    """
    path = Path(path)
    if not path.is_file():
        raise RadfusionError(f"model file not found: {path}")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # zipfile, JSON and skops errors for a damaged file
        raise RadfusionError(f"{path} is not a valid skops model file: {exc}") from None
    refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if refused:
        raise RadfusionError(
            f"{path} contains types radfusion does not trust: {', '.join(refused)}; "
            "refusing to load it (it may have been tampered with)"
        )
    return list(untrusted)


def load_pipeline(path: str | Path) -> Any:
    """Load a ``.skops`` pipeline, refusing any type outside :data:`TRUSTED_TYPES`.

    Raises
    ------
    RadfusionError
        The file is missing, not a skops file, or asks for an untrusted type.
    """
    path = Path(path)
    untrusted = check_pipeline_file(path)
    try:
        return sio.load(path, trusted=list(untrusted))
    except Exception as exc:
        raise RadfusionError(f"{path} could not be loaded: {exc}") from None
