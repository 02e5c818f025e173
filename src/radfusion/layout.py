"""Where every artefact of a study run lives: one layout for the writers and the readers.

A run is a folder (the nnU-Net habit): the config as run, the data fingerprint, library
versions, logs, stage markers and every artefact, so that stages resume and results can
be traced. The pipeline writes it (:class:`radfusion.pipeline.run.RunFolder`), evaluation,
the report, the model card and the bundle export read it
(:class:`radfusion.evaluation.runfolder.RunArtifacts`); both name its files only through
:class:`RunLayout`, so a file is named in one place and moving it is a one-line change. The
model bundle exported from a run has its own layout, :class:`BundleLayout`, which its writer
(:func:`radfusion.bundle.export_bundle`), its readers (``predict``, ``serve``, ``evaluate``)
and :mod:`radfusion.signing` share the same way.

Layout::

    RUN/
      config.yaml                    the StudyConfig exactly as run
      versions.json                  library versions, platform, seed
      fingerprint.json               manifest hash, case counts per label and split
      validation.json                the input validation report
      dropped.json                   cases dropped by ``--drop-invalid`` (when given)
      logs/run.log                   everything logged during the run(s)
      stages/<stage>.json            written last by a finished stage: its key and outputs
      stages/data_files.json         size, mtime and SHA-256 of every data file last seen
      stages/run.lock                held (OS lock) by the radfusion process writing the run
      stages/selection_<family>.json feature-selection record (radiomics, merged1/2)
      cases.csv                      one row per case: split, label, group, paths, clinical
      augmentation.csv               the planned augmented copies
      radiomics/features.parquet     PyRadiomics features (+ .diagnostics.parquet,
                                     .provenance.json beside it)
      radiomics/features_reader2.parquet   reader 2's ROIs (ICC), when given
      radiomics/cache/               per-case extraction cache (content-keyed)
      radiomics/ibsi.csv             IBSI digital-phantom check of the extraction
                                     (+ ibsi.json: its one-line summary and counts)
      deep/<arm>/                    one ResNet arm (1ch, 2ch), see ArmLayout:
        network.safetensors network.json checkpoint.pt history.csv history.png
        features.parquet features_reader2.parquet
        gradcam/*.png  cache/  stage_key.txt
      models/<family>/               one model family (radiomics, 1ch, 2ch, merged1,
        predictions.parquet          merged2, stacked, clinical)
        <model>.skops                fitted pipelines (ModelId.file_stem: LR.skops, ...,
                                     clinical: ClinicalLR.skops)
        cv_results.csv               inner-CV AUC and hyperparameters per classifier
        <classifier>/importance.csv  feature importance of the selected classifier
        source.json                  stacked / clinical: what the model was fitted on
      clinical/coefficients.csv      the clinical + imaging model's coefficients
      stacking/                      stacked fusion
        coefficients.csv  oof_scores.parquet
        <arm>/fold_<k>/              cross-fitted deep arm, see CrossfitLayout
      predictions.parquet            every family's predictions in one table
      evaluation/                    metrics.csv thresholds.json table1.csv table2.csv
                                     delong_<split>.csv delong_<family>_<split>.csv
                                     calibration.csv decision_curve.csv subgroups.csv
                                     external_validation.csv evaluation.json figures/*.png
      report/report.html             the self-contained report
      report/tables/<name>.csv       every table of the report
      bundle/                        the model bundle (its own layout: BundleLayout)

A study over several assignments (k-fold, leave-centre-out) adds::

      folds/<fold>/                  one complete run per assignment (+ manifest.csv)
      radiomics_cache/               the radiomics cache the folds share
      cv_predictions.parquet  cv_repeats.csv  cv_summary.csv

Imports only :mod:`radfusion.utils` (for safe folder names) and :mod:`radfusion.families`
(model identities), so any module can use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from radfusion.families import ModelId
from radfusion.utils import safe_filename

__all__ = ["SYNTH_PARAMS_NAME", "ArmLayout", "BundleLayout", "CrossfitLayout", "RunLayout"]

#: Written by ``radfusion synth`` beside its manifest; its presence marks a simulated cohort.
SYNTH_PARAMS_NAME = "synth.json"

#: The study config as run; a bundle holds a copy under the same name.
_CONFIG_NAME = "config.yaml"
#: A fitted scikit-learn pipeline's file suffix (skops), in a run folder and a bundle.
_MODEL_SUFFIX = ".skops"


def _reader_suffix(reader: int) -> str:
    if reader not in (1, 2):
        raise ValueError(f"reader must be 1 or 2, not {reader!r}")
    return "" if reader == 1 else "_reader2"


@dataclass(frozen=True)
class ArmLayout:
    """The folder of one trained deep arm: ``RUN/deep/<arm>/``.

    The network files (:attr:`weights`, :attr:`spec`) have the same names in a bundle's
    ``networks/<arm>/`` folder, which :func:`radfusion.deep.network.load_trained_network`
    reads the same way.

    Parameters
    ----------
    path : Path
        The arm folder.
    """

    path: Path

    #: File names a bundle's network folder shares with the arm folder.
    WEIGHTS = "network.safetensors"
    SPEC = "network.json"
    CHECKPOINT = "checkpoint.pt"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def weights(self) -> Path:
        """Best-validation weights (safetensors)."""
        return self.path / self.WEIGHTS

    @property
    def spec(self) -> Path:
        """Architecture, input geometry, training record (JSON)."""
        return self.path / self.SPEC

    @property
    def checkpoint(self) -> Path:
        """The resumable training state."""
        return self.path / self.CHECKPOINT

    @property
    def history(self) -> Path:
        """Per-epoch loss and AUC."""
        return self.path / "history.csv"

    @property
    def history_plot(self) -> Path:
        return self.path / "history.png"

    def features(self, reader: int = 1) -> Path:
        """Deep features of every case and copy (reader 2: 2ch only, original cases)."""
        return self.path / f"features{_reader_suffix(reader)}.parquet"

    @property
    def gradcam_dir(self) -> Path:
        """Grad-CAM overlays (``*.png``)."""
        return self.path / "gradcam"

    @property
    def cache(self) -> Path:
        """Default network-input cache (content-keyed)."""
        return self.path / "cache"

    @property
    def training_key(self) -> Path:
        """The training key the folder's checkpoint belongs to (written by the pipeline)."""
        return self.path / "stage_key.txt"


