"""The model bundle: everything ``radfusion predict`` needs, and nothing that runs code.

A bundle is a directory whose files :class:`radfusion.layout.BundleLayout` names: a
description (``bundle.json``: format, versions, settings, every model with its threshold,
and the SHA-256 of every other file) with its own SHA-256 beside it, the study config, the
PyRadiomics parameter file, the fitted scikit-learn pipelines (skops) and the networks
(safetensors).

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
from radfusion.families import DEEP_ARMS, MERGED_ARMS, ModelId
from radfusion.layout import BundleLayout, RunLayout
from radfusion.neutral import RESULT_NEUTRAL
from radfusion.utils import (
    BUNDLE_TEMP_PREFIX,
    atomic_folder,
    atomic_write_json,
    atomic_write_text,
    file_sha256,
)
from radfusion.versions import library_versions

if TYPE_CHECKING:
    from radfusion.fusion.study_model import ModelSpec, StudyModel

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "radfusion-bundle/1"


class BundleError(RadfusionError):
    """A bundle that is missing, tampered with or incompatible."""


def export_bundle(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Export a finished run's models into a bundle directory (atomically).

    Parameters
    ----------
    run_dir : Path
        A run folder whose evaluation stage has finished (thresholds are taken from it).
    out_dir : Path
        The bundle directory to write: an earlier bundle there is replaced, any other
        non-empty folder refused (``FileExistsError``).

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

    def is_bundle(folder: Path) -> bool:  # an earlier export, even a damaged one
        earlier = BundleLayout(folder)
        return earlier.meta.is_file() or earlier.digest.is_file()

    with atomic_folder(out_dir, ours=is_bundle, prefix=BUNDLE_TEMP_PREFIX) as tmp:
        out = BundleLayout(tmp)
        entries = []
        for m in models:
            model = ModelId.from_record(m["family"], m["classifier"], m["model"])
            fam = model.family
            entry: dict[str, Any] = {
                "family": fam,
                "model": model.name,
                "classifier": model.classifier,
                "selected": bool(m["selected"]),
                "threshold": float(thresholds[model.name]),
                # the training prior undone (radfusion.evaluation.prior); the threshold
                # is on the corrected scale
                "prior_shift": shifts[model.name],
            }
            if fam in DEEP_ARMS:
                entry["network"] = out.network_rel(fam)
            else:
                rel = out.model_rel(model)
                dst = out.file(rel)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(run.model_file(model), dst)
                entry["file"] = rel
                if fam in MERGED_ARMS:
                    entry["network"] = out.network_rel(MERGED_ARMS[fam])
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
            arm = out.network_arm(rel)
            net = out.network(arm)
            net.path.mkdir(parents=True)
            # the bundle's network folder holds the arm folder's network files, same names
            for src, dst in ((run.deep(arm).spec, net.spec), (run.deep(arm).weights, net.weights)):
                shutil.copy2(src, dst)
        shutil.copy2(run.config, out.config)
        shutil.copy2(radiomics_params_path(cfg.radiomics.params), out.radiomics_params)
        files = {
            str(p.relative_to(tmp)): file_sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()
        }
        atomic_write_json(
            out.meta,
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
    return out_dir


def bundle_sha256(bundle: Bundle) -> str:
    """SHA-256 of a bundle's ``bundle.json``, which records the hash of every other file:
    the one identity of a bundle (model card, web page, external-validation provenance)."""
    return file_sha256(bundle.layout.meta)


def write_digest(bundle: str | Path) -> Path:
    """Record the SHA-256 of ``bundle/bundle.json`` in ``bundle/bundle.json.sha256``.

    Written by :func:`export_bundle` (and checked by :func:`load_bundle`) so that a change
    of any byte of ``bundle.json`` is caught, like a change of any file it lists.

    Returns
    -------
    Path
        The digest file.
    """
    layout = BundleLayout(Path(bundle))
    atomic_write_text(layout.digest, f"{file_sha256(layout.meta)}  {layout.META}\n")
    return layout.digest


def _check_digest(path: Path) -> None:
    """Refuse a bundle whose ``bundle.json`` does not match its recorded SHA-256."""
    layout = BundleLayout(path)
    if not layout.digest.is_file():
        raise BundleError(
            f"{path}: {layout.DIGEST} is missing, so {layout.META} cannot be verified (a "
            "damaged bundle, or one written by an older radfusion); rebuild it from its run "
            "folder with `radfusion run CONFIG --from bundle`"
        )
    try:
        recorded = layout.digest.read_text(encoding="ascii").split()[0].lower()
    except (UnicodeDecodeError, IndexError, OSError):
        recorded = ""
    if file_sha256(layout.meta) != recorded:
        raise BundleError(
            f"{path}: {layout.META} does not match its recorded SHA-256 ({layout.DIGEST}): "
            "the bundle was modified or corrupted; refusing to use it"
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
    def layout(self) -> BundleLayout:
        """The bundle's files."""
        return BundleLayout(self.path)

    @property
    def models(self) -> list[dict[str, Any]]:
        return list(self.meta["models"])

    def pipeline(self, rel: str) -> Any:
        """The fitted model stored at ``rel``, loaded once and then shared (read-only use;
        a long-lived server then pays skops' slow loading once)."""
        from radfusion.models.io import load_pipeline

        with self._lock:
            if rel not in self._loaded:
                self._loaded[rel] = load_pipeline(self.layout.file(rel))
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
        """The trained network of a deep arm (its network folder), loaded once."""
        from radfusion.deep.network import load_trained_network

        rel = self.layout.network_rel(arm)
        with self._lock:
            if rel not in self._loaded:
                self._loaded[rel] = load_trained_network(self.layout.file(rel))
            return self._loaded[rel]


