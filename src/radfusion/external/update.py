"""Model updating after an external validation: a recalibrated *new version* of a bundle.

The parent bundle is never touched. The new version holds byte copies of the parent's
model and network files (same SHA-256 in ``bundle.json``) and a new ``bundle.json`` whose
model entries carry ``recalibration`` (the logistic map, fitted on the external cases) and
whose ``updates`` list records the provenance: the parent bundle's SHA-256, the external
cohort's SHA-256, the method, the cohort's size and centres, the date and the radfusion
version. :func:`radfusion.bundle.predict_bundle` applies the map, so ``radfusion predict``
and ``radfusion serve`` give the recalibrated probabilities.

The decision of each model does not change: the frozen threshold is mapped through the
same increasing function, so every case is classified exactly as by the parent bundle; the
class is decided on the model's own score at the frozen threshold.
"""

from __future__ import annotations

import copy
import datetime as _dt
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from radfusion import __version__
from radfusion.bundle import Bundle, bundle_sha256, load_bundle, write_digest
from radfusion.layout import BundleLayout
from radfusion.stats import recalibrate
from radfusion.utils import BUNDLE_TEMP_PREFIX, atomic_folder, atomic_write_json, file_sha256

__all__ = [
    "provenance",
    "write_bundle_version",
    "write_recalibrated_bundle",
]


def _composed(entry: dict[str, Any], a: float, b: float) -> dict[str, float]:
    """The new map on top of a model's earlier recalibration, if it has one.

    ``expit(a + b * logit(expit(a1 + b1 * logit p)))`` is ``expit(a + b*a1 + b*b1 * logit p)``,
    and the frozen threshold stays the one on the model's own score.
    """
    old = entry.get("recalibration")
    if old:
        a1, b1 = float(old["intercept"]), float(old["slope"])
        return {
            "intercept": a + b * a1,
            "slope": b * b1,
            "frozen_threshold": float(old["frozen_threshold"]),
        }
    return {"intercept": a, "slope": b, "frozen_threshold": float(entry["threshold"])}


def write_recalibrated_bundle(
    bundle: Bundle,
    table: pd.DataFrame,
    method: str,
    dest: Path,
    *,
    cohort_sha256: str,
    cohort: dict[str, Any],
) -> tuple[Path, dict[str, str]]:
    """Write a new bundle version whose models are recalibrated with ``method``.

    Parameters
    ----------
    bundle : Bundle
        The parent (verified); nothing in its folder is written.
    table : DataFrame
        :func:`radfusion.external.tables.recalibration_table`'s rows.
    method : {"intercept", "logistic"}
    dest : Path
        The new bundle folder (must not exist).
    cohort_sha256 : str
        Content hash of the external cohort the maps were fitted on.
    cohort : dict
        Aggregate facts about that cohort (``n``, ``events``, ``centres``).

    Returns
    -------
    (Path, dict)
        ``dest``, and model -> why it was left as it was (a model whose map could not be
        fitted keeps its frozen probabilities).
    """
    meta = copy.deepcopy(bundle.meta)
    rows = table[table["method"] == method].set_index("model")
    skipped: dict[str, str] = {}
    for e in meta["models"]:
        r = rows.loc[e["model"]] if e["model"] in rows.index else None
        if r is None or r["note"]:
            skipped[e["model"]] = "no map fitted" if r is None else str(r["note"])
            continue
        rec = _composed(e, float(r["intercept"]), float(r["slope"]))
        e["threshold"] = float(
            recalibrate([rec["frozen_threshold"]], rec["intercept"], rec["slope"])[0]
        )
        e["recalibration"] = {"method": method, **rec}
    update = {
        "kind": "recalibration",
        "method": method,
        "not_recalibrated": skipped,
        **provenance(bundle, cohort_sha256, cohort),
    }
    label = "intercept" if method == "intercept" else "intercept and slope"
    caveat = (
        f"Recalibrated ({label}) on an external cohort of {cohort['n']} images "
        f"({cohort['events']} positive) on {update['created'][:10]}: probabilities differ "
        "from the development study's; each model's decisions (its frozen threshold) are "
        "unchanged."
    )
    write_bundle_version(bundle, meta, dest, update=update, caveat=caveat)
    return Path(dest), skipped


def provenance(bundle: Bundle, cohort_sha256: str, cohort: dict[str, Any]) -> dict[str, Any]:
    """Where a new bundle version comes from: parent, external cohort, date, version."""
    return {
        "parent_bundle_sha256": bundle_sha256(bundle),
        "external_cohort_sha256": cohort_sha256,
        "external_cohort": cohort,
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "radfusion": __version__,
    }


def write_bundle_version(
    bundle: Bundle,
    meta: dict[str, Any],
    dest: Path,
    *,
    update: dict[str, Any],
    caveat: str,
    rewrite: Mapping[str, Callable[[Path], None]] | None = None,
) -> Path:
    """Write ``meta`` as a new version of ``bundle`` at ``dest`` (atomically) and verify it.

    Every file of the parent is copied byte for byte (and checked against its recorded
    SHA-256), except those in ``rewrite``, each written by its function and re-hashed;
    ``update`` is appended to ``meta["updates"]`` and ``caveat`` to the model card's. The
    parent's folder is only read.
    """
    meta["updates"] = [*meta.get("updates", []), update]
    card = meta.setdefault("card", {})
    card["caveats"] = [*card.get("caveats", []), caveat]
    dest = Path(dest)
    with atomic_folder(dest, prefix=BUNDLE_TEMP_PREFIX) as tmp:
        for rel in meta["files"]:
            target = BundleLayout(tmp).file(rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            if rewrite and rel in rewrite:
                rewrite[rel](target)
                meta["files"][rel] = file_sha256(target)
                continue
            shutil.copy2(bundle.layout.file(rel), target)
            if file_sha256(target) != meta["files"][rel]:  # changed while copying
                raise OSError(f"{bundle.layout.file(rel)} changed while it was copied")
        atomic_write_json(BundleLayout(tmp).meta, meta)
        write_digest(tmp)
    load_bundle(dest)  # the new version verifies like any bundle
    return dest
