"""The one study configuration model.

Every setting of a radfusion study lives in :class:`StudyConfig`. The CLI parses
YAML into it, the pipeline reads it, and the report prints it, so there is a
single source of truth. Two presets ship with the package: ``paper`` (the
settings of Liu et al., QIMS 2026) and ``demo`` (small and fast on 2 CPU cores).
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

PRESETS = ("paper", "demo")
#: The classifier zoo, in its order (simplest first: ``selection_rule: 1se`` prefers the
#: earlier). The one list of names: config validation reads it, and
#: :data:`radfusion.models.zoo.ZOO` builds and documents each of them.
CLASSIFIERS: tuple[str, ...] = ("LR", "SVM", "KNN", "RF", "MLP", "XGBoost", "LightGBM")
ClassifierName = Literal[CLASSIFIERS]  # type: ignore[valid-type]
#: PyRadiomics parameter files shipped with radfusion (``radiomics.params: paper``).
SHIPPED_RADIOMICS_PARAMS = ("paper",)


def _bare_name(value: str) -> bool:
    """A value without folder or file suffix names a shipped file; anything else is a path."""
    path = Path(value)
    return len(path.parts) == 1 and not path.suffix


class _Section(BaseModel):
    # Unknown keys are almost always typos in a hand-edited YAML file: refuse them.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ClinicalColumns(_Section):
    """Clinical columns of the manifest used by Table 1 and the clinical model."""

    numeric: list[str] = Field(
        default_factory=list, description="Continuous columns, e.g. age, calcium, iPTH."
    )
    categorical: list[str] = Field(default_factory=list, description="Categorical, e.g. sex.")
    plausible: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="Plausible range [low, high] of numeric columns, e.g. {age: [0, 120]}: a "
        "value outside it is a data-entry error (validate, run and predict refuse the case). "
        "Values outside the training range but plausible are only warned at predict. "
        "Columns not in 'numeric' are ignored.",
    )

    @property
    def all(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @model_validator(mode="after")
    def _check_plausible(self) -> ClinicalColumns:
        # a column not (or no longer) listed as numeric is simply not checked: a study
        # dropping age keeps the preset's range of it harmlessly
        for col, (lo, hi) in self.plausible.items():
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(
                    f"data.clinical.plausible.{col} must be [low, high] with low < high, "
                    f"not [{lo}, {hi}]"
                )
        return self


class DataConfig(_Section):
    """Where the cohort is and how to read it."""

    manifest: Path | None = Field(
        None, description="Cohort manifest CSV (one row per image); paths are relative to it."
    )
    clinical: ClinicalColumns = Field(default_factory=ClinicalColumns)
    mask_label: int | None = Field(
        None,
        description="Mask value that marks the lesion. None: any non-zero pixel "
        "(works for 0/1 and 0/255 masks).",
    )
    dicom_frame: int = Field(0, ge=0, description="Frame used from multi-frame DICOM images.")
    group_column: str | None = Field(
        None,
        description="Column whose groups never straddle splits. None: 'patient_id' when the "
        "manifest has it.",
    )
    min_roi_pixels: int = Field(
        64, ge=1, description="ROIs smaller than this raise a 'tiny ROI' warning."
    )
    near_duplicate_distance: int = Field(
        6,
        ge=0,
        description="Max Hamming distance between 64-bit perceptual hashes for two images to "
        "count as near-duplicates.",
    )


class PreprocessConfig(_Section):
    """ROI bounding-box crop, resize and intensity normalisation (paper Methods)."""

    size: int = Field(500, ge=16, description="Crop side length after resizing (paper: 500).")
    margin: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Extra context around the bounding box, as a fraction of its size "
        "(paper: 0, the box touches the ROI's extreme points).",
    )
    normalization: Literal["minmax", "zscore", "none"] = Field(
        "minmax",
        description="minmax: crop intensities scaled to [0, 255] using its 0.5/99.5 "
        "percentiles; zscore: zero mean, unit SD inside the crop; none: raw.",
    )


class AugmentConfig(_Section):
    """Minority-class augmentation (horizontal flip, vertical flip, Gaussian noise)."""

    enabled: bool = True
    factor: int = Field(10, ge=1, description="Minority class expanded to this many times.")
    noise_std: float = Field(
        0.05, ge=0.0, description="Gaussian noise SD as a fraction of the image's intensity range."
    )
    augment_validation: bool = Field(
        False,
        description="Also augment the validation set, as the paper did. Inflates validation "
        "metrics; off by default and warned about when on.",
    )


class SplitConfig(_Section):
    """How cases are assigned to training / validation / test."""

    method: Literal["stratified", "column", "center", "kfold"] = Field(
        "stratified",
        description="stratified: 70/15/15 by label (grouped when groups exist); column: the "
        "manifest's 'split' column; center: leave-one-center-out external test; kfold: "
        "repeated stratified (grouped) k-fold CV.",
    )
    train: float = Field(0.70, gt=0, lt=1)
    val: float = Field(0.15, ge=0, lt=1)
    test: float = Field(0.15, ge=0, lt=1)
    test_center: str | None = Field(
        None, description="With method=center: the held-out center (None: each in turn)."
    )
    n_splits: int = Field(5, ge=2)
    n_repeats: int = Field(1, ge=1)
    join_duplicates: bool = Field(
        True,
        description="Treat images that validation finds to be exact or near duplicates "
        "(pixel / perceptual hash) as one group even when their patient ids differ, so they "
        "never fall on both sides of train / validation / test or of a CV fold (a copy of a "
        "training image in the test set inflates its AUC). Not used by method 'column', "
        "where the manifest decides (validation warns when duplicates straddle it).",
    )

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions train+val+test must sum to 1, got {total:.3f}")
        return self


class RadiomicsConfig(_Section):
    """PyRadiomics extraction."""

    params: str = Field(
        "paper",
        description="PyRadiomics parameter file: a path to your own YAML, or 'paper' for the "
        "shipped file that yields the paper's 567 features.",
    )

    @field_validator("params")
    @classmethod
    def _params_named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(
                "radiomics.params is empty; give 'paper' or the path of a PyRadiomics "
                "parameter file"
            )
        if value not in SHIPPED_RADIOMICS_PARAMS and _bare_name(value):
            # a name, not a path: only the shipped files have names ('demo' is a study
            # preset, not a parameter file); checked here, not when extraction starts
            shipped = ", ".join(repr(n) for n in SHIPPED_RADIOMICS_PARAMS)
            raise ValueError(
                f"radiomics.params {value!r} is not a shipped PyRadiomics parameter file; "
                f"choose one of {shipped}, or give the path of your own YAML file "
                "(e.g. ./params.yaml)"
            )
        return value

    n_jobs: int = Field(-1, description="Parallel worker processes (-1: all cores).")
    dask_scheduler: str | None = Field(
        None, description="Address of a dask.distributed scheduler to extract on a cluster."
    )
    cache_dir: Path | None = Field(
        None,
        description="Per-case feature cache (keyed by file contents and settings, so it can be "
        "shared between runs and CV folds). None: <run folder>/radiomics/cache.",
    )


class SelectionConfig(_Section):
    """Feature selection, always fitted on the training data only."""

    icc_threshold: float = Field(0.80, ge=0, le=1, description="Keep features with ICC above.")
    scaler: Literal["zscore", "yeo-johnson"] = Field(
        "zscore",
        description="Feature standardisation before Spearman / LASSO / classifiers, fitted on "
        "training data: zscore (the paper) or a Yeo-Johnson power transform then z-score, "
        "which tames the heavy tails of many radiomics features (e.g. NGTDM Busyness) that "
        "otherwise dominate linear models (BUSI, LR pooled CV AUC 0.958 -> 0.980).",
    )
    icc_form: Literal["ICC(3,1)", "ICC(2,1)"] = Field(
        "ICC(3,1)",
        description="ICC(3,1): two-way mixed, consistency, single rater (Koo & Li 2016).",
    )
    spearman_threshold: float = Field(
        0.90, gt=0, le=1, description="Drop one of each feature pair with |rho| above."
    )
    univariate: bool = Field(False, description="Add a Mann-Whitney U (p < 0.05) filter.")
    univariate_alpha: float = Field(0.05, gt=0, lt=1)
    lasso_cv: int = Field(5, ge=2, description="Inner CV folds choosing the LASSO penalty.")
    lasso_cs: int = Field(20, ge=2, description="Number of penalties on the LASSO path.")
    lasso_rule: Literal["best", "1se"] = Field(
        "best",
        description="LASSO penalty: best mean inner-CV AUC, or the strongest penalty within "
        "one standard error of it (1se: fewer, more stable features).",
    )
    max_features: int | None = Field(
        None, ge=1, description="Keep at most this many LASSO features (largest |coef|)."
    )


class ModelsConfig(_Section):
    """The classifier zoo and its hyperparameter tuning."""

    classifiers: list[ClassifierName] = Field(
        default_factory=lambda: list(CLASSIFIERS),
        description=f"Classifiers of the zoo to tune and fit: any of {', '.join(CLASSIFIERS)}.",
    )
    cv: int = Field(5, ge=2, description="Inner CV folds for tuning (stratified, grouped).")
    n_iter: int = Field(
        20, ge=1, description="Randomised-search draws per classifier (grid when smaller)."
    )
    class_weight: Literal["balanced", "none"] = Field(
        "balanced", description="Class weights in every classifier that supports them."
    )
    calibrate: bool = Field(
        False,
        description="Wrap classifiers in a sigmoid CalibratedClassifierCV (cross-fitted on "
        "the training data, 3 stratified folds grouped by patient).",
    )
    n_jobs: int = Field(1, description="Parallel jobs for the hyperparameter search.")


class DeepConfig(_Section):
    """The deep-learning arms (1ch and 2ch ResNet)."""

    arms: list[Literal["1ch", "2ch"]] = Field(default_factory=lambda: ["1ch", "2ch"])
    depth: Literal[18, 34, 50, 101, 152] = 101
    image_size: int = Field(500, ge=32, description="Network input side (paper: 500).")
    roi_crop_2ch: bool = Field(
        False, description="2ch input from the ROI crop instead of the whole image."
    )
    epochs: int = Field(50, ge=1)
    batch_size: int = Field(16, ge=1)
    optimizer: Literal["adamw", "sgd", "adam"] = "adamw"
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    scheduler: Literal["cosine", "step", "none"] = "cosine"
    patience: int = Field(10, ge=1, description="Early stopping on validation AUC.")
    imbalance: Literal["weighted_loss", "balanced_sampler", "none"] = "weighted_loss"
    pretrained_weights: Path | None = Field(
        None,
        description="Local ImageNet ResNet state dict (torchvision or timm names). "
        "None: random initialisation. Nothing is ever downloaded.",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="Mixed precision on a GPU (ignored on the CPU).")
    num_workers: int = Field(
        0,
        ge=0,
        description="DataLoader worker processes of the loader input path (persistent, capped "
        "at the usable cores); 0 loads in the training process.",
    )
    input_path: Literal["auto", "device", "loader"] = Field(
        "auto",
        description="How training batches are made. device: every sample held once on the "
        "training device, batches and random transforms made there with torch. loader: a "
        "DataLoader with per-image work. auto: device on a GPU when the inputs fit within a "
        "quarter of its free memory, else loader (always loader on the CPU).",
    )
    eval_batch_size: int | None = Field(
        None,
        ge=1,
        description="Batch of the per-epoch validation pass on the device input path "
        "(None: 4 x batch_size). The loader path evaluates with batch_size.",
    )
    compile: bool = Field(
        False,
        description="torch.compile the network for training and per-epoch evaluation "
        "(a one-off compilation per run; pays off on a GPU over many epochs).",
    )
    resize_mode: Literal["letterbox", "stretch"] = Field(
        "letterbox",
        description="Whole image to the square network input: letterbox keeps the aspect "
        "ratio (zero padding); stretch resizes directly, distorting lesion shape.",
    )
    random_transforms: bool = Field(
        False,
        description="Light on-the-fly training augmentation (MONAI random affine and contrast), "
        "on top of the planned minority copies.",
    )
    deterministic: bool = Field(
        True,
        description="Deterministic kernels: bitwise-reproducible training on the CPU; on a GPU "
        "best effort (deterministic cuDNN algorithms, no cudnn.benchmark autotuning) and "
        "slower. false lets cuDNN pick the fastest algorithms; seeds stay fixed either way.",
    )
    gradcam_cases: int = Field(
        4, ge=0, description="Grad-CAM overlays written for this many test cases."
    )


class FusionConfig(_Section):
    """Early fusion (Merged models 1 and 2), stacked fusion and the clinical + imaging model."""

    enabled: bool = True
    clinical_model: bool = Field(
        True, description="Fit clinical columns + imaging score (needs clinical columns)."
    )
    stacking: Literal["crossfit", "blend", "off"] = Field(
        "crossfit",
        description="Stacked fusion of the single arms' scores (radiomics, 1ch, 2ch) by a "
        "logistic meta-learner. crossfit: the meta-learner is fitted on cross-fitted "
        "out-of-fold scores of the training cases (one radiomics refit and one network per "
        "fold, never seeing the case, its augmented copies or its patient); blend: fitted on "
        "the arms' validation scores (no extra training, but validation is then no longer "
        "an unbiased estimate for the stacked model); off: no stacked model.",
    )
    stacking_folds: int = Field(
        5, ge=2, description="Cross-fitting folds (grouped by patient, stratified by label)."
    )
    stacking_arms: list[Literal["radiomics", "1ch", "2ch"]] = Field(
        default_factory=lambda: ["radiomics", "1ch", "2ch"],
        description="Arms whose scores the meta-learner combines (those the study trains).",
    )
    stacking_clinical: bool = Field(
        False, description="Also give the meta-learner the clinical columns (data.clinical)."
    )
    stacking_c: float = Field(
        1.0,
        gt=0,
        description="Inverse L2 strength of the meta-learner on the standardised arm logits "
        "(a mild ridge keeps the weights stable when the arms agree closely).",
    )


class HarmonizationConfig(_Section):
    """Centre (scanner) harmonisation of the features, fitted on training cases only."""

    method: Literal["none", "combat"] = Field(
        "none",
        description="combat: ComBat with empirical Bayes (neuroCombat's estimator), fitted on "
        "the training cases only and applied unchanged to validation, test and new cases "
        "(it travels inside every saved model). A centre unseen in training is passed through "
        "unadjusted, with a warning.",
    )
    batch_column: str = Field("center", description="Manifest column naming the centre.")
    covariates: list[str] = Field(
        default_factory=list,
        description="Manifest columns whose effect ComBat preserves (e.g. age, sex); numeric "
        "if listed in data.clinical.numeric, else categorical. 'label' is refused: it would "
        "feed every case's outcome, test included, into its features, and new patients have "
        "none.",
    )
    features: Literal["radiomics", "all"] = Field(
        "radiomics",
        description="Harmonise the radiomics features only, or the deep features of the "
        "Merged models too.",
    )

    @model_validator(mode="after")
    def _refuse_label_covariate(self) -> HarmonizationConfig:
        if "label" in self.covariates:
            raise ValueError(
                "harmonization.covariates must not contain 'label': ComBat would adjust each "
                "case with its true outcome (validation and test cases included, so their "
                "features would carry the answer), and new patients, whose outcome is unknown, "
                "could not be adjusted at all; remove 'label' from the covariates"
            )
        return self


class EvaluationConfig(_Section):
    """Metrics, confidence intervals and the operating threshold."""

    threshold: Literal["youden", "fixed"] = "youden"
    threshold_source: Literal["train", "val"] = Field(
        "val",
        description="Where the threshold is chosen; it is never tuned on test. Training "
        "scores of flexible models are overfitted (AUC near 1), so their Youden threshold "
        "transfers badly: validation is the default.",
    )
    fixed_threshold: float = Field(0.5, gt=0, lt=1)
    ci_method: Literal["delong", "bootstrap"] = "delong"
    n_bootstrap: int = Field(1000, ge=100)
    selection_split: Literal["val", "train", "cv"] = Field(
        "val",
        description="How the best classifier per family is chosen: highest AUC on the "
        "validation set (val), on the training set (train), or the highest inner "
        "cross-validated AUC on the training data (cv: leaves validation untouched by the "
        "choice).",
    )
    selection_rule: Literal["best", "1se"] = Field(
        "best",
        description="With selection_split cv: the best inner-CV AUC, or the simplest "
        f"classifier (zoo order {', '.join(CLASSIFIERS)}) within one "
        "standard error of it.",
    )
    outcome_name: str = Field(
        "Outcome", description="Name of the label in tables (paper: 'Pathological subtype')."
    )
    class_names: tuple[str, str] = Field(
        ("negative", "positive"),
        description="Display names of label 0 and label 1 (paper: PA, APT/PC).",
    )
    calibration_bins: int = Field(10, ge=2, description="Bins of the calibration curves.")
    calibration_strategy: Literal["quantile", "uniform"] = Field(
        "quantile",
        description="Calibration bins with equal numbers of cases (quantile) or equal width.",
    )
    example_cases: int = Field(
        3, ge=0, description="Test cases shown with every model's prediction (paper Figure 5)."
    )
    subgroups: list[str] = Field(
        default_factory=list,
        description="Manifest columns whose groups get their own AUC, sensitivity and "
        "specificity (evaluation/subgroups.csv, forest plot); the centre column always does.",
    )
    subgroup_bins: dict[str, list[float]] = Field(
        default_factory=dict,
        description="Numeric subgroup columns cut into bands at these edges, e.g. "
        "{age: [50, 65]} gives <50, 50 to <65, >=65.",
    )
    min_subgroup_events: int = Field(
        3,
        ge=1,
        description="A subgroup needs at least this many cases of each class for an AUC; "
        "smaller ones are listed as too small.",
    )
    sample_size_r2: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Anticipated Cox-Snell R² of the models for the Riley et al. sample-size "
        "criteria (take it from earlier models of the same task). Empty: a conservative 15% "
        "of the largest R² possible at the cohort's prevalence (Riley et al., BMJ 2020).",
    )


class ReproducibilityConfig(_Section):
    """How far "same data, config and seed give the same numbers" reaches.

    ``fast`` (the default): bit-identical results on one machine (any load, any
    ``n_jobs``, fresh or resumed), with each library's fastest kernels for this CPU. The
    numbers may differ in the last digits on a CPU with other vector instructions
    (AVX2 vs AVX-512) or another core count, and trained networks amplify that.

    ``strict``: the same numbers on every x86-64 CPU with AVX2. Before numpy or torch is
    loaded, the kernels of PyTorch (ATen), oneDNN, MKL, OpenBLAS and numpy are held to
    AVX2 and every thread count to ``threads``; convolutions use PyTorch's own kernels,
    whose blocking does not depend on the CPU's cache sizes. The ``radfusion`` command
    sets this up itself (it restarts once with the settings);
    :mod:`radfusion.reproducibility` explains the Python side. Slower: see the README.
    """

    mode: Literal["fast", "strict"] = Field(
        "fast",
        description="fast: identical on this machine; strict: identical on any x86-64 "
        "CPU with AVX2 (kernels held to AVX2, fixed thread count; slower).",
    )
    threads: int = Field(
        2,
        ge=1,
        le=256,
        description="strict mode: threads per process for PyTorch, MKL, OpenBLAS and "
        "OpenMP. Part of the result: compare runs made with the same number.",
    )


class StudyConfig(_Section):
    """A whole radfusion study."""

    name: str = "radfusion-study"
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Random seed (0 ... 2**32-1).")
    output_dir: Path = Field(
        Path("runs/study"),
        description="Run folder; a relative path is relative to the config file's folder.",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    radiomics: RadiomicsConfig = Field(default_factory=RadiomicsConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    deep: DeepConfig = Field(default_factory=DeepConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    harmonization: HarmonizationConfig = Field(default_factory=HarmonizationConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    reproducibility: ReproducibilityConfig = Field(default_factory=ReproducibilityConfig)

    @field_validator("name")
    @classmethod
    def _name_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("name must not be empty")
        return v

    # --- YAML round trip -------------------------------------------------
    def to_yaml(self) -> str:
        """The config as YAML (paths as strings), readable and re-loadable."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def from_yaml(cls, path: str | Path) -> StudyConfig:
        """Load a config file; relative data paths are resolved against the file's folder."""
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"config path {path} is a folder; give the study's YAML file")
        try:
            raw = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"config file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"config file {path} could not be read: {exc}") from None
        except yaml.YAMLError as exc:
            raise ValueError(f"config file {path} is not valid YAML: {exc}") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ValueError(
                f"config file {path} must hold a mapping of settings (key: value), "
                f"not a {type(raw).__name__}"
            )
        try:
            cfg = cls.from_dict(raw)
        except ValidationError as exc:  # names every bad field, over several lines
            raise ValueError(f"config file {path}: {_one_line(exc)}") from None
        except ValueError as exc:
            raise ValueError(f"config file {path}: {exc}") from None
        return cfg.resolve_paths(path.parent)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StudyConfig:
        """Build a config from a dict; a 'preset' key starts from that preset."""
        raw = dict(raw)
        preset = raw.pop("preset", None)
        if preset is None:
            return cls.model_validate(raw)
        base = load_preset(preset).model_dump(mode="json")
        return cls.model_validate(_deep_merge(base, raw))

    def resolve_paths(self, base: Path) -> StudyConfig:
        """Make relative manifest / output / weight / params paths absolute against ``base``."""
        upd = self.model_copy(deep=True)
        if not upd.output_dir.is_absolute():
            upd.output_dir = (base / upd.output_dir).resolve()
        if upd.data.manifest is not None and not upd.data.manifest.is_absolute():
            upd.data.manifest = (base / upd.data.manifest).resolve()
        w = upd.deep.pretrained_weights
        if w is not None and not w.is_absolute():
            upd.deep.pretrained_weights = (base / w).resolve()
        p = upd.radiomics.params
        if p not in SHIPPED_RADIOMICS_PARAMS and not Path(p).is_absolute():
            upd.radiomics.params = str((base / p).resolve())
        c = upd.radiomics.cache_dir
        if c is not None and not c.is_absolute():
            upd.radiomics.cache_dir = (base / c).resolve()
        return upd


