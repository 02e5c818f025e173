"""Why a model scored a case as it did: Grad-CAM for the deep arms, signed feature
contributions for the radiomics model."""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radfusion.bundle import Bundle
from radfusion.data.manifest import Case
from radfusion.radiomics.names import readable_feature_name

__all__ = ["feature_contributions", "gradcam_overlays", "png_data_url"]


def png_data_url(rgb: np.ndarray) -> str:
    """An ``(H, W[, C])`` uint8 array as a ``data:image/png;base64`` URL."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _on_image(heat: np.ndarray, image: np.ndarray, mask: np.ndarray, spec: Any) -> tuple:
    """The network's heatmap mapped back onto the original image's grid (undoing the
    letterbox, stretch or ROI crop of :func:`radfusion.deep.inputs.network_input`).

    Returns the shown region of the image, the heatmap and the ROI on that region.
    """
    from skimage.transform import resize

    from radfusion.preprocessing.crop import crop_to_roi

    size = heat.shape[0]
    if spec.roi_crop:
        image, mask, _ = crop_to_roi(image, mask, spec.crop_margin)
    elif spec.resize_mode != "stretch":  # letterbox: cut the padding off
        h, w = image.shape
        scale = size / max(h, w)
        new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
        top, left = (size - new_h) // 2, (size - new_w) // 2
        heat = heat[top : top + new_h, left : left + new_w]
    heat = resize(heat, image.shape, order=1, anti_aliasing=False, preserve_range=True)
    return image, heat, mask


def _overlay(image: np.ndarray, heat: np.ndarray, roi: np.ndarray, longest: int) -> np.ndarray:
    """Heatmap (jet, 45 %) over the image at its own aspect ratio, ROI outline in green."""
    from matplotlib import colormaps
    from skimage.morphology import dilation, disk
    from skimage.segmentation import find_boundaries
    from skimage.transform import resize

    from radfusion.preprocessing import normalize_intensity

    h, w = image.shape
    scale = min(1.0, longest / max(h, w))
    shape = (max(1, round(h * scale)), max(1, round(w * scale)))
    gray = resize(normalize_intensity(image, "minmax") / 255.0, shape, anti_aliasing=True)
    heat = resize(heat, shape, order=1)
    roi = resize(roi.astype(float), shape, order=0) > 0.5
    g = np.clip(gray, 0.0, 1.0)[..., None].repeat(3, axis=-1)
    jet = colormaps["jet"](np.clip(heat, 0.0, 1.0))[..., :3]
    rgb = 0.55 * g + 0.45 * jet
    if roi.any():
        edge = dilation(find_boundaries(roi, mode="inner"), disk(1))
        rgb[edge] = (0.0, 1.0, 0.2)
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def gradcam_overlays(bundle: Bundle, case: Case, longest: int = 360) -> list[dict[str, Any]]:
    """Grad-CAM of every deep arm of the bundle for one case, on the original image.

    Parameters
    ----------
    bundle : Bundle
    case : Case
        Image and ROI files of the case.
    longest : int
        Longest side of the returned image, in pixels (never enlarged).

    Returns
    -------
    list of dict
        Per arm: ``arm``, ``model`` (the network's model name) and ``image`` (PNG data URL
        of the heatmap, scaled 0 to 1, over the image region the network saw, at the
        image's own aspect ratio, with the ROI outlined in green).
    """
    import torch

    from radfusion.data.readers import read_image, read_mask
    from radfusion.deep.gradcam import gradcam_map
    from radfusion.deep.inputs import InputCache, build_inputs, standardize
    from radfusion.deep.network import load_network_spec

    cfg = bundle.config.data
    image = np.asarray(read_image(case.image, cfg.dicom_frame), dtype=np.float32)
    mask = np.asarray(read_mask(case.mask, shape=image.shape, label=cfg.mask_label), dtype=bool)
    out = []
    for arm in ("1ch", "2ch"):
        folder = bundle.layout.network_dir(arm)
        if not folder.is_dir():
            continue
        spec = load_network_spec(folder)
        arrays = build_inputs([case], spec.input, InputCache(None, cfg.dicom_frame, cfg.mask_label))
        raw = np.asarray(arrays[case.case_id], dtype=np.float32)
        heat = gradcam_map(bundle.network(arm), torch.from_numpy(standardize(raw)))
        region, heat, roi = _on_image(np.asarray(heat, dtype=float), image, mask, spec.input)
        out.append(
            {
                "arm": arm,
                "model": spec.model_name,
                "image": png_data_url(_overlay(region, heat, roi, longest)),
            }
        )
    return out


def feature_contributions(
    pipeline: Any,
    features: pd.DataFrame,
    top: int = 8,
    log_odds: float = 0.0,
    *,
    case_meta: pd.DataFrame | None = None,
) -> list[dict[str, Any]]:
    """Signed contribution of each selected feature to one case's probability.

    A feature's contribution is how much the probability drops when that feature alone is
    replaced by the training cohort's centre (the centre the model's scaler learnt: mean for
    a z-score, median for a robust scaler): positive values pushed the case towards the
    positive class. Model-agnostic, so it works for every classifier of the zoo.

    The replacement is made where the scaler reads: after the steps before it (the ICC
    filter, and ComBat in a harmonised model), so a ComBat model's values and centres are
    both harmonised ones.

    Parameters
    ----------
    pipeline : sklearn Pipeline
        A fitted radiomics model (selection steps with a ``scaler`` step, then a classifier).
    features : DataFrame
        One row: the case's radiomics features.
    top : int
        How many features to return (largest absolute contribution first).
    log_odds : float
        The model's prior shift (``prior_shift`` in ``bundle.json``), so that the
        contributions are in the probability points the page shows.
    case_meta : DataFrame, optional
        The case's centre and covariates (required by a ComBat-harmonised model).

    Returns
    -------
    list of dict
        ``feature``, ``label`` (its plain name), ``value`` (the case's, as the scaler reads
        it), ``reference`` (training centre), ``contribution`` (probability points). Empty
        when the model has no centring scaler.
    """
    from radfusion.evaluation.prior import apply_prior_shift
    from radfusion.models.routing import routed_call

    names = [name for name, _ in pipeline.steps]
    if "scaler" not in names:
        return []
    at = names.index("scaler")
    scaler = pipeline.steps[at][1]
    scaled_names = getattr(scaler, "feature_names_in_", None)
    if scaled_names is None or not hasattr(scaler, "inverse_transform"):
        return []
    centre = pd.Series(
        np.asarray(scaler.inverse_transform(np.zeros((1, len(scaled_names)))))[0],
        index=list(scaled_names),
    )
    x = features.iloc[[0]]
    if at:
        x = routed_call(pipeline[:at], "transform", x, case_meta=case_meta)
    x = pd.DataFrame(x, columns=list(scaled_names), index=features.index[:1])
    rest = pipeline[at:]
    selected = [c for c in rest[:-1].transform(x).columns if c in centre.index]
    probe = pd.concat([x] * (len(selected) + 1), ignore_index=True)
    for i, col in enumerate(selected, start=1):
        probe.loc[i, col] = centre[col]
    p = apply_prior_shift(rest.predict_proba(probe)[:, 1], log_odds)
    rows = [
        {
            "feature": col,
            "label": readable_feature_name(col),
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
    from radfusion.harmonization.pipeline import cases_meta, logged_harmonization_warnings

    chosen = [e for e in bundle.models if e["family"] == "radiomics" and e.get("selected")]
    if not chosen:
        return None
    entry = chosen[0]
    feats = bundle_radiomics(bundle, [case], scratch=scratch).loc[[case.case_id]]
    pipe = bundle.pipeline(entry["file"])
    harmonized = bundle.config.harmonization.method != "none"
    # the case's centre reaches ComBat as when it was scored (predict_bundle); a centre
    # without estimates passes unadjusted, as the prediction's own warning says
    with logged_harmonization_warnings(logging.DEBUG):
        contributions = feature_contributions(
            pipe,
            feats,
            log_odds=float((entry.get("prior_shift") or {}).get("log_odds", 0.0)),
            case_meta=cases_meta(bundle.config, [case]) if harmonized else None,
        )
    return {"model": entry["model"], "harmonized": harmonized, "features": contributions}
