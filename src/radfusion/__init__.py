"""radfusion: radiomics, deep-learning and fusion models for ultrasound lesion classification.

Data flows one way through the stages, one subpackage each (the layers are checked by
``lint-imports``, see ``[tool.importlinter]`` in pyproject.toml)::

    data (manifest, readers, validation, splits)
      -> preprocessing (ROI crop, resize, normalisation, augmentation)
      -> radiomics (PyRadiomics) | deep (MONAI ResNet)
      -> selection (ICC, Spearman, LASSO) | harmonization (ComBat)
      -> models (classifier zoo, grouped tuning)
      -> fusion (Merged models, stacked fusion, clinical model, the StudyModel)
      -> evaluation (metrics, figures) -> report (HTML)
      -> bundle (the saved StudyModel) -> pipeline (resumable run folder) | predict
      -> serve (web app) | external (validation of a saved bundle) -> cli (command line)

The notebook API (imported on first use, so ``import radfusion`` stays fast)::

    import radfusion as rf

    cfg = rf.StudyConfig.from_yaml("study.yaml")        # or rf.load_preset("demo")
    run = rf.run_study(cfg)                              # the whole study, resumable
    bundle = rf.load_bundle(run.path / "bundle")
    scores = rf.predict_bundle(bundle, rf.load_cohort("new.csv", cfg.data).cases())
    ext = rf.evaluate_external(bundle, "other_centre.csv", "external")  # external validation
    feats = rf.extract_features(table)                   # DataFrame of image/mask paths
    rf.ibsi_check().summary_line()                       # radiomics vs the IBSI phantom
    rf.delong_test(y, p1, p2)                            # compare two correlated AUCs
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module that defines it (imported lazily by :func:`__getattr__`).
_API = {
    "StudyConfig": "radfusion.config",
    "load_preset": "radfusion.config",
    "load_cohort": "radfusion.data",
    "run_study": "radfusion.pipeline",
    "load_bundle": "radfusion.bundle",
    "predict_bundle": "radfusion.bundle",
    "evaluate_external": "radfusion.external",
    "StudyModel": "radfusion.fusion.study_model",
    "extract_features": "radfusion.radiomics",
    "ibsi_check": "radfusion.radiomics",
    "ICCFilter": "radfusion.selection",
    "SpearmanFilter": "radfusion.selection",
    "MannWhitneyFilter": "radfusion.selection",
    "LassoSelector": "radfusion.selection",
    "delong_test": "radfusion.stats",
    "delong_auc_ci": "radfusion.stats",
    "generate_cohort": "radfusion.synth",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value  # once imported, a plain attribute
        return value
    raise AttributeError(f"module 'radfusion' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
