"""The model bundle: everything ``radfusion predict`` needs, and nothing that runs code.

A bundle is a directory::

    bundle/
      bundle.json          format, versions, settings, every model with its threshold,
                           and the SHA-256 of every other file
      bundle.json.sha256   the SHA-256 of bundle.json itself (``sha256sum -c`` format)
      config.yaml          the study config (preprocessing, readers, deep settings)
      radiomics_params.yaml  the PyRadiomics parameter file used
      models/<family>/<classifier>.skops   fitted scikit-learn pipelines (skops)
      networks/<arm>/network.json + network.safetensors   ResNet weights

Loading never unpickles: scikit-learn objects come from skops with an explicit list of
trusted types (:mod:`radfusion.models.io`), network weights from safetensors, settings
from JSON / YAML. A bundle is untrusted input: a ``bundle.json`` that does not match
``bundle.json.sha256``, a path leading outside the bundle, a used file without a recorded
hash or whose hash differs from ``bundle.json`` (corrupted or edited), a damaged model
file or a bundle written by an incompatible radfusion is refused with a clear error;
settings of the training machine (dask scheduler, cache folders, weight and manifest
paths) are ignored. The hashes catch corruption and careless edits of any byte, but
whoever can edit a bundle can also recompute them: against deliberate tampering, the
optional signature of ``bundle.json`` is checked against a key the user trusts
(:mod:`radfusion.signing`; ``predict``/``serve --trusted-key``).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from radfusion import __version__
from radfusion.card import model_card
from radfusion.config import StudyConfig, radiomics_params_path
from radfusion.data.manifest import Case
from radfusion.errors import RadfusionError
from radfusion.families import DEEP_ARMS, MERGED_ARMS
from radfusion.layout import RunLayout
from radfusion.utils import atomic_write_json, atomic_write_text, file_sha256, honour_umask
from radfusion.versions import library_versions

if TYPE_CHECKING:
    from radfusion.fusion.study_model import ModelSpec, StudyModel

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "radfusion-bundle/1"
#: The bundle's description, and the file holding its SHA-256.
META_FILE = "bundle.json"
DIGEST_FILE = "bundle.json.sha256"


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
    run = RunLayout(run_dir)
    cfg = StudyConfig.from_yaml(run.config)
    thresholds_path = run.thresholds
    if not thresholds_path.is_file():
        rel = thresholds_path.relative_to(run_dir)
        raise BundleError(f"{run_dir} has no {rel.as_posix()}; run the evaluation first")
    thresholds = json.loads(thresholds_path.read_text())
    thresholds = thresholds.get("thresholds", thresholds)
    from radfusion.evaluation.prior import (
        predictions_shifted,
        probability_card,
        run_prior_shifts,
    )

    preds = pd.read_parquet(run.predictions)
    shifts = run_prior_shifts(run, cfg, preds)
    if not predictions_shifted(run, preds, shifts):
        # evaluated by an older radfusion: probabilities and thresholds on the models' own
        # scale; shifting them here would change calls
        log.warning(
            "%s was evaluated before radfusion corrected the training prior: the bundle keeps "
            "the models' own probabilities (re-run the evaluation to correct them)",
            run_dir,
        )
        shifts = {
            m: {**s, "log_odds": 0.0, "reason": "not applied (older evaluation)"}
            for m, s in shifts.items()
        }
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
                # the training prior undone (radfusion.evaluation.prior); the threshold
                # is on the corrected scale
                "prior_shift": shifts[m["model"]],
            }
            if fam in DEEP_ARMS:
                entry["network"] = f"networks/{fam}"
            else:
                src = run.model_file(fam, clf)
                dst = tmp / "models" / fam / src.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
                entry["file"] = f"models/{fam}/{src.name}"
                if fam in MERGED_ARMS:
                    entry["network"] = f"networks/{MERGED_ARMS[fam]}"
                if fam == "clinical":
                    entry["source"] = json.loads(run.model_source("clinical").read_text())
                    entry["clinical"] = {
                        "numeric": cfg.data.clinical.numeric,
                        "categorical": cfg.data.clinical.categorical,
                        "categories": _training_categories(run_dir, cfg),
                    }
                if fam == "stacked":
                    source = json.loads(run.model_source("stacked").read_text())
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
            # the bundle's network folder holds the arm folder's network files, same names
            for src in (run.deep(arm).spec, run.deep(arm).weights):
                shutil.copy2(src, tmp / rel / src.name)
        shutil.copy2(run.config, tmp / "config.yaml")
        shutil.copy2(radiomics_params_path(cfg.radiomics.params), tmp / "radiomics_params.yaml")
        files = {
            str(p.relative_to(tmp)): file_sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()
        }
        atomic_write_json(
            tmp / META_FILE,
            {
                "format": BUNDLE_FORMAT,
                "radfusion": __version__,
                "versions": library_versions(),
                "study": cfg.name,
                "positive_class": "1 = APT/PC (malignant)",
                "threshold_rule": f"{cfg.evaluation.threshold} on "
                f"{cfg.evaluation.threshold_source}",
                "models": entries,
                # the model card, with how the probabilities were corrected and which
                # models' probabilities must not be read as risks
                "card": {**model_card(run_dir), **probability_card(preds, shifts, cfg)},
                "files": files,
            },
        )
        write_digest(tmp)
        honour_umask(tmp, directory=True)  # mkdtemp made it 0700
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir


def bundle_sha256(bundle: Bundle) -> str:
    """SHA-256 of a bundle's ``bundle.json``, which records the hash of every other file:
    the one identity of a bundle (model card, web page, external-validation provenance)."""
    return file_sha256(bundle.path / META_FILE)


def write_digest(bundle: str | Path) -> Path:
    """Record the SHA-256 of ``bundle/bundle.json`` in ``bundle/bundle.json.sha256``.

    Written by :func:`export_bundle` (and checked by :func:`load_bundle`) so that a change
    of any byte of ``bundle.json`` is caught, like a change of any file it lists.

    Returns
    -------
    Path
        The digest file.
    """
    bundle = Path(bundle)
    target = bundle / DIGEST_FILE
    atomic_write_text(target, f"{file_sha256(bundle / META_FILE)}  {META_FILE}\n")
    return target


def _check_digest(path: Path) -> None:
    """Refuse a bundle whose ``bundle.json`` does not match its recorded SHA-256."""
    digest_path = path / DIGEST_FILE
    if not digest_path.is_file():
        raise BundleError(
            f"{path}: {DIGEST_FILE} is missing, so bundle.json cannot be verified (a damaged "
            "bundle, or one written by an older radfusion); rebuild it from its run folder with "
            "`radfusion run CONFIG --from bundle`"
        )
    try:
        recorded = digest_path.read_text(encoding="ascii").split()[0].lower()
    except (UnicodeDecodeError, IndexError, OSError):
        recorded = ""
    if file_sha256(path / META_FILE) != recorded:
        raise BundleError(
            f"{path}: bundle.json does not match its recorded SHA-256 ({DIGEST_FILE}): the "
            "bundle was modified or corrupted; refusing to use it"
        )


def _training_categories(run_dir: Path, cfg: StudyConfig) -> dict[str, list[str]]:
    """Categorical clinical values of the training cases (to flag unseen ones at predict)."""
    cols = cfg.data.clinical.categorical
    if not cols:
        return {}
    cases = pd.read_csv(RunLayout(run_dir).cases, dtype=str, keep_default_na=False)
    train = cases[cases["split"] == "train"]
    return {c: sorted({v for v in train[c] if v}) for c in cols if c in train.columns}


@dataclass
class Bundle:
    """A verified bundle, ready to score new cases."""

    path: Path
    meta: dict[str, Any]
    config: StudyConfig
    _loaded: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def models(self) -> list[dict[str, Any]]:
        return list(self.meta["models"])

    def pipeline(self, rel: str) -> Any:
        """The fitted model stored at ``rel``, loaded once and then shared (read-only use;
        a long-lived server then pays skops' slow loading once)."""
        from radfusion.models.io import load_pipeline

        with self._lock:
            if rel not in self._loaded:
                self._loaded[rel] = load_pipeline(self.path / rel)
            return self._loaded[rel]

    def study_model(self) -> StudyModel:
        """The bundle's models as the study object that scores cases."""
        from radfusion.fusion.study_model import StudyModel

        return StudyModel(
            [_model_spec(e) for e in self.models],
            lambda spec: self.pipeline(self._files[(spec.family, spec.classifier)]),
        )

    @property
    def _files(self) -> dict[tuple[str, str], str]:
        return {(e["family"], e["classifier"]): e["file"] for e in self.models if "file" in e}

    def network(self, arm: str) -> Any:
        """The trained network of a deep arm (``networks/<arm>``), loaded once."""
        from radfusion.deep.arm import load_trained_network

        rel = f"networks/{arm}"
        with self._lock:
            if rel not in self._loaded:
                self._loaded[rel] = load_trained_network(self.path / rel)
            return self._loaded[rel]


#: Settings of a bundle's config that would reach the network or the local disk at
#: predict time; they belong to the machine that trained, so loading ignores them.
_MACHINE_SETTINGS = (
    ("radiomics", "dask_scheduler"),
    ("radiomics", "cache_dir"),
    ("deep", "pretrained_weights"),
    ("data", "manifest"),
)


def _inside(path: Path, rel: Any, what: str) -> Path:
    """``path / rel`` when ``rel`` is a plain relative path that stays inside the bundle."""
    if not isinstance(rel, str) or not rel or "\\" in rel:
        raise BundleError(f"{path}: {what} {rel!r} is not a relative file path; refusing it")
    parts = PurePosixPath(rel).parts
    if PurePosixPath(rel).is_absolute() or ".." in parts or any(":" in p for p in parts):
        raise BundleError(
            f"{path}: {what} {rel!r} points outside the bundle folder; refusing the bundle"
        )
    full = path / rel
    try:
        full.resolve().relative_to(path.resolve())
    except ValueError:
        raise BundleError(
            f"{path}: {what} {rel!r} leads outside the bundle folder (a link?); refusing it"
        ) from None
    return full


def _check_meta(meta: Any, meta_path: Path) -> None:
    """Refuse a bundle.json whose structure is not what radfusion writes."""

    def bad(why: str) -> BundleError:
        return BundleError(f"{meta_path} is not a valid radfusion bundle description: {why}")

    if not isinstance(meta, dict):
        raise bad(f"it holds a JSON {type(meta).__name__}, not an object")
    if meta.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{meta_path.parent}: bundle format {meta.get('format')!r} is not supported by "
            f"radfusion {__version__} (expects {BUNDLE_FORMAT})"
        )
    files = meta.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        raise bad("'files' (file name -> SHA-256) is missing or malformed")
    models = meta.get("models")
    if not isinstance(models, list) or not models:
        raise bad("'models' is missing or empty")
    for e in models:
        if not isinstance(e, dict):
            raise bad("an entry of 'models' is not an object")
        for k, typ in (("family", str), ("model", str), ("classifier", str)):
            if not isinstance(e.get(k), typ):
                raise bad(f"a model entry lacks a text '{k}'")
        if not isinstance(e.get("threshold"), int | float) or isinstance(e["threshold"], bool):
            raise bad(f"model {e['model']!r} has no numeric 'threshold'")
        if "file" not in e and "network" not in e:
            raise bad(f"model {e['model']!r} names neither a 'file' nor a 'network'")
        if "recalibration" in e:
            _check_recalibration(e, bad)
        if "prior_shift" in e:
            shift = e["prior_shift"].get("log_odds") if isinstance(e["prior_shift"], dict) else None
            if (
                not isinstance(shift, int | float)
                or isinstance(shift, bool)
                or not np.isfinite(shift)
            ):
                raise bad(f"model {e['model']!r} has a malformed 'prior_shift'")


