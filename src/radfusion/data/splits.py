"""Train / validation / test assignment.

Methods (``SplitConfig.method``):

``stratified``
    The paper's 70/15/15 split stratified by label. With groups (``patient_id`` or
    the configured group column, e.g. BUSI's ``group_id``) whole groups are assigned,
    so no patient straddles splits. Per-class targets are rounded with the
    largest-remainder rule so they sum to the class size; without groups every
    split hits its target exactly, with groups a greedy assignment (largest groups
    first, then the split whose per-class shortfall is largest) ends within one
    case of target per split and class when small groups are available to fill up.
``column``
    The manifest's ``split`` column (train / val / test).
``center``
    Leave-center-out external validation: the held-out center is the test set, the
    other centers are split into train / val (stratified, grouped). One assignment
    per center unless ``test_center`` names one.
``kfold``
    Repeated stratified (grouped) k-fold CV: each fold is the test set once; the rest
    is split into train / val in the configured train:val ratio.

Every method returns a list of :class:`SplitAssignment` (one for a single split).

Duplicate images: the ``linked`` clusters given to :func:`make_splits` (validation's
exact and near-duplicate clusters that span several groups, see
:func:`radfusion.data.validate.validate_cohort`) are merged into one group each
(:func:`join_groups`) before any grouped assignment, so two copies of one image never
end up in training and test under different patient ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from radfusion.config import SplitConfig
from radfusion.data.manifest import SPLIT_NAMES, Cohort
from radfusion.errors import ConfigError

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


@dataclass(frozen=True)
class SplitAssignment:
    """One assignment of every case to ``train`` / ``val`` / ``test``.

    Attributes
    ----------
    name : str
        ``main`` for a single split, ``center=<c>`` or ``r<repeat>f<fold>`` otherwise.
    split : pandas.Series
        Index case_id, values ``train`` / ``val`` / ``test``.
    """

    name: str
    split: pd.Series

    def ids(self, which: str) -> list[str]:
        return self.split.index[self.split == which].tolist()

    def counts(self, labels: pd.Series) -> pd.DataFrame:
        """Cases per split and label (labels indexed by case_id)."""
        return pd.crosstab(self.split, labels.reindex(self.split.index)).reindex(
            [s for s in SPLIT_NAMES if s in set(self.split)]
        )


def _largest_remainder(n: int, fractions: np.ndarray) -> np.ndarray:
    raw = n * fractions
    base = np.floor(raw).astype(int)
    short = n - base.sum()
    order = np.argsort(-(raw - base), kind="stable")
    base[order[:short]] += 1
    return base


def stratified_group_split(
    labels: np.ndarray,
    groups: np.ndarray,
    fractions: tuple[float, ...],
    seed: int,
    names: tuple[str, ...] = SPLIT_NAMES,
) -> np.ndarray:
    """Assign whole groups to splits so each split's class counts hit their targets.

    Parameters
    ----------
    labels : (n,) int array
    groups : (n,) array of group ids (a unique id per row when there are no groups)
    fractions : per-split fractions, summing to 1
    seed : int
        Shuffles groups before the deterministic greedy pass.
    names : split names, same length as ``fractions``

    Returns
    -------
    (n,) array of split names.
    """
    labels = np.asarray(labels).astype(int)
    groups = np.asarray(groups).astype(str)
    fr = np.asarray(fractions, dtype=float)
    classes = np.unique(labels)
    target = np.stack(
        [_largest_remainder(int((labels == c).sum()), fr) for c in classes], axis=1
    )  # (n_splits, n_classes)

    uniq, inverse = np.unique(groups, return_inverse=True)
    comp = np.zeros((len(uniq), len(classes)), dtype=int)
    np.add.at(comp, (inverse, np.searchsorted(classes, labels)), 1)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    # Largest groups first: they are the hardest to place; singletons then fill the gaps.
    order = order[np.argsort(-comp[order].sum(axis=1), kind="stable")]

    count = np.zeros_like(target)
    where = np.empty(len(uniq), dtype=int)
    for g in order:
        c = comp[g]
        # Shortfall-weighted choice: the split that still needs most of what this group has.
        gain = ((target - count) * c).sum(axis=1)
        # Penalise overshoot so a split never grows far beyond its target.
        over = np.clip(count + c - target, 0, None).sum(axis=1)
        score = gain - 2 * over * c.sum()
        best = int(np.flatnonzero(score == score.max())[0])
        where[g] = best
        count[best] += c
    return np.asarray(names)[where[inverse]]


def join_groups(
    case_ids: Sequence[str], groups: Sequence[str], linked: Iterable[Iterable[str]]
) -> np.ndarray:
    """Groups with every linked cluster of cases merged into one group.

    Parameters
    ----------
    case_ids : sequence of str
        The cases.
    groups : sequence of str
        Their groups (patient, or the case itself).
    linked : iterable of iterables of str
        Clusters of case ids that must share a group (e.g. near-duplicate images); ids
        not among ``case_ids`` are ignored.

    Returns
    -------
    ndarray of str
        Each case's group; groups joined through some cluster (transitively) are named
        by their sorted members joined with ``+``, the others keep their name.

    Examples
    --------
    >>> join_groups(["a", "b", "c"], ["P1", "P2", "P3"], [["a", "c"]]).tolist()
    ['P1+P3', 'P2', 'P1+P3']
    """
    groups = [str(g) for g in groups]
    parent = {g: g for g in groups}

    def root(g: str) -> str:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    of_case = dict(zip(map(str, case_ids), groups, strict=True))
    for cluster in linked:
        members = [of_case[c] for c in map(str, cluster) if c in of_case]
        for g in members[1:]:
            a, b = root(members[0]), root(g)
            if a != b:
                parent[max(a, b)] = min(a, b)
    merged: dict[str, list[str]] = {}
    for g in sorted(set(groups)):
        merged.setdefault(root(g), []).append(g)
    name = {g: "+".join(ms) for ms in merged.values() for g in ms}
    return np.asarray([name[g] for g in groups], dtype=object)


def _column_split(cohort: Cohort) -> pd.Series:
    if not cohort.has("split"):
        raise ConfigError("split.method is 'column' but the manifest has no 'split' values")
    raw = cohort.table["split"].str.lower()
    bad = sorted(set(raw) - set(SPLIT_ALIASES))
    if bad:
        raise ConfigError(f"unknown split value(s) {bad}; use train / val / test")
    return pd.Series(raw.map(SPLIT_ALIASES).to_numpy(), index=cohort.case_ids, name="split")


def _train_val_test(cohort: Cohort, groups: np.ndarray, cfg: SplitConfig, seed: int) -> pd.Series:
    out = stratified_group_split(cohort.labels, groups, (cfg.train, cfg.val, cfg.test), seed)
    return pd.Series(out, index=cohort.case_ids, name="split")


def _train_val(labels: np.ndarray, groups: np.ndarray, cfg: SplitConfig, seed: int) -> np.ndarray:
    tv = cfg.train + cfg.val
    if cfg.val == 0:
        return np.full(len(labels), "train", dtype=object)
    return stratified_group_split(
        labels, groups, (cfg.train / tv, cfg.val / tv), seed, names=("train", "val")
    )


def _center_splits(
    cohort: Cohort, groups: np.ndarray, cfg: SplitConfig, seed: int
) -> list[SplitAssignment]:
    if not cohort.has("center"):
        raise ConfigError("split.method is 'center' but the manifest has no 'center' column")
    centers = cohort.table["center"].to_numpy(dtype=str)
    uniq = sorted(set(centers))
    if len(uniq) < 2:
        raise ConfigError(f"leave-center-out needs at least two centers; found {uniq}")
    held = [cfg.test_center] if cfg.test_center else uniq
    if cfg.test_center and cfg.test_center not in uniq:
        raise ConfigError(f"test_center {cfg.test_center!r} is not among the centers {uniq}")
    labels, ids = cohort.labels, cohort.case_ids
    out = []
    for c in held:
        test = centers == c
        split = np.empty(len(ids), dtype=object)
        split[test] = "test"
        split[~test] = _train_val(labels[~test], groups[~test], cfg, seed)
        out.append(SplitAssignment(f"center={c}", pd.Series(split, index=ids, name="split")))
    return out


def _kfold_splits(
    cohort: Cohort, groups: np.ndarray, cfg: SplitConfig, seed: int
) -> list[SplitAssignment]:
    labels, ids = cohort.labels, cohort.case_ids
    out = []
    for r in range(cfg.n_repeats):
        cv = StratifiedGroupKFold(n_splits=cfg.n_splits, shuffle=True, random_state=seed + r)
        for f, (tr, te) in enumerate(cv.split(np.zeros(len(ids)), labels, groups)):
            split = np.empty(len(ids), dtype=object)
            split[te] = "test"
            split[tr] = _train_val(labels[tr], groups[tr], cfg, seed + 1000 * r + f)
            out.append(SplitAssignment(f"r{r}f{f}", pd.Series(split, index=ids, name="split")))
    return out


def make_splits(
    cohort: Cohort,
    cfg: SplitConfig,
    seed: int = 0,
    *,
    linked: Iterable[Iterable[str]] = (),
) -> list[SplitAssignment]:
    """Assign every case of a (validated) cohort to train / val / test.

    Parameters
    ----------
    cohort : Cohort
        The validated cohort; its groups (patient_id or the configured column) are kept
        inside one split.
    cfg : SplitConfig
        Method and fractions.
    seed : int
        Makes the assignment reproducible.
    linked : iterable of iterables of str
        Clusters of case ids kept inside one split as if they were one group (see
        :func:`join_groups`); ignored by method ``column``.

    Returns
    -------
    list of SplitAssignment
        One element for ``stratified`` / ``column``; one per center or fold otherwise.
    """
    if cfg.method == "column":
        return [SplitAssignment("main", _column_split(cohort))]
    groups = join_groups(cohort.case_ids, cohort.groups, linked)
    if cfg.method == "stratified":
        return [SplitAssignment("main", _train_val_test(cohort, groups, cfg, seed))]
    if cfg.method == "center":
        return _center_splits(cohort, groups, cfg, seed)
    if cfg.method == "kfold":
        return _kfold_splits(cohort, groups, cfg, seed)
    raise ConfigError(f"unknown split method {cfg.method!r}")


def straddling_groups(split: pd.Series, groups: pd.Series) -> dict[str, list[str]]:
    """Groups whose cases fall in more than one split: {group: sorted splits}."""
    df = pd.DataFrame({"split": split, "group": groups.reindex(split.index)})
    per = df.groupby("group")["split"].agg(lambda s: sorted(set(s)))
    return {str(g): v for g, v in per.items() if len(v) > 1}