#: Settings of a bundle's config that would reach the network or the local disk at
#: predict time; they belong to the machine that trained, so loading ignores them: the
#: machine-bound result-neutral settings, and the training's input files (whose
#: contents, not paths, the study keyed on).
_MACHINE_SETTINGS = (
    *((s.section, s.name) for s in RESULT_NEUTRAL if s.machine),
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
        try:
            ModelId.from_record(e["family"], e["classifier"], e["model"])
        except ValueError as exc:
            raise bad(str(exc)) from None
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
    used = list(BundleLayout.settings_files())
    for e in meta["models"]:
        if "file" in e:
            used.append(e["file"])
        if "network" in e:
            used += BundleLayout.network_files(e["network"])
    return list(dict.fromkeys(used))


def _check_formats(path: Path, meta: dict[str, Any]) -> None:
    """Open every model and network file's header, so a damaged one is named at load."""
    from safetensors import safe_open

    from radfusion.deep.network import load_network_spec
    from radfusion.models.io import check_pipeline_file

    layout = BundleLayout(path)
    for e in meta["models"]:
        try:
            if "file" in e:
                check_pipeline_file(layout.file(e["file"]))
            if "network" in e:
                load_network_spec(layout.file(e["network"]))
        except RadfusionError as exc:
            raise BundleError(str(exc)) from None
    for rel in sorted({e["network"] for e in meta["models"] if "network" in e}):
        weights = layout.file(BundleLayout.network_files(rel)[1])
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
    from radfusion.signing import SignatureError, verify_bundle_signature

    path = Path(path)
    layout = BundleLayout(path)
    meta_path = layout.meta
    if not meta_path.is_file():
        raise BundleError(f"{path} is not a radfusion bundle ({layout.META} missing)")
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
                f"{path}: {rel} is used but has no recorded SHA-256 in {layout.META}; "
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
        and p.name not in layout.description_files()
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
        cfg = StudyConfig.from_yaml(layout.config)
    except (FileNotFoundError, ValueError) as exc:
        raise BundleError(f"{layout.config}: {exc}") from None
    for section, name in _MACHINE_SETTINGS:
        part = getattr(cfg, section)
        if getattr(part, name) is not None:
            log.info("bundle setting %s.%s ignored when scoring", section, name)
            setattr(part, name, None)
    cfg.radiomics.n_jobs = 1
    cfg.deep.num_workers = 0
    cfg.radiomics.params = str(layout.radiomics_params)
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
    from radfusion.deep.network import predict_cases
    from radfusion.fusion.study_model import CaseInputs
    from radfusion.harmonization.pipeline import cases_meta

    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    cfg = b.config
    ids = [c.case_id for c in cases]
    inputs = CaseInputs(radiomics=bundle_radiomics(b, cases, progress=progress, scratch=scratch))
    deep_probability: dict[str, pd.Series] = {}
    for arm in DEEP_ARMS:
        if b.layout.network_dir(arm).is_dir():
            out = predict_cases(
                b.layout.network_dir(arm),
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
        imaging = ModelId(src["imaging_family"], src["imaging_classifier"])
        inputs = ScoreInputs.for_clinical(imaging, numeric, categorical)
    elif entry["family"] == "stacked":
        arms = {i["family"]: i["classifier"] for i in entry["inputs"]}
        inputs = ScoreInputs.for_stacked(arms, numeric, categorical)
    return ModelSpec(
        id=ModelId.from_record(entry["family"], entry["classifier"], entry["model"]),
        selected=bool(entry["selected"]),
        threshold=float(entry["threshold"]),
        inputs=inputs,
    )
