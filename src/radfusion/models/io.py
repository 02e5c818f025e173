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


def save_pipeline(pipeline: Any, path: str | Path) -> Path:
    """Write a fitted pipeline to a ``.skops`` file atomically.

    A model holds no patient data to strip: reader 2's features and the cases' centres
    are metadata-routed arguments of ``fit`` / ``predict_proba``, never its parameters
    (:func:`radfusion.models.case_data`). ``pipeline`` is not changed.
    """
    path = Path(path)
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