def _check_recalibration(entry: dict[str, Any], bad: Any) -> None:
    """A recalibrated model (``radfusion evaluate --recalibrate``) must carry a usable map."""
    r = entry["recalibration"]
    numbers = ("intercept", "slope", "frozen_threshold")
    if not isinstance(r, dict) or not all(
        isinstance(r.get(k), int | float) and not isinstance(r.get(k), bool) for k in numbers
    ):
        raise bad(f"model {entry['model']!r} has a malformed 'recalibration'")
    if not all(np.isfinite(float(r[k])) for k in numbers) or float(r["slope"]) <= 0:
        raise bad(f"model {entry['model']!r}: recalibration needs finite values, a slope > 0")


def _recalibrated(bundle: Bundle, scored: pd.DataFrame) -> pd.DataFrame:
    """Apply the recalibration of models updated on an external cohort.

    The class is decided on the model's own score at its frozen threshold (exactly the
    parent bundle's decision); the probability and threshold shown are recalibrated.
    """
    from radfusion.stats import recalibrate

    for e in bundle.models:
        r = e.get("recalibration")
        if not r:
            continue
        rows = scored["model"] == e["model"]
        raw = scored.loc[rows, "probability"].to_numpy(dtype=float)
        scored.loc[rows, "predicted_class"] = (raw >= float(r["frozen_threshold"])).astype(int)
        scored.loc[rows, "probability"] = recalibrate(raw, r["intercept"], r["slope"])
        scored.loc[rows, "threshold"] = float(e["threshold"])
    return scored