def _one_line(exc: ValidationError) -> str:
    """Pydantic's errors as one line: ``field: what is wrong``, joined by ``;``."""
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ")
        # the value the user wrote, as pydantic shows it (a whole section is not repeated)
        value = e.get("input")
        if e.get("type") != "missing" and not isinstance(value, dict | list):
            shown = repr(value)
            msg += f" (input_value={shown if len(shown) <= 60 else shown[:57] + '...'})"
        parts.append(msg if not loc or msg.startswith(loc) else f"{loc}: {msg}")
    return "; ".join(parts)


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def preset_text(name: str) -> str:
    """The shipped YAML text of a preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return resources.files("radfusion.presets").joinpath(f"{name}.yaml").read_text()


def load_preset(name: str) -> StudyConfig:
    """A preset as a validated config."""
    return StudyConfig.model_validate(yaml.safe_load(preset_text(name)))


def radiomics_params_path(params: str) -> Path:
    """Path of a PyRadiomics parameter file: a shipped name ('paper') or a user path."""
    if params in SHIPPED_RADIOMICS_PARAMS:
        ref = resources.files("radfusion.presets").joinpath(f"radiomics_{params}.yaml")
        return Path(str(ref))
    path = Path(params)
    if not path.is_file():
        shipped = ", ".join(repr(n) for n in SHIPPED_RADIOMICS_PARAMS)
        raise FileNotFoundError(
            f"PyRadiomics parameter file not found: {path} (radiomics.params takes a file "
            f"path, or {shipped} for the shipped one)"
        )
    return path