@dataclass(frozen=True)
class CrossfitLayout:
    """The folder of one cross-fitted deep arm: ``RUN/stacking/<arm>/fold_<k>/...``.

    Parameters
    ----------
    path : Path
        The arm's cross-fitting folder.
    """

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def cache(self) -> Path:
        """Default network-input cache (the pipeline shares the arm's own)."""
        return self.path / "cache"

    def fold_dir(self, k: int) -> Path:
        return self.path / f"fold_{k}"

    def fold_scores(self, k: int) -> Path:
        """Out-of-fold and other-case scores of fold ``k``'s network."""
        return self.fold_dir(k) / "scores.parquet"

    def fold_record(self, k: int) -> Path:
        """The key the finished fold was trained for (JSON)."""
        return self.fold_dir(k) / "fold.json"

    def fold_key(self, k: int) -> Path:
        """The key of the fold in training (text; its checkpoint belongs to it)."""
        return self.fold_dir(k) / "fold_key.txt"

    def fold_checkpoint(self, k: int) -> Path:
        return self.fold_dir(k) / ArmLayout.CHECKPOINT


@dataclass(frozen=True)
class RunLayout:
    """Every path of a run folder (see the module docstring for the tree).

    Pure naming: nothing is read, created or checked here.

    Parameters
    ----------
    root : Path
        The run folder.

    Examples
    --------
    >>> layout = RunLayout(Path("runs/study"))
    >>> layout.family_predictions("radiomics").as_posix()
    'runs/study/models/radiomics/predictions.parquet'
    >>> layout.model_file(ModelId("radiomics", "XGBoost")).as_posix()
    'runs/study/models/radiomics/XGBoost.skops'
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # --- provenance and bookkeeping ---------------------------------------------------------
    @property
    def config(self) -> Path:
        """The StudyConfig exactly as run (YAML)."""
        return self.root / _CONFIG_NAME

    @property
    def versions(self) -> Path:
        """Library versions, platform and seed."""
        return self.root / "versions.json"

    @property
    def fingerprint(self) -> Path:
        """Manifest hash and case counts per label and split."""
        return self.root / "fingerprint.json"

    @property
    def validation(self) -> Path:
        """The input validation report."""
        return self.root / "validation.json"

    @property
    def dropped(self) -> Path:
        """Cases dropped by ``--drop-invalid`` (list or {case: reason}; optional)."""
        return self.root / "dropped.json"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def log_file(self) -> Path:
        """Everything logged during the run(s)."""
        return self.logs_dir / "run.log"

    @property
    def stages_dir(self) -> Path:
        """Stage markers; its presence makes a folder a radfusion run folder."""
        return self.root / "stages"

    def stage_marker(self, stage: str) -> Path:
        """Written last by a finished stage: its input key and outputs' hashes."""
        return self.stages_dir / f"{stage}.json"

    @property
    def data_files(self) -> Path:
        """Size, mtime and content hash of every data file as last seen."""
        return self.stages_dir / "data_files.json"

    @property
    def lock_file(self) -> Path:
        """Locked by the process writing the run; names its PID, host and start time."""
        return self.stages_dir / "run.lock"

    def selection(self, family: str) -> Path:
        """Feature-selection record of a family (counts, kept features, LASSO path)."""
        return self.stages_dir / f"selection_{family}.json"

    @property
    def bookkeeping(self) -> tuple[str, ...]:
        """Top-level entries that are no stage's output (provenance, bookkeeping, sub-runs)."""
        return tuple(
            p.name
            for p in (self.stages_dir, self.logs_dir, self.folds_dir, self.config, self.versions)
        )

    @staticmethod
    def is_cache(name: str) -> bool:
        """Whether a folder name is a content-keyed cache (which checks itself)."""
        return name == "cache" or name.endswith("_cache")

    # --- cases -------------------------------------------------------------------------------
    @property
    def cases(self) -> Path:
        """One row per case: split, label, group, image and mask paths, clinical values."""
        return self.root / "cases.csv"

    @property
    def augmentation(self) -> Path:
        """The planned augmented copies."""
        return self.root / "augmentation.csv"

    # --- radiomics -----------------------------------------------------------------------------
    @property
    def radiomics_dir(self) -> Path:
        return self.root / "radiomics"

    def radiomics_features(self, reader: int = 1) -> Path:
        """PyRadiomics feature table (reader 2: the second reader's ROIs, for the ICC)."""
        return self.radiomics_dir / f"features{_reader_suffix(reader)}.parquet"

    @property
    def radiomics_ibsi(self) -> Path:
        """IBSI digital-phantom check of the PyRadiomics version used: one row per value."""
        return self.radiomics_dir / "ibsi.csv"

    @property
    def radiomics_ibsi_summary(self) -> Path:
        """The check's one-line statement and counts (read by the report and model card)."""
        return self.radiomics_dir / "ibsi.json"

    @property
    def radiomics_cache(self) -> Path:
        """Per-case extraction cache (unless ``radiomics.cache_dir`` is set)."""
        return self.radiomics_dir / "cache"

    # --- deep arms -----------------------------------------------------------------------------
    @property
    def deep_root(self) -> Path:
        return self.root / "deep"

    def deep_dir(self, arm: str) -> Path:
        return self.deep_root / arm

    def deep(self, arm: str) -> ArmLayout:
        """The files of a deep arm (``1ch``, ``2ch``)."""
        return ArmLayout(self.deep_dir(arm))

    def deep_features(self, arm: str, reader: int = 1) -> Path:
        return self.deep(arm).features(reader)

    def deep_arms(self) -> list[str]:
        """Arms with a folder under ``deep/``, sorted."""
        return _subfolders(self.deep_root)

    # --- model families ------------------------------------------------------------------------
    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    def family_dir(self, family: str) -> Path:
        return self.models_dir / family

    def family_predictions(self, family: str) -> Path:
        """Predictions of every model of a family (``selected`` marks the chosen one)."""
        return self.family_dir(family) / "predictions.parquet"

    def model_file(self, model: ModelId) -> Path:
        """A fitted model (skops), named by its :attr:`~radfusion.families.ModelId.file_stem`."""
        return self.family_dir(model.family) / f"{model.file_stem}{_MODEL_SUFFIX}"

    def cv_results(self, family: str) -> Path:
        """Inner-CV AUC, hyperparameters and fit time of each classifier of a family."""
        return self.family_dir(family) / "cv_results.csv"

    def importance(self, family: str, classifier: str) -> Path:
        """Feature importance of a family's selected classifier."""
        return self.family_dir(family) / classifier / "importance.csv"

    def model_source(self, family: str) -> Path:
        """What a stacked or clinical model was fitted on (JSON)."""
        return self.family_dir(family) / "source.json"

    def families(self) -> list[str]:
        """Families with a folder under ``models/``, sorted."""
        return _subfolders(self.models_dir)

    @property
    def predictions(self) -> Path:
        """Every family's predictions in one table."""
        return self.root / "predictions.parquet"

    # --- fusion --------------------------------------------------------------------------------
    @property
    def clinical_dir(self) -> Path:
        return self.root / "clinical"

    @property
    def clinical_coefficients(self) -> Path:
        """Coefficients of the clinical + imaging model."""
        return self.clinical_dir / "coefficients.csv"

    @property
    def stacking_dir(self) -> Path:
        return self.root / "stacking"

    @property
    def stacking_coefficients(self) -> Path:
        """The stacked meta-learner's coefficients."""
        return self.stacking_dir / "coefficients.csv"

    @property
    def stacking_oof_scores(self) -> Path:
        """Out-of-fold training scores of each arm with their fold (cross-fitting)."""
        return self.stacking_dir / "oof_scores.parquet"

    def stacking_arm(self, arm: str) -> CrossfitLayout:
        """The cross-fitted networks of a deep arm."""
        return CrossfitLayout(self.stacking_dir / arm)

    # --- evaluation ----------------------------------------------------------------------------
    @property
    def evaluation_dir(self) -> Path:
        return self.root / "evaluation"

    @property
    def metrics(self) -> Path:
        """Every model x split: AUC and threshold metrics with CIs."""
        return self.evaluation_dir / "metrics.csv"

    @property
    def thresholds(self) -> Path:
        """The threshold rule and each model's threshold."""
        return self.evaluation_dir / "thresholds.json"

    @property
    def table1(self) -> Path:
        return self.evaluation_dir / "table1.csv"

    @property
    def table2(self) -> Path:
        return self.evaluation_dir / "table2.csv"

    def delong(self, split: str, family: str | None = None) -> Path:
        """DeLong p-values between the selected models, or a family's classifiers."""
        name = f"delong_{split}" if family is None else f"delong_{family}_{split}"
        return self.evaluation_dir / f"{name}.csv"

    @property
    def calibration(self) -> Path:
        return self.evaluation_dir / "calibration.csv"

    @property
    def decision_curve(self) -> Path:
        return self.evaluation_dir / "decision_curve.csv"

    @property
    def subgroups(self) -> Path:
        """Performance per centre and configured subgroup."""
        return self.evaluation_dir / "subgroups.csv"

    @property
    def external_validation(self) -> Path:
        """Leave-centre-out: AUC per held-out centre."""
        return self.evaluation_dir / "external_validation.csv"

    @property
    def figures_dir(self) -> Path:
        return self.evaluation_dir / "figures"

    def figure(self, key: str) -> Path:
        return self.figures_dir / f"{key}.png"

    @property
    def evaluation_index(self) -> Path:
        """Index of the evaluation (captions, notes, the predictions' SHA-256)."""
        return self.evaluation_dir / "evaluation.json"

    # --- report and bundle ---------------------------------------------------------------------
    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def report(self) -> Path:
        """The self-contained HTML report."""
        return self.report_dir / "report.html"

    @property
    def report_tables_dir(self) -> Path:
        return self.report_dir / "tables"

    def report_table(self, name: str) -> Path:
        """A table of the report as CSV."""
        return self.report_tables_dir / f"{name}.csv"

    @property
    def report_figures_dir(self) -> Path:
        """The report's figures for a journal: SVG and 300-dpi PNG (``<key>.svg`` / ``.png``)."""
        return self.report_dir / "figures"

    def report_figure(self, key: str, suffix: str) -> Path:
        """One journal figure: ``report/figures/<key><suffix>`` (".svg" or ".png")."""
        return self.report_figures_dir / f"{key}{suffix}"

    @property
    def report_checklists_dir(self) -> Path:
        """TRIPOD+AI, CLAIM 2024 and METRICS filled from the run (``<name>.csv`` / ``.md``)."""
        return self.report_dir / "checklists"

    def report_checklist(self, name: str, suffix: str) -> Path:
        """One filled checklist: ``report/checklists/<name><suffix>`` (".csv" or ".md")."""
        return self.report_checklists_dir / f"{name}{suffix}"

    @property
    def report_pdf(self) -> Path:
        """The report printed to PDF (``radfusion report RUN --pdf``)."""
        return self.report_dir / "report.pdf"

    @property
    def bundle_dir(self) -> Path:
        """The model bundle (its own layout: :class:`BundleLayout`)."""
        return self.root / "bundle"

    def bundle(self) -> BundleLayout:
        """The files of the run's model bundle."""
        return BundleLayout(self.bundle_dir)

    # --- studies over several assignments ------------------------------------------------------
    @property
    def folds_dir(self) -> Path:
        return self.root / "folds"

    def fold_dir(self, name: str) -> Path:
        """The sub-run of one assignment (the name made file-system safe)."""
        return self.folds_dir / safe_filename(name, "-")

    @property
    def fold_manifest(self) -> Path:
        """A fold sub-run's cohort manifest (with the fold's fixed split column)."""
        return self.root / "manifest.csv"

    @property
    def shared_radiomics_cache(self) -> Path:
        """The radiomics cache the folds of a study share."""
        return self.root / "radiomics_cache"

    @property
    def cv_predictions(self) -> Path:
        """Test predictions of the selected models, pooled over folds."""
        return self.root / "cv_predictions.parquet"

    @property
    def cv_repeats(self) -> Path:
        return self.root / "cv_repeats.csv"

    @property
    def cv_summary(self) -> Path:
        return self.root / "cv_summary.csv"


