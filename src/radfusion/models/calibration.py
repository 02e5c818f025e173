"""Sigmoid calibration whose folds keep each patient (and its augmented copies) on one side."""

from __future__ import annotations

import logging
import numbers
from typing import Any, ClassVar

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import StratifiedGroupKFold

#: Recorded in the stage keys of the stages that fit calibrated models: a run fitted
#: before calibration folds were grouped refits them when resumed.
CALIBRATION_FOLDS = "stratified, grouped by patient"

log = logging.getLogger(__name__)


class GroupedCalibratedClassifierCV(CalibratedClassifierCV):
    """``CalibratedClassifierCV`` whose calibration folds are grouped when ``groups`` are given.

    The calibrator (Platt's sigmoid, or isotonic) must be fitted on predictions for
    rows the classifier did not see. With ``cv=3`` scikit-learn splits rows by
    ``StratifiedKFold``, so the augmented copies and the other images of one patient
    land on both sides of a fold: the sigmoid learns from near-duplicates of training
    rows and comes out over-confident. Given ``groups``, this class splits whole groups
    instead (``StratifiedGroupKFold`` with ``cv`` folds, not shuffled) and hands those
    fixed splits to scikit-learn's own fit, so both paths get them: the
    ``ensemble=True`` classifier/calibrator pairs and the ``ensemble=False``
    out-of-fold predictions (``cross_val_predict``, which scikit-learn does not give
    routed groups). Without ``groups`` it is exactly ``CalibratedClassifierCV``.

    ``groups`` is requested for ``fit`` by metadata routing (as
    :class:`~radfusion.selection.LassoSelector` does), so a Pipeline or search fitted
    with ``groups`` inside :func:`~radfusion.models.group_routing` passes each fold's
    groups down to it.

    Parameters
    ----------
    estimator, method, n_jobs, ensemble
        As in :class:`sklearn.calibration.CalibratedClassifierCV`.
    cv : int, cross-validation generator or iterable, default=None
        As in ``CalibratedClassifierCV``. With ``groups``: an int (None: 5) is the
        number of grouped folds, reduced (with a logged warning) to the number of
        groups in the smaller class when that is fewer; a splitter must accept
        ``groups`` in its ``split``.

    Attributes
    ----------
    calibrated_classifiers_, classes_, n_features_in_, feature_names_in_
        As in ``CalibratedClassifierCV``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.svm import SVC
    >>> rng = np.random.default_rng(0)
    >>> groups = np.repeat(np.arange(12), 3)  # 12 patients, 3 images each
    >>> y = groups % 2
    >>> X = rng.normal(size=(36, 2)) + y[:, None]
    >>> clf = GroupedCalibratedClassifierCV(SVC(), cv=3, ensemble=False)
    >>> clf.fit(X, y, groups=groups).predict_proba(X).shape
    (36, 2)
    """

    # Metadata routing: ask for ``groups`` by default, so enclosing Pipelines and
    # searches hand each fold's patients/augmentation groups to the calibration folds.
    __metadata_request__fit: ClassVar[dict[str, bool]] = {"groups": True}

    def fit(
        self, X: Any, y: Any, sample_weight: Any = None, groups: Any = None, **fit_params: Any
    ) -> GroupedCalibratedClassifierCV:
        """Fit the classifier and its calibrator, on group-disjoint folds when ``groups`` is given.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,)
            Target values.
        sample_weight : array-like of shape (n_samples,), optional
            As in ``CalibratedClassifierCV``.
        groups : array-like of shape (n_samples,), optional
            Group of each row (patient; augmented copies share their source's group):
            no group is on both sides of a calibration fold.
        **fit_params : dict
            Passed to the classifier's ``fit``.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            If ``groups`` does not match ``y`` in length. (A class with fewer than 2
            groups has no grouped split: the folds are then ungrouped, with a warning.)
        """
        if groups is None:
            return super().fit(X, y, sample_weight=sample_weight, **fit_params)
        cv = self.cv
        # Fixed, group-disjoint splits: scikit-learn uses them as they are on both
        # ensemble paths. ``cv`` is restored afterwards, so the fitted model keeps its
        # parameters and stores no fold indices.
        splits = self._group_splits(X, y, groups)
        if splits is None:
            return super().fit(X, y, sample_weight=sample_weight, **fit_params)
        self.cv = splits
        try:
            return super().fit(X, y, sample_weight=sample_weight, **fit_params)
        finally:
            self.cv = cv

    def _group_splits(
        self, X: Any, y: Any, groups: Any
    ) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """Group-disjoint calibration folds; None when a class has fewer than 2 groups."""
        y, groups = np.asarray(y), np.asarray(groups)
        if groups.shape[0] != y.shape[0]:
            raise ValueError(f"groups has {groups.shape[0]} entries for {y.shape[0]} rows")
        if self.cv is not None and not isinstance(self.cv, numbers.Integral):
            return list(self.cv.split(X, y, groups))
        wanted = 5 if self.cv is None else int(self.cv)
        per_class = min(np.unique(groups[y == c]).size for c in np.unique(y))
        n_splits = min(wanted, per_class)
        if n_splits < 2:
            # e.g. a small cross-fitting fold: no grouped split exists, and failing the
            # whole stage would help no one; the rows of one group then calibrate together
            log.warning(
                "only %d group(s) in the minority class: calibration folds not grouped",
                per_class,
            )
            return None
        if n_splits < wanted:
            log.warning(
                "only %d groups in the minority class: calibrating on %d grouped folds "
                "instead of %d",
                per_class,
                n_splits,
                wanted,
            )
        return list(StratifiedGroupKFold(n_splits).split(X, y, groups))
