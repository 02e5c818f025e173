"""Minority-class augmentation: horizontal flip, vertical flip, Gaussian noise.

The paper expanded the APT/PC images tenfold (53 -> 530 in training) with these
three operations. radfusion plans the copies explicitly, as a table, so that
every copy is traceable to its source case and stays in its source's split:

* each minority case of an augmented split yields ``factor - 1`` copies (the
  original counts as one), each with a distinct combination of operations drawn
  in a fixed order: hflip, vflip, hflip+vflip, noise, hflip+noise, vflip+noise,
  hflip+vflip+noise, then further noise realisations;
* a copy's id is ``<case_id>#aug<k>`` and it carries ``source_case_id`` and the
  source's split and group, so it can never land in another split or CV fold;
* noise is seeded from (study seed, case id, k): the same plan gives the same pixels.

Only the training set is augmented by default. ``augment_validation`` reproduces
the paper (which also augmented validation) and logs a warning: validation
metrics on augmented copies are optimistic because the copies are correlated.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from radfusion.config import AugmentConfig

log = logging.getLogger(__name__)

_OPS_CYCLE: tuple[tuple[str, ...], ...] = (
    ("hflip",),
    ("vflip",),
    ("hflip", "vflip"),
    ("noise",),
    ("hflip", "noise"),
    ("vflip", "noise"),
    ("hflip", "vflip", "noise"),
)


@dataclass(frozen=True)
class AugmentedCopy:
    """One planned augmented copy of a source case."""

    case_id: str
    source_case_id: str
    k: int
    ops: tuple[str, ...]
    noise_seed: int


def _ops_for(k: int) -> tuple[str, ...]:
    # Beyond the seven distinct flip/noise combinations, copies differ by noise realisation.
    return _OPS_CYCLE[k - 1] if k <= len(_OPS_CYCLE) else _OPS_CYCLE[3 + (k - 1) % 4]


def _noise_seed(seed: int, case_id: str, k: int) -> int:
    digest = hashlib.sha256(f"{seed}|{case_id}|{k}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def minority_label(labels: np.ndarray) -> int:
    """The less frequent label (1 on a tie, the clinically rarer class by convention)."""
    labels = np.asarray(labels).astype(int)
    n1 = int((labels == 1).sum())
    n0 = int((labels == 0).sum())
    return 1 if n1 <= n0 else 0


def plan_augmentation(cases: pd.DataFrame, cfg: AugmentConfig, seed: int = 0) -> pd.DataFrame:
    """Plan the augmented copies of a split assignment.

    Parameters
    ----------
    cases : DataFrame
        Columns ``case_id``, ``label``, ``split`` (and optionally ``group``).
    cfg : AugmentConfig
        Factor, noise level and whether validation is augmented too.
    seed : int
        Study seed for the noise realisations.

    Returns
    -------
    DataFrame
        One row per copy: ``case_id`` (``<source>#aug<k>``), ``source_case_id``, ``label``,
        ``split``, ``group``, ``ops`` ("hflip+noise" ...), ``noise_seed``. Empty when
        augmentation is off. The minority class is determined on the training rows.
    """
    columns = ["case_id", "source_case_id", "label", "split", "group", "ops", "noise_seed"]
    if not cfg.enabled or cfg.factor <= 1:
        return pd.DataFrame(columns=columns)
    splits = ["train"]
    if cfg.augment_validation:
        log.warning(
            "augment_validation is on (as in the paper): validation metrics will be computed "
            "on correlated augmented copies and are optimistic"
        )
        splits.append("val")
    train = cases[cases["split"] == "train"]
    if train.empty:
        return pd.DataFrame(columns=columns)
    minority = minority_label(train["label"].to_numpy())
    rows = []
    for rec in cases[cases["split"].isin(splits)].itertuples(index=False):
        if int(rec.label) != minority:
            continue
        group = getattr(rec, "group", rec.case_id)
        for k in range(1, cfg.factor):
            ops = _ops_for(k)
            rows.append(
                (
                    f"{rec.case_id}#aug{k}",
                    rec.case_id,
                    int(rec.label),
                    rec.split,
                    group,
                    "+".join(ops),
                    _noise_seed(seed, str(rec.case_id), k) if "noise" in ops else 0,
                )
            )
    return pd.DataFrame(rows, columns=columns)


def apply_augmentation(
    image: np.ndarray,
    mask: np.ndarray | None,
    ops: str | tuple[str, ...],
    noise_seed: int = 0,
    noise_std: float = 0.05,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply a planned copy's operations to an image (and its mask).

    Flips act on image and mask alike; noise only on the image, with SD
    ``noise_std`` x the image's intensity range, clipped to the original range so a
    normalised crop stays in its range.
    """
    if isinstance(ops, str):
        ops = tuple(o for o in ops.split("+") if o)
    unknown = set(ops) - {"hflip", "vflip", "noise"}
    if unknown:
        raise ValueError(f"unknown augmentation operation(s): {sorted(unknown)}")
    img = image
    m = mask
    if "hflip" in ops:
        img = img[:, ::-1]
        m = m[:, ::-1] if m is not None else None
    if "vflip" in ops:
        img = img[::-1, :]
        m = m[::-1, :] if m is not None else None
    img = np.ascontiguousarray(img, dtype=np.float32)
    if "noise" in ops:
        lo, hi = float(img.min()), float(img.max())
        rng = np.random.default_rng(noise_seed)
        noisy = img + rng.normal(0.0, noise_std * max(hi - lo, 1e-6), img.shape)
        img = np.clip(noisy, lo, hi).astype(np.float32)
    return img, (np.ascontiguousarray(m) if m is not None else None)