@dataclass(frozen=True)
class BundleLayout:
    """Every file of a model bundle: what ``radfusion predict``, ``serve`` and ``evaluate`` read.

    Pure naming, like :class:`RunLayout`: nothing is read, created or checked here
    (:func:`radfusion.bundle.load_bundle` verifies a bundle). ``bundle.json`` records the
    other files by their names relative to the bundle (POSIX), which the ``*_rel`` methods
    give::

        bundle/
          bundle.json            format, versions, settings, every model with its threshold,
                                 and the SHA-256 of every other file (the description)
          bundle.json.sha256     the SHA-256 of bundle.json itself (``sha256sum -c`` format)
          bundle.json.sig        optional signature of bundle.json (radfusion.signing)
          config.yaml            the study config
          radiomics_params.yaml  the PyRadiomics parameter file used
          models/<family>/<model>.skops        fitted scikit-learn pipelines (as in the run)
          networks/<arm>/network.json + network.safetensors   the arm's network (ArmLayout)

    Parameters
    ----------
    root : Path
        The bundle folder.

    Examples
    --------
    >>> BundleLayout.model_rel(ModelId.single("clinical"))
    'models/clinical/ClinicalLR.skops'
    >>> BundleLayout.network_files(BundleLayout.network_rel("1ch"))
    ('networks/1ch/network.json', 'networks/1ch/network.safetensors')
    """

    root: Path

    META = "bundle.json"
    DIGEST = f"{META}.sha256"
    SIGNATURE = f"{META}.sig"
    CONFIG = _CONFIG_NAME
    RADIOMICS_PARAMS = "radiomics_params.yaml"
    _MODELS = "models"
    _NETWORKS = "networks"

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # --- the description and what vouches for it ------------------------------------------
    @property
    def meta(self) -> Path:
        """``bundle.json``: the bundle's description (models, settings, file hashes)."""
        return self.root / self.META

    @property
    def digest(self) -> Path:
        """The SHA-256 of ``bundle.json`` (``sha256sum -c`` format)."""
        return self.root / self.DIGEST

    @property
    def signature(self) -> Path:
        """The optional signature of ``bundle.json`` (JSON: algorithm and hex signature)."""
        return self.root / self.SIGNATURE

    @classmethod
    def description_files(cls) -> tuple[str, ...]:
        """The files ``bundle.json`` does not list: itself, its digest and its signature."""
        return (cls.META, cls.DIGEST, cls.SIGNATURE)

    # --- settings ------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        """The study config (preprocessing, readers, deep settings)."""
        return self.root / self.CONFIG

    @property
    def radiomics_params(self) -> Path:
        """The PyRadiomics parameter file the models' features were extracted with."""
        return self.root / self.RADIOMICS_PARAMS

    @classmethod
    def settings_files(cls) -> tuple[str, ...]:
        """The files scoring reads whatever the models (relative names)."""
        return (cls.CONFIG, cls.RADIOMICS_PARAMS)

    # --- models and networks -------------------------------------------------------------------
    def file(self, rel: str) -> Path:
        """A file of the bundle by the name ``bundle.json`` records (check it first:
        :func:`radfusion.bundle.load_bundle`)."""
        return self.root / rel

    @classmethod
    def model_rel(cls, model: ModelId) -> str:
        """A fitted model's file: the run folder's file name under ``models/<family>/``."""
        return f"{cls._MODELS}/{model.family}/{model.file_stem}{_MODEL_SUFFIX}"

    @classmethod
    def network_rel(cls, arm: str) -> str:
        """A deep arm's network folder."""
        return f"{cls._NETWORKS}/{arm}"

    @staticmethod
    def network_arm(rel: str) -> str:
        """The arm of a network folder (``networks/<arm>`` -> ``<arm>``)."""
        return PurePosixPath(rel).name

    @staticmethod
    def network_files(rel: str) -> tuple[str, str]:
        """A network folder's files: the spec and the weights (the arm folder's names)."""
        return (f"{rel}/{ArmLayout.SPEC}", f"{rel}/{ArmLayout.WEIGHTS}")

    def network_dir(self, arm: str) -> Path:
        """A deep arm's network folder (read by
        :func:`radfusion.deep.network.load_trained_network`)."""
        return self.root / self.network_rel(arm)

    def network(self, arm: str) -> ArmLayout:
        """A deep arm's network files (:attr:`ArmLayout.spec`, :attr:`ArmLayout.weights`)."""
        return ArmLayout(self.network_dir(arm))


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
