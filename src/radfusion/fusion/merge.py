"""Early fusion: selected radiomics features + selected deep features -> one classifier.

The paper concatenated the radiomics features kept by its selection with the deep
features kept by theirs (Merged model 1: radiomics + 1ch ResNet; Merged model 2:
radiomics + 2ch ResNet) and ran the classifier zoo on the result. radfusion builds
that as one scikit-learn Pipeline::

    ColumnTransformer(radiomics block -> its own ICC/z-score/Spearman/LASSO chain,
                      deep block      -> its own chain)  ->  classifier

so each block's selection is refit inside every tuning fold and only ever sees
training rows: the merged model is leakage-safe like the single-arm ones.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

from radfusion.config import ModelsConfig, SelectionConfig
from radfusion.models import FittedModel, fit_zoo, with_classifier
from radfusion.selection import build_selector

SELECT_STEP = "select"


def build_merged_model(
    name: str,
    blocks: dict[str, list[str]],
    *,
    selection_cfg: SelectionConfig,
    models_cfg: ModelsConfig,
    seed: int = 0,
    class_ratio: float | None = None,
) -> Pipeline:
    """A Merged model: per-block selection chains side by side, then one classifier.

    Parameters
    ----------
    name : str
        Classifier of the zoo ("LR" ... "LightGBM").
    blocks : dict
        Block name (e.g. ``"radiomics"``, ``"2ch"``) -> its feature columns.
    selection_cfg, models_cfg
        Selection and classifier settings (shared by the blocks).
    seed : int
    class_ratio : float, optional
        Training ``n_negative / n_positive`` (XGBoost's class weight).

    Returns
    -------
    Pipeline
        Steps ``select`` (a ColumnTransformer of selection pipelines) and ``clf``.
        Its ``fit`` takes reader 2's features of every block as one ``reader2`` table
        (:func:`radfusion.models.case_data` joins the blocks' tables), routed to each
        block's ICC filter, which reads its own columns (a block without any, e.g. the
        1ch network, whose input has no ROI, skips its ICC).
    """
    transformers = [
        (block, build_selector(selection_cfg, seed), list(cols)) for block, cols in blocks.items()
    ]
    select = ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)
    return with_classifier([(SELECT_STEP, select)], name, models_cfg, seed, class_ratio)


def fit_merged_zoo(
    X: pd.DataFrame,
    y: Any,
    groups: Any,
    blocks: dict[str, list[str]],
    *,
    names: list[str] | None = None,
    selection_cfg: SelectionConfig,
    models_cfg: ModelsConfig,
    reader2: dict[str, Any] | None = None,
    case_meta: pd.DataFrame | None = None,
    seed: int = 0,
) -> dict[str, FittedModel]:
    """Tune and fit every classifier of the zoo as a Merged model (see :func:`fit_zoo`)."""

    def builder(name: str, ratio: float | None) -> Pipeline:
        return build_merged_model(
            name,
            blocks,
            selection_cfg=selection_cfg,
            models_cfg=models_cfg,
            seed=seed,
            class_ratio=ratio,
        )

    return fit_zoo(
        X,
        y,
        groups,
        names=names,
        selection_cfg=selection_cfg,
        models_cfg=models_cfg,
        reader2=reader2,
        case_meta=case_meta,
        seed=seed,
        builder=builder,
    )


def block_pipelines(model: Pipeline) -> dict[str, Pipeline]:
    """The fitted selection pipeline of each block of a Merged model."""
    select = model.named_steps[SELECT_STEP]
    return {name: pipe for name, pipe, _ in select.transformers_ if name != "remainder"}
