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
    "radfusion.selection.spearman.SpearmanFilter",
    "radfusion.selection.univariate.MannWhitneyFilter",
    "radfusion.fusion.clinical.ClinicalImagingModel",
    "radfusion.fusion.clinical._logit",
    "radfusion.fusion.stacking.StackedFusionModel",
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


def _icc_filters(pipeline: Any, *, fitted: bool) -> list[Any]:
    """The ICC filters inside a pipeline, column transformers included.

    ``fitted`` also walks the fitted copies that column transformers keep
    (``transformers_``), besides their unfitted templates.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    from radfusion.selection.icc import ICCFilter

    found: list[Any] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, ICCFilter):
            found.append(obj)
        elif isinstance(obj, Pipeline):
            for _, step in obj.steps:
                walk(step)
        elif isinstance(obj, ColumnTransformer):
            fitted_parts = getattr(obj, "transformers_", []) if fitted else []
            for part in [*obj.transformers, *fitted_parts]:
                walk(part[1])

    walk(pipeline)
    return found


def strip_training_data(pipeline: Any) -> Any:
    """Drop reader-2 training features held by fitted ICC filters (not needed to predict).

    Walks pipelines and column transformers, fitted copies (``transformers_``) included.
    """
    for icc in _icc_filters(pipeline, fitted=True):
        icc.reader2 = None
    return pipeline


def restore_training_data(pipeline: Any, reader2: Any) -> Any:
    """Give the ICC filters of an (unfitted, e.g. cloned) pipeline reader 2's features again.

    A saved pipeline carries no reader-2 training table (:func:`strip_training_data`), so a
    refit of a loaded pipeline would silently skip its ICC step. This puts the table back,
    making the refit follow the same recipe as the original fit. Returns ``pipeline``.
    """
    for icc in _icc_filters(pipeline, fitted=False):
        icc.reader2 = reader2
    return pipeline


def save_pipeline(pipeline: Any, path: str | Path) -> Path:
    """Write a fitted pipeline to a ``.skops`` file atomically."""
    path = Path(path)
    strip_training_data(pipeline)
    with atomic_path(path) as tmp:
        sio.dump(pipeline, tmp)
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
