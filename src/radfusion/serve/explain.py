"""Why a model scored a case as it did: Grad-CAM for the deep arms, signed feature
contributions for the radiomics model."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radfusion.bundle import Bundle
from radfusion.data.manifest import Case

__all__ = ["feature_contributions", "gradcam_overlays", "png_data_url"]


def png_data_url(rgb: np.ndarray) -> str:
    """An ``(H, W[, C])`` uint8 array as a ``data:image/png;base64`` URL."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _overlay(gray: np.ndarray, heat: np.ndarray, roi: np.ndarray | None, size: int) -> np.ndarray:
    """Heatmap (jet, 45 %) over the network's input crop, ROI outline in green."""
    from matplotlib import colormaps
    from PIL import Image
    from skimage.segmentation import find_boundaries

    g = np.clip(gray, 0.0, 1.0)[..., None].repeat(3, axis=-1)
    jet = colormaps["jet"](np.clip(heat, 0.0, 1.0))[..., :3]
    rgb = 0.55 * g + 0.45 * jet
    if roi is not None and roi.any():
        rgb[find_boundaries(roi > 0.5, mode="inner")] = (0.0, 1.0, 0.2)
    img = Image.fromarray((rgb * 255).round().astype(np.uint8))
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR))


def gradcam_overlays(bundle: Bundle, case: Case, size: int = 256) -> list[dict[str, Any]]:
    """Grad-CAM of every deep arm of the bundle for one case.

    Parameters
    ----------
    bundle : Bundle
    case : Case
        Image and ROI files of the case.
    size : int
        Side of the returned square image, in pixels.

    Returns
    -------
    list of dict
        Per arm: ``arm``, ``model`` (the network's model name) and ``image`` (PNG data URL of
        the heatmap over the network's input crop, ROI outlined).
    """
    import torch

    from radfusion.deep.arm import load_network_spec
    from radfusion.deep.gradcam import gradcam_map
    from radfusion.deep.inputs import InputCache, build_inputs, standardize

    cfg = bundle.config.data
    out = []
    for arm in ("1ch", "2ch"):
        folder = bundle.path / "networks" / arm
        if not folder.is_dir():
            continue
        spec = load_network_spec(folder)
        arrays = build_inputs([case], spec.input, InputCache(None, cfg.dicom_frame, cfg.mask_label))
        raw = np.asarray(arrays[case.case_id], dtype=np.float32)
        heat = gradcam_map(bundle.network(arm), torch.from_numpy(standardize(raw)))
        roi = raw[1] if raw.shape[0] > 1 else None
        out.append(
            {
                "arm": arm,
                "model": spec.model_name,
                "image": png_data_url(_overlay(raw[0], heat, roi, size)),
            }
        )
    return out


def feature_contributions(
    pipeline: Any, features: pd.DataFrame, top: int = 8
) -> list[dict[str, Any]]:
    """Signed contribution of each selected feature to one case's probability.

    A feature's contribution is how much the probability drops when that feature alone is
    replaced by the training cohort's centre (the centre the model's scaler learnt: mean for
    a z-score, median for a robust scaler): positive values pushed the case towards the
    positive class. Model-agnostic, so it works for every classifier of the zoo.

    Parameters
    ----------
    pipeline : sklearn Pipeline
        A fitted radiomics model (selection steps with a ``scaler`` step, then a classifier).
    features : DataFrame
        One row: the case's radiomics features.
    top : int
        How many features to return (largest absolute contribution first).

    Returns
    -------
    list of dict
        ``feature``, ``value`` (the case's), ``reference`` (training centre),
        ``contribution`` (probability points). Empty when the model has no centring scaler.
    """
    scaler = dict(pipeline.steps).get("scaler")
    names = getattr(scaler, "feature_names_in_", None)
    if scaler is None or names is None or not hasattr(scaler, "inverse_transform"):
        return []
    centre = pd.Series(
        np.asarray(scaler.inverse_transform(np.zeros((1, len(names)))))[0], index=list(names)
    )
    selected = [c for c in pipeline[:-1].transform(features).columns if c in centre.index]
    x = features.iloc[[0]]
    probe = pd.concat([x] * (len(selected) + 1), ignore_index=True)
    for i, col in enumerate(selected, start=1):
        probe.loc[i, col] = centre[col]
    p = pipeline.predict_proba(probe)[:, 1]
    rows = [
        {
            "feature": col,
            "value": float(x[col].iloc[0]),
            "reference": float(centre[col]),
            "contribution": float(p[0] - p[i]),
        }
        for i, col in enumerate(selected, start=1)
    ]
    rows.sort(key=lambda r: abs(r["contribution"]), reverse=True)
    return rows[:top]


def radiomics_explanation(
    bundle: Bundle, case: Case, *, scratch: Path | None = None
) -> dict[str, Any] | None:
    """Contributions for the bundle's chosen radiomics model (None when it has none)."""
    from radfusion.bundle import bundle_radiomics

    chosen = [e for e in bundle.models if e["family"] == "radiomics" and e.get("selected")]
    if not chosen:
        return None
    entry = chosen[0]
    feats = bundle_radiomics(bundle, [case], scratch=scratch).loc[[case.case_id]]
    pipe = bundle.pipeline(entry["file"])
    return {
        "model": entry["model"],
        "features": feature_contributions(pipe, feats),
    }