def _used_files(meta: dict[str, Any]) -> list[str]:
    """Every bundle file that scoring reads (each must be listed and hash-checked)."""
    used = ["config.yaml", "radiomics_params.yaml"]
    for e in meta["models"]:
        if "file" in e:
            used.append(e["file"])
        if "network" in e:
            used += [f"{e['network']}/network.json", f"{e['network']}/network.safetensors"]
    return list(dict.fromkeys(used))


def _check_formats(path: Path, meta: dict[str, Any]) -> None:
    """Open every model and network file's header, so a damaged one is named at load."""
    from safetensors import safe_open

    from radfusion.deep.arm import load_network_spec
    from radfusion.models.io import check_pipeline_file

    for e in meta["models"]:
        try:
            if "file" in e:
                check_pipeline_file(path / e["file"])
            if "network" in e:
                load_network_spec(path / e["network"])
        except RadfusionError as exc:
            raise BundleError(str(exc)) from None
    for rel in sorted({e["network"] for e in meta["models"] if "network" in e}):
        weights = path / rel / "network.safetensors"
        try:
            with safe_open(str(weights), framework="pt") as fh:
                fh.keys()
        except Exception as exc:  # SafetensorError, OSError
            raise BundleError(f"{weights} is not a readable safetensors file: {exc}") from None


