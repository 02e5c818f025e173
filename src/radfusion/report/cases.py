"""Example test cases with every main model's prediction (the paper's Figure 5).

The paper shows three typical test cases (a carcinoma missed by one network, an atypical tumour
every model got right, an adenoma only the merged models got right) with the ultrasound image,
the ROI outline and each model's call. :func:`pick_example_cases` chooses such cases without
looking at anything but the test predictions and the fixed thresholds; :func:`case_thumbnail`
draws the image with its ROI outline, downscaled for the report.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from radfusion.data import read_image, read_mask
from radfusion.data.readers import display_uint8
from radfusion.errors import InputError
from radfusion.evaluation.metrics import splits_present
from radfusion.evaluation.palette import SPLIT_LABELS
from radfusion.evaluation.run import EvaluationResult
from radfusion.evaluation.runfolder import RunArtifacts
from radfusion.report.html import data_uri, esc
from radfusion.report.tables import ReportTables
from radfusion.utils import atomic_path

__all__ = ["case_predictions", "case_thumbnail", "cases_section", "pick_example_cases"]

_OUTLINE_RGB = (255, 48, 48)


def case_predictions(
    preds: pd.DataFrame, models: Sequence[str], thresholds: Mapping[str, float], split: str
) -> pd.DataFrame:
    """Long table of each model's probability, call and correctness on one split.

    Returns
    -------
    pandas.DataFrame
        ``case_id, label, model, probability, threshold, predicted, correct``.
    """
    sub = preds[(preds["split"] == split) & preds["model"].isin(list(models))].copy()
    sub["threshold"] = sub["model"].map(thresholds).astype(float)
    sub["predicted"] = (sub["probability"] >= sub["threshold"]).astype(int)
    sub["correct"] = sub["predicted"] == sub["label"]
    return sub[["case_id", "label", "model", "probability", "threshold", "predicted", "correct"]]


def pick_example_cases(
    preds: pd.DataFrame,
    models: Sequence[str],
    thresholds: Mapping[str, float],
    n: int = 3,
    split: str = "test",
) -> list[str]:
    """Choose ``n`` illustrative cases of one split, as in the paper's Figure 5.

    In turn: the positive case most models call correctly (ties: highest mean probability),
    the negative case most models call correctly (ties: lowest mean probability), and the case
    on which the models disagree most (fraction correct nearest one half); repeated until
    ``n`` cases are chosen. Deterministic (remaining ties broken by case id).

    Parameters
    ----------
    preds : pandas.DataFrame
        Validated predictions.
    models : sequence of str
        The models shown (usually the selected model per family).
    thresholds : Mapping[str, float]
    n : int, default 3
    split : str, default "test"

    Returns
    -------
    list of str
        Case ids (fewer than ``n`` if the split is smaller).
    """
    long = case_predictions(preds, models, thresholds, split)
    if long.empty or n <= 0:
        return []
    per_case = (
        long.groupby("case_id")
        .agg(label=("label", "first"), frac=("correct", "mean"), mean_p=("probability", "mean"))
        .reset_index()
    )
    per_case["disagreement"] = (per_case["frac"] - 0.5).abs()
    orders = [
        per_case[per_case["label"] == 1].sort_values(
            ["frac", "mean_p", "case_id"], ascending=[False, False, True]
        ),
        per_case[per_case["label"] == 0].sort_values(
            ["frac", "mean_p", "case_id"], ascending=[False, True, True]
        ),
        per_case.sort_values(["disagreement", "case_id"]),
    ]
    queues = [list(o["case_id"]) for o in orders]
    chosen: list[str] = []
    while len(chosen) < min(n, len(per_case)):
        progressed = False
        for q in queues:
            while q and q[0] in chosen:
                q.pop(0)
            if q and len(chosen) < n:
                chosen.append(q.pop(0))
                progressed = True
        if not progressed:
            break
    return chosen


def case_thumbnail(
    image_path: str | Path,
    mask_path: str | Path | None = None,
    max_side: int = 360,
    mask_label: int | None = None,
    dicom_frame: int = 0,
) -> bytes:
    """PNG of an ultrasound image, downscaled, with the ROI outlined in red.

    Parameters
    ----------
    image_path : str or Path
    mask_path : str or Path, optional
        The ROI (any format :func:`radfusion.data.read_mask` reads); no outline when None.
    max_side : int, default 360
        Longest side of the thumbnail in pixels (keeps the report small).
    mask_label : int, optional
        Lesion value in a labelled mask.
    dicom_frame : int, default 0

    Returns
    -------
    bytes
        PNG bytes.

    Raises
    ------
    InputError
        Unreadable image or mask.
    """
    image = read_image(image_path, dicom_frame=dicom_frame)
    gray = Image.fromarray(display_uint8(image))
    scale = min(1.0, max_side / max(gray.size))
    size = (max(1, round(gray.width * scale)), max(1, round(gray.height * scale)))
    rgb = np.array(gray.resize(size, Image.Resampling.LANCZOS).convert("RGB"))
    if mask_path is not None:
        mask = read_mask(mask_path, shape=image.shape, label=mask_label)
        if mask.shape == image.shape:
            small = Image.fromarray(mask.astype(np.uint8) * 255).resize(
                size, Image.Resampling.NEAREST
            )
            m = np.array(small) > 0
            edge = m & ~ndimage.binary_erosion(m)
            # Two pixels wide so the outline survives the browser's own scaling.
            edge = ndimage.binary_dilation(edge, iterations=1)
            rgb[edge] = _OUTLINE_RGB
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _case_path(run: RunArtifacts, value: object) -> Path | None:
    # cases.csv holds absolute paths; a relative one is taken as relative to the run folder.
    if value is None or (isinstance(value, float) and math.isnan(value)) or not str(value):
        return None
    path = Path(str(value))
    return path if path.is_absolute() else run.path / path


def cases_section(run: RunArtifacts, ev: EvaluationResult, tables: ReportTables) -> str:
    cfg = run.config
    preds = run.predictions
    splits = splits_present(preds)
    split = "test" if "test" in splits else splits[-1]
    ids = pick_example_cases(
        preds, ev.main_models, ev.thresholds, cfg.evaluation.example_cases, split
    )
    if not ids:
        return "<p>No example cases (example_cases = 0 or no predictions).</p>"
    long = case_predictions(preds, ev.main_models, ev.thresholds, split)
    names = cfg.evaluation.class_names
    cases = run.cases.set_index("case_id") if run.cases is not None else None
    cards, csv_rows = [], []
    clinical = cfg.data.clinical.all
    for cid in ids:
        sub = long[long["case_id"] == cid].set_index("model").reindex(ev.main_models).dropna()
        label = int(sub["label"].iloc[0])
        img_html = '<p class="note">Image not available (no cases.csv).</p>'
        facts = ""
        if cases is not None and cid in cases.index:
            c = cases.loc[cid]
            image, mask = _case_path(run, c.get("image")), _case_path(run, c.get("mask"))
            try:
                if image is None:
                    raise InputError("cases.csv has no image path", cid)
                png = case_thumbnail(
                    image,
                    mask,
                    mask_label=cfg.data.mask_label,
                    dicom_frame=cfg.data.dicom_frame,
                )
                img_html = f'<img src="{data_uri(png)}" alt="case {esc(cid)} with ROI outline">'
            except (InputError, OSError, KeyError, TypeError) as exc:
                img_html = f'<p class="note">Image not available: {esc(exc)}</p>'
            shown = [f"{k} {c[k]}" for k in clinical if k in c.index and pd.notna(c[k])]
            facts = f'<p class="note">{esc("; ".join(shown))}</p>' if shown else ""
        rows = []
        for model, r in sub.iterrows():
            ok = bool(r["correct"])
            call = esc(names[int(r["predicted"])])
            mark = (
                f'<span class="ok">{call} ✓</span>' if ok else f'<span class="bad">{call} ✗</span>'
            )
            rows.append(
                f"<tr><td>{esc(model)}</td><td class='num'>{r['probability']:.3f}</td>"
                f"<td class='num'>{r['threshold']:.3f}</td><td>{mark}</td></tr>"
            )
            csv_rows.append(
                {
                    "case_id": cid,
                    "label": names[label],
                    "model": model,
                    "probability": round(float(r["probability"]), 4),
                    "threshold": round(float(r["threshold"]), 4),
                    "predicted": names[int(r["predicted"])],
                    "correct": ok,
                }
            )
        n_ok = int(sub["correct"].sum())
        cards.append(
            f'<div class="case"><h4>Case {esc(cid)}: {esc(names[label])}</h4>{img_html}{facts}'
            f'<p class="note">{n_ok} of {len(sub)} models correct (✓ correct, ✗ wrong).</p>'
            "<table><thead><tr><th>Model</th><th>Prob.</th><th>Thr.</th>"
            f"<th>Call</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
        )
    csv = pd.DataFrame(csv_rows)
    path = tables.layout.report_table("example_cases")
    with atomic_path(path) as tmp:
        csv.to_csv(tmp, index=False)
    tables.written.append(path)
    intro = (
        f"<p>{len(ids)} {SPLIT_LABELS[split].lower()}-set cases chosen automatically: the "
        f"{names[1]} case most models call correctly, the {names[0]} case most models call "
        "correctly, and the case the models disagree on most. The red outline is the reader's "
        "ROI.</p>"
    )
    return intro + f'<div class="cases">{"".join(cards)}</div>'
