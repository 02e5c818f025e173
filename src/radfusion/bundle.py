"""The model bundle: everything ``radfusion predict`` needs, and nothing that runs code.

A bundle is a directory::

    bundle/
      bundle.json          format, versions, settings, every model with its threshold,
                           and the SHA-256 of every other file
      config.yaml          the study config (preprocessing, readers, deep settings)
      radiomics_params.yaml  the PyRadiomics parameter file used
      models/<family>/<classifier>.skops   fitted scikit-learn pipelines (skops)
      networks/<arm>/network.json + network.safetensors   ResNet weights

Loading never unpickles: scikit-learn objects come from skops with an explicit list of
trusted types (:mod:`radfusion.models.io`), network weights from safetensors, settings
from JSON / YAML. A file whose hash differs from ``bundle.json`` (tampered or
corrupted) or a bundle written by an incompatible radfusion is refused with a clear
error.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radfusion import __version__
from radfusion.config import StudyConfig, radiomics_params_path
from radfusion.data.manifest import Case
from radfusion.errors import RadfusionError
from radfusion.pipeline.run import library_versions
from radfusion.utils import atomic_write_json, file_sha256

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "radfusion-bundle/1"
MERGED_ARM = {"merged1": "1ch", "merged2": "2ch"}
#: Families scored from other models' scores (and clinical values), after those models.
SCORE_LEVEL_FAMILIES = ("stacked", "clinical")


class BundleError(RadfusionError):
    """A bundle that is missing, tampered with or incompatible."""


def export_bundle(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Export a finished run's models into a bundle directory (atomically).

    Parameters
    ----------
    run_dir : Path
        A run folder whose evaluation stage has finished (thresholds are taken from it).
    out_dir : Path
        The bundle directory to write (replaced if it exists).

    Returns
    -------
    Path
        ``out_dir``.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    cfg = StudyConfig.from_yaml(run_dir / "config.yaml")
    thresholds_path = run_dir / "evaluation" / "thresholds.json"
    if not thresholds_path.is_file():
        raise BundleError(f"{run_dir} has no evaluation/thresholds.json; run the evaluation first")
    thresholds = json.loads(thresholds_path.read_text())
    thresholds = thresholds.get("thresholds", thresholds)
    preds = pd.read_parquet(run_dir / "predictions.parquet")
    models = (
        preds[["family", "model", "classifier", "selected"]]
        .drop_duplicates(["family", "model"])
        .to_dict("records")
    )
    tmp = Path(
        tempfile.mkdtemp(prefix=".bundle-", dir=out_dir.parent if out_dir.parent.exists() else None)
    )
    try:
        entries = []
        for m in models:
            fam, clf = m["family"], m["classifier"]
            entry: dict[str, Any] = {
                "family": fam,
                "model": m["model"],
                "classifier": clf,
                "selected": bool(m["selected"]),
                "threshold": float(thresholds[m["model"]]),
            }
            if fam in ("1ch", "2ch"):
                entry["network"] = f"networks/{fam}"
            else:
                src = (
                    run_dir
                    / "models"
                    / fam
                    / ("ClinicalLR.skops" if fam == "clinical" else f"{clf}.skops")
                )
                dst = tmp / "models" / fam / src.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
                entry["file"] = f"models/{fam}/{src.name}"
                if fam in MERGED_ARM:
                    entry["network"] = f"networks/{MERGED_ARM[fam]}"
                if fam == "clinical":
                    entry["source"] = json.loads(
                        (run_dir / "models" / "clinical" / "source.json").read_text()
                    )
                    entry["clinical"] = {
                        "numeric": cfg.data.clinical.numeric,
                        "categorical": cfg.data.clinical.categorical,
                    }
                if fam == "stacked":
                    source = json.loads(
                        (run_dir / "models" / "stacked" / "source.json").read_text()
                    )
                    entry["inputs"] = [
                        {"family": a["family"], "classifier": a["classifier"]}
                        for a in source["arms"]
                    ]
                    entry["clinical"] = source.get("clinical") or {
                        "numeric": [],
                        "categorical": [],
                    }
            entries.append(entry)
        # each network once, for its own arm and for the Merged model built on it
        for rel in sorted({e["network"] for e in entries if "network" in e}):
            arm = rel.split("/")[1]
            (tmp / rel).mkdir(parents=True)
            for name in ("network.json", "network.safetensors"):
                shutil.copy2(run_dir / "deep" / arm / name, tmp / rel / name)
        shutil.copy2(run_dir / "config.yaml", tmp / "config.yaml")
        shutil.copy2(radiomics_params_path(cfg.radiomics.params), tmp / "radiomics_params.yaml")
        files = {
            str(p.relative_to(tmp)): file_sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()
        }
        atomic_write_json(
            tmp / "bundle.json",
            {
                "format": BUNDLE_FORMAT,
                "radfusion": __version__,
                "versions": library_versions(),
                "study": cfg.name,
                "positive_class": "1 = APT/PC (malignant)",
                "threshold_rule": f"{cfg.evaluation.threshold} on "
                f"{cfg.evaluation.threshold_source}",
                "models": entries,
                "files": files,
            },
        )
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir


@dataclass
class Bundle:
    """A verified bundle, ready to score new cases."""

    path: Path
    meta: dict[str, Any]
    config: StudyConfig

    @property
    def models(self) -> list[dict[str, Any]]:
        return list(self.meta["models"])


def load_bundle(path: str | Path) -> Bundle:
    """Open and verify a bundle (format, versions, file hashes). Nothing is executed.

    Raises
    ------
    BundleError
        Missing files, hash mismatch (tampered or corrupted), unknown format.
    """
    path = Path(path)
    meta_path = path / "bundle.json"
    if not meta_path.is_file():
        raise BundleError(f"{path} is not a radfusion bundle (bundle.json missing)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{meta_path} is not valid JSON: {exc}") from None
    if meta.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{path}: bundle format {meta.get('format')!r} is not supported by radfusion "
            f"{__version__} (expects {BUNDLE_FORMAT})"
        )
    for rel, digest in meta.get("files", {}).items():
        f = path / rel
        if not f.is_file():
            raise BundleError(f"{path}: bundle file {rel} is missing")
        if file_sha256(f) != digest:
            raise BundleError(
                f"{path}: {rel} does not match its recorded SHA-256: the bundle was modified "
                "or corrupted; refusing to use it"
            )
    listed = set(meta.get("files", {}))
    extra = [
        str(p.relative_to(path))
        for p in path.rglob("*")
        if p.is_file() and p.name != "bundle.json" and str(p.relative_to(path)) not in listed
    ]
    if extra:
        log.warning("%s: files not part of the bundle are ignored: %s", path, extra)
    ours, theirs = library_versions(), meta.get("versions", {})
    for pkg in ("scikit-learn", "xgboost", "lightgbm", "pyradiomics-bhklab", "torch", "monai"):
        if theirs.get(pkg) and ours.get(pkg) != theirs.get(pkg):
            log.warning(
                "bundle made with %s %s, running %s: predictions may differ slightly",
                pkg,
                theirs.get(pkg),
                ours.get(pkg),
            )
    cfg = StudyConfig.from_yaml(path / "config.yaml")
    cfg.radiomics.params = str(path / "radiomics_params.yaml")
    return Bundle(path, meta, cfg)


def _clinical_frame(cases: Sequence[Case], columns: dict[str, list[str]]) -> pd.DataFrame:
    """The clinical values of new cases; a column never given is all missing (imputed)."""
    X = pd.DataFrame([c.clinical for c in cases], index=[c.case_id for c in cases])
    for col in [*columns.get("numeric", []), *columns.get("categorical", [])]:
        if col not in X.columns:
            X[col] = np.nan
    return X


def predict_bundle(
    bundle: Bundle | str | Path,
    cases: Sequence[Case],
    *,
    progress: bool = False,
) -> pd.DataFrame:
    """Score new cases with every model of a bundle.

    Parameters
    ----------
    bundle : Bundle or path
    cases : sequence of Case
        Image + ROI (+ clinical values in ``Case.clinical``); labels are ignored.

    Returns
    -------
    DataFrame
        One row per case and model: case_id, family, model, classifier, selected,
        probability, threshold, predicted_class (1 = APT/PC when probability >= threshold).
    """
    from radfusion.deep.arm import predict_cases
    from radfusion.fusion.clinical import SCORE_COLUMN
    from radfusion.fusion.stacking import score_column
    from radfusion.models.io import load_pipeline
    from radfusion.radiomics import extract_radiomics

    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    cfg = b.config
    ids = [c.case_id for c in cases]
    with tempfile.TemporaryDirectory(prefix="radfusion-predict-") as tmp:
        rad = extract_radiomics(
            list(cases), cfg, Path(tmp) / "radiomics", n_jobs=1, progress=progress
        ).features
    deep: dict[str, pd.DataFrame] = {}
    for arm in ("1ch", "2ch"):
        if (b.path / "networks" / arm).is_dir():
            deep[arm] = predict_cases(
                b.path / "networks" / arm,
                list(cases),
                device=cfg.deep.device,
                dicom_frame=cfg.data.dicom_frame,
                mask_label=cfg.data.mask_label,
            )
    rows = []
    scores: dict[tuple[str, str], pd.Series] = {}
    # the stacked and clinical models combine the other models' scores: score them last
    ordered = sorted(b.models, key=lambda e: e["family"] in SCORE_LEVEL_FAMILIES)
    for e in ordered:
        fam = e["family"]
        if fam in ("1ch", "2ch"):
            prob = deep[fam]["probability"].reindex(ids).to_numpy()
        elif fam in SCORE_LEVEL_FAMILIES:
            X = _clinical_frame(cases, e["clinical"])
            if fam == "clinical":
                src = e["source"]
                key = (src["imaging_family"], src["imaging_classifier"])
                X[SCORE_COLUMN] = scores[key].reindex(ids).to_numpy()
            else:
                for inp in e["inputs"]:
                    key = (inp["family"], inp["classifier"])
                    X[score_column(inp["family"])] = scores[key].reindex(ids).to_numpy()
            prob = load_pipeline(b.path / e["file"]).predict_proba(X)[:, 1]
        else:
            X = rad
            if fam in MERGED_ARM:
                d = deep[MERGED_ARM[fam]].drop(columns=["probability"])
                X = rad.join(d, how="inner")
            prob = load_pipeline(b.path / e["file"]).predict_proba(X.loc[ids])[:, 1]
        scores[(fam, e["classifier"])] = pd.Series(prob, index=ids)
        for cid, p in zip(ids, prob, strict=True):
            rows.append(
                {
                    "case_id": cid,
                    "family": fam,
                    "model": e["model"],
                    "classifier": e["classifier"],
                    "selected": e["selected"],
                    "probability": float(p),
                    "threshold": e["threshold"],
                    "predicted_class": int(p >= e["threshold"]),
                }
            )
    return pd.DataFrame(rows)