def check_bundle_formats(bundle: Bundle) -> None:
    """Open every model and network file's header of a loaded bundle (see :func:`load_bundle`).

    Raises
    ------
    BundleError
        A file that is not what it claims.
    """
    _check_formats(bundle.path, bundle.meta)


def load_bundle(
    path: str | Path, *, trusted_key: str | Path | None = None, check_formats: bool = True
) -> Bundle:
    """Open and verify a bundle (structure, paths, hashes, file formats). Nothing is executed.

    Parameters
    ----------
    path : Path
        The bundle folder.
    trusted_key : Path, optional
        A key file the user trusts (shared secret or Ed25519 public key): the bundle's
        ``bundle.json.sig`` must then verify against it (:mod:`radfusion.signing`).
    check_formats : bool, default True
        Also open every model and network file's header now (it imports the deep-learning
        stack: seconds). ``radfusion serve`` defers it to its background loading, with
        :func:`check_bundle_formats`; the hashes are checked either way, and loading a
        model refuses untrusted types whatever this says.

    Raises
    ------
    BundleError
        Missing or malformed ``bundle.json``, or one that does not match
        ``bundle.json.sha256``; a path leading outside the bundle, a file that is missing,
        unlisted or whose hash differs (tampered or corrupted), a model or network file
        that is not what it claims, a bad signature, unknown format.
    """
    from radfusion.signing import SIGNATURE_FILE, SignatureError, verify_bundle_signature

    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise BundleError(f"{path} is not a radfusion bundle (bundle.json missing)")
    if trusted_key is not None:
        try:
            verify_bundle_signature(path, trusted_key)
        except SignatureError as exc:
            raise BundleError(str(exc)) from None
    _check_digest(path)
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{meta_path} is not valid JSON: {exc}") from None
    _check_meta(meta, meta_path)
    files = meta["files"]
    for rel in _used_files(meta):
        _inside(path, rel, "file")
        if rel not in files:
            raise BundleError(
                f"{path}: {rel} is used but has no recorded SHA-256 in bundle.json; "
                "refusing an unverifiable bundle"
            )
    for rel, digest in files.items():
        f = _inside(path, rel, "file")
        if not f.is_file():
            raise BundleError(f"{path}: bundle file {rel} is missing")
        if file_sha256(f) != digest:
            raise BundleError(
                f"{path}: {rel} does not match its recorded SHA-256: the bundle was modified "
                "or corrupted; refusing to use it"
            )
    listed = set(files)
    extra = [
        str(p.relative_to(path))
        for p in path.rglob("*")
        if p.is_file()
        and p.name not in (META_FILE, DIGEST_FILE, SIGNATURE_FILE)
        and str(p.relative_to(path)) not in listed
    ]
    if extra:
        log.warning("%s: files not part of the bundle are ignored: %s", path, extra)
    if check_formats:
        _check_formats(path, meta)
    ours, theirs = library_versions(), meta.get("versions", {})
    theirs = theirs if isinstance(theirs, dict) else {}
    for pkg in ("scikit-learn", "xgboost", "lightgbm", "pyradiomics-bhklab", "torch", "monai"):
        if theirs.get(pkg) and ours.get(pkg) != theirs.get(pkg):
            log.warning(
                "bundle made with %s %s, running %s: predictions may differ slightly",
                pkg,
                theirs.get(pkg),
                ours.get(pkg),
            )
    try:
        cfg = StudyConfig.from_yaml(path / "config.yaml")
    except (FileNotFoundError, ValueError) as exc:
        raise BundleError(f"{path / 'config.yaml'}: {exc}") from None
    for section, name in _MACHINE_SETTINGS:
        part = getattr(cfg, section)
        if getattr(part, name) is not None:
            log.info("bundle setting %s.%s ignored when scoring", section, name)
            setattr(part, name, None)
    cfg.radiomics.n_jobs = 1
    cfg.deep.num_workers = 0
    cfg.radiomics.params = str(path / "radiomics_params.yaml")
    return Bundle(path, meta, cfg)


