"""Radiomics features of a table of image / mask paths in one call (notebooks, scripts).

The study extracts features from a manifest inside a run folder; a researcher exploring
data wants them for a DataFrame, without a whole study config::

    import pandas as pd
    from radfusion import extract_features

    table = pd.DataFrame({"image": ["us/001.png"], "mask": ["roi/001.png"]})
    features = extract_features(table)          # one row per case, PyRadiomics columns

The same preprocessing (ROI crop, resize, normalisation) and PyRadiomics parameter file
as a study with the chosen preset, so the values equal those a study computes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from radfusion.config import ClinicalColumns, StudyConfig, load_preset
from radfusion.data import Cohort
from radfusion.radiomics.extract import extract_radiomics

__all__ = ["extract_features"]


def extract_features(
    table: pd.DataFrame,
    *,
    config: StudyConfig | None = None,
    preset: str = "paper",
    image: str = "image",
    mask: str = "mask",
    case_id: str | None = None,
    root: str | Path = ".",
    cache_dir: str | Path | None = None,
    n_jobs: int = 1,
    progress: bool = False,
) -> pd.DataFrame:
    """PyRadiomics features of every row of ``table`` (an image and its lesion mask).

    Parameters
    ----------
    table : DataFrame
        One row per lesion, with the image and mask paths (PNG, JPEG, TIFF, DICOM, NIfTI;
        a mask may also be an ImageJ ``.roi``).
    config : StudyConfig, optional
        The study settings to extract with (preprocessing, PyRadiomics parameter file);
        default: the ``preset``.
    preset : {"paper", "demo"}
        Preset used when ``config`` is not given.
    image, mask : str
        Columns holding the paths.
    case_id : str, optional
        Column of unique case ids (default: the table's index, as text).
    root : Path
        Folder that relative paths start from.
    cache_dir : Path, optional
        Keep the per-case cache there (a second call then reuses it); default: a
        temporary folder, removed afterwards.
    n_jobs : int
        Worker processes (-1: all cores).
    progress : bool
        Show a progress bar.

    Returns
    -------
    DataFrame
        Indexed by case id, one float column per feature, in the order of ``table``.

    Raises
    ------
    ValueError
        If a column is missing or case ids repeat.
    radfusion.radiomics.RadiomicsExtractionError
        If a case cannot be read or extracted (the error names every such case).
    """
    missing = [c for c in (image, mask, case_id) if c is not None and c not in table.columns]
    if missing:
        raise ValueError(f"table lacks column(s) {missing}; it has {list(table.columns)}")
    ids = (table[case_id] if case_id else pd.Series(table.index)).astype(str)
    if ids.duplicated().any():
        raise ValueError(f"case ids repeat: {sorted(set(ids[ids.duplicated()]))[:5]}")
    manifest = pd.DataFrame(
        {
            "case_id": ids.to_numpy(),
            "image": table[image].astype(str).to_numpy(),
            "mask": table[mask].astype(str).to_numpy(),
            "label": "",
        }
    )
    cfg = config if config is not None else load_preset(preset)
    # only paths here: the study's clinical and group columns do not apply
    data = cfg.data.model_copy(update={"clinical": ClinicalColumns(), "group_column": None})
    cases = Cohort(manifest, Path(root).resolve(), data).cases()
    with tempfile.TemporaryDirectory(prefix="radfusion-features-") as tmp:
        result = extract_radiomics(
            cases,
            cfg,
            cache_dir if cache_dir is not None else Path(tmp) / "cache",
            n_jobs=n_jobs,
            progress=progress,
        )
    return result.features
