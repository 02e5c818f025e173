"""Harmonising a new centre: reference-batch ComBat for the external cohort.

A bundle harmonised with ComBat holds the training centres' estimates only, so the
frozen models pass an external centre's cases through unadjusted, exactly where
harmonisation would matter. Here each ComBat step of the bundle's models estimates the
new centre's location and scale from that centre's own features (labels never used) and
maps them onto the training reference
(:meth:`radfusion.harmonization.ComBatHarmonizer.add_batches`); a centre with fewer than
``min_cases`` cases stays unadjusted. The frozen result is never replaced: the harmonised
one is reported beside it, and written into a new bundle version only when asked.

The features each ComBat step needs are the ones it was given while the frozen models
scored the cases (:func:`radfusion.harmonization.recorded_inputs`), so the frozen scoring
itself supplies them: no second feature pipeline.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from radfusion.bundle import Bundle
from radfusion.data.manifest import Case
from radfusion.external.update import provenance, write_bundle_version
from radfusion.harmonization import iter_harmonizers
from radfusion.harmonization.pipeline import cases_meta
from radfusion.models.io import save_pipeline

__all__ = ["HarmonisedScoring", "harmonise_new_centres", "uses_combat", "write_harmonised_bundle"]


def uses_combat(bundle: Bundle) -> bool:
    """Whether the bundle's models harmonise features with ComBat."""
    return bundle.config.harmonization.method == "combat"


@dataclass
class HarmonisedScoring:
    """A copy of a bundle whose ComBat steps can learn new centres.

    ``bundle`` scores exactly as the original until :func:`harmonise_new_centres` ran;
    ``pipelines`` maps each model file to its (private) pipeline copy.
    """

    bundle: Bundle
    pipelines: dict[str, Any]
    added: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, bundle: Bundle) -> HarmonisedScoring:
        """Private, tagged copies of every model pipeline that holds a fitted ComBat step."""
        pipelines: dict[str, Any] = {}
        for e in bundle.models:
            rel = e.get("file")
            if not rel or rel in pipelines:
                continue
            pipe = copy.deepcopy(bundle.pipeline(rel))
            fitted = [h for h in iter_harmonizers(pipe) if hasattr(h, "gamma_star_")]
            for i, h in enumerate(fitted):
                h.tag_ = f"{rel}#{i}"
            pipelines[rel] = pipe
        # the copy reads its pipelines from here instead of the bundle's shared cache
        copy_ = Bundle(bundle.path, bundle.meta, bundle.config, _loaded=dict(pipelines))
        return cls(copy_, pipelines)


def harmonise_new_centres(
    scoring: HarmonisedScoring,
    recorded: dict[str, pd.DataFrame],
    cases: Sequence[Case],
    *,
    min_cases: int,
) -> dict[str, int]:
    """Estimate every unseen centre with enough cases in each ComBat step of the copy.

    Parameters
    ----------
    scoring : HarmonisedScoring
        The copy that scored the cases under :func:`radfusion.harmonization.recorded_inputs`.
    recorded : dict
        What that recording saw (tag -> features at the ComBat step's input).
    cases : sequence of Case
        The external cases (their centre and the covariates come from here).
    min_cases : int
        Fewest cases of a centre.

    Returns
    -------
    dict
        Centre -> cases its estimates come from (empty: nothing could be harmonised).
    """
    meta = cases_meta(scoring.bundle.config, cases)
    added: dict[str, int] = {}
    for pipe in scoring.pipelines.values():
        for h in iter_harmonizers(pipe):
            X = recorded.get(getattr(h, "tag_", None) or "")
            if X is None:
                continue
            added.update(h.add_batches(X, meta, min_cases=min_cases))
    scoring.added = added
    return added


def write_harmonised_bundle(
    bundle: Bundle,
    scoring: HarmonisedScoring,
    dest: Path,
    *,
    cohort_sha256: str,
    cohort: dict[str, Any],
    min_cases: int,
) -> Path:
    """A new bundle version whose ComBat steps also know the external centres.

    The parent is not touched: its other files are byte copies, the re-saved model files
    get new SHA-256s in ``bundle.json``, and ``updates`` records the parent's hash, the
    cohort's hash, the centres added and the minimum size used.
    """
    update = {
        "kind": "harmonisation",
        "method": "combat-reference-batch",
        "centres": scoring.added,
        "min_cases": min_cases,
        **provenance(bundle, cohort_sha256, cohort),
    }
    caveat = (
        f"ComBat also adjusts centre(s) {', '.join(scoring.added)}, estimated on "
        f"{update['created'][:10]} from their own unlabelled features (reference-batch "
        "harmonisation onto the training centres)."
    )

    def saver(rel: str) -> Callable[[Path], None]:
        def save(target: Path) -> None:
            pipe = copy.deepcopy(scoring.pipelines[rel])
            for h in iter_harmonizers(pipe):
                h.__dict__.pop("tag_", None)
            save_pipeline(pipe, target)

        return save

    rewrite = {rel: saver(rel) for rel in scoring.pipelines}
    meta = copy.deepcopy(bundle.meta)
    return write_bundle_version(bundle, meta, dest, update=update, caveat=caveat, rewrite=rewrite)