def bundle_radiomics(
    bundle: Bundle, cases: Sequence[Case], *, progress: bool = False, scratch: Path | None = None
) -> pd.DataFrame:
    """The radiomics features of new cases, extracted with the bundle's settings.

    Parameters
    ----------
    bundle : Bundle
    cases : sequence of Case
    progress : bool
        Show a progress bar.
    scratch : Path, optional
        Folder for the extraction's intermediate files (default: the system's temporary
        folder); removed afterwards.

    Returns
    -------
    DataFrame
        One row per case (index ``case_id``), the features the bundle's models read.
    """
    from radfusion.radiomics import extract_radiomics

    with tempfile.TemporaryDirectory(prefix="radfusion-predict-", dir=scratch) as tmp:
        return extract_radiomics(
            list(cases),
            bundle.config,
            Path(tmp) / "radiomics",
            n_jobs=1,
            progress=progress,
            # a bundle trained before radfusion refused force2D scores new cases with the
            # features its models were trained on
            allow_force2d=True,
        ).features


def _clinical_frame(cases: Sequence[Case]) -> pd.DataFrame:
    """The clinical values of new cases (a column no case gives is added, all missing, where
    a model reads it: :meth:`~radfusion.fusion.study_model.ScoreInputs.frame`)."""
    X = pd.DataFrame([c.clinical for c in cases], index=[c.case_id for c in cases])
    # A blank category arrives as None, which scikit-learn's imputer does not see as
    # missing (it would become an unknown, all-zero category): make it NaN.
    return X.astype(object).where(X.notna(), np.nan)


def predict_bundle(
    bundle: Bundle | str | Path,
    cases: Sequence[Case],
    *,
    progress: bool = False,
    scratch: Path | None = None,
) -> pd.DataFrame:
    """Score new cases with every model of a bundle.

    Parameters
    ----------
    bundle : Bundle or path
    cases : sequence of Case
        Image + ROI (+ clinical values in ``Case.clinical``); labels are ignored.
    scratch : Path, optional
        Folder for the radiomics extraction's intermediate files (default: the system's
        temporary folder); ``radfusion serve`` keeps them in memory (tmpfs).

    Returns
    -------
    DataFrame
        One row per case and model: case_id, family, model, classifier, selected,
        probability, threshold, predicted_class (1 = APT/PC when probability >= threshold).
        A model recalibrated on an external cohort (``recalibration`` in ``bundle.json``)
        gives its recalibrated probability and threshold.
    """
    from radfusion.deep.arm import predict_cases
    from radfusion.fusion.study_model import CaseInputs
    from radfusion.harmonization.pipeline import cases_meta

    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    cfg = b.config
    ids = [c.case_id for c in cases]
    inputs = CaseInputs(radiomics=bundle_radiomics(b, cases, progress=progress, scratch=scratch))
    deep_probability: dict[str, pd.Series] = {}
    for arm in DEEP_ARMS:
        if (b.path / "networks" / arm).is_dir():
            out = predict_cases(
                b.path / "networks" / arm,
                list(cases),
                device=cfg.deep.device,
                model=b.network(arm),
                dicom_frame=cfg.data.dicom_frame,
                mask_label=cfg.data.mask_label,
            )
            deep_probability[arm] = out["probability"]
            inputs.deep[arm] = out.drop(columns=["probability"])
    scored = b.study_model().score(
        inputs,
        deep_probability,
        ids,
        clinical=_clinical_frame(cases),
        case_meta=cases_meta(cfg, cases) if cfg.harmonization.method != "none" else None,
        # each such case carries an unharmonised_center warning (radfusion.predict)
        unadjusted_log_level=logging.DEBUG,
    )
    return _recalibrated(b, _prior_shifted(b, scored))


def _prior_shifted(bundle: Bundle, scored: pd.DataFrame) -> pd.DataFrame:
    """Undo the prior each model was trained at, as the study did (bundles exported before
    radfusion recorded ``prior_shift`` are left as they are)."""
    from radfusion.evaluation.prior import apply_prior_shift

    for e in bundle.models:
        shift = float((e.get("prior_shift") or {}).get("log_odds", 0.0))
        if shift:
            rows = scored["model"] == e["model"]
            prob = apply_prior_shift(scored.loc[rows, "probability"].to_numpy(float), shift)
            scored.loc[rows, "probability"] = prob
            scored.loc[rows, "predicted_class"] = (prob >= float(e["threshold"])).astype(int)
    return scored


def _model_spec(entry: dict[str, Any]) -> ModelSpec:
    """A bundle.json model entry as the study's model specification."""
    from radfusion.fusion.study_model import ModelSpec, ScoreInputs

    inputs: ScoreInputs | None = None
    clinical = entry.get("clinical") or {}
    numeric, categorical = clinical.get("numeric", []), clinical.get("categorical", [])
    if entry["family"] == "clinical":
        src = entry["source"]
        imaging = (src["imaging_family"], src["imaging_classifier"])
        inputs = ScoreInputs.for_clinical(imaging, numeric, categorical)
    elif entry["family"] == "stacked":
        arms = {i["family"]: i["classifier"] for i in entry["inputs"]}
        inputs = ScoreInputs.for_stacked(arms, numeric, categorical)
    return ModelSpec(
        family=entry["family"],
        model=entry["model"],
        classifier=entry["classifier"],
        selected=bool(entry["selected"]),
        threshold=float(entry["threshold"]),
        inputs=inputs,
    )
