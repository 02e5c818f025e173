"""The participant-flow diagram (TRIPOD+AI item 20a, CLAIM 2024 item 33): images and patients
in the manifest, those excluded by input validation and why, and the training / validation /
test sets with their events. Drawn as HTML boxes (prints sharp, needs no image) and written
as ``report/tables/participant_flow.csv``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from radfusion.evaluation.palette import SPLIT_LABELS, SPLITS
from radfusion.evaluation.runfolder import RunArtifacts
from radfusion.report.html import esc

__all__ = ["flow_diagram", "flow_table"]


def _counts(df: pd.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {"images": len(df)}
    if "patient_id" in df.columns and df["patient_id"].notna().all():
        out["patients"] = int(df["patient_id"].nunique())
    if "label" in df.columns:
        out["events"] = int(pd.to_numeric(df["label"]).sum())
    return out


def flow_table(run: RunArtifacts) -> pd.DataFrame:
    """Stages of the participant flow: ``stage, images, patients, events, note``.

    Parameters
    ----------
    run : RunArtifacts

    Returns
    -------
    pandas.DataFrame
        Rows "Manifest", "Excluded", "Analysed" and one per set present; patients are blank
        when the cases carry no ``patient_id``.
    """
    cases = run.cases if run.cases is not None else run.predictions.drop_duplicates("case_id")
    dropped = run.dropped
    n_drop = len(dropped)
    reasons = ""
    if isinstance(dropped, dict) and dropped:
        tally = pd.Series([str(v) for v in dropped.values()]).value_counts()
        reasons = "; ".join(f"{k} ({v})" for k, v in tally.head(5).items())
    analysed = _counts(cases)
    n_rows = run.validation.get("n_rows")
    manifest_images = int(n_rows) if n_rows else analysed["images"] + n_drop
    rows: list[dict[str, Any]] = [
        {"stage": "Manifest", "images": manifest_images, "note": "rows of the cohort manifest"},
        {
            "stage": "Excluded",
            "images": n_drop,
            "note": reasons or ("failed input validation" if n_drop else "none"),
        },
        {"stage": "Analysed", **analysed, "note": "images with a readable image and ROI"},
    ]
    for split in SPLITS if "split" in cases.columns else ():
        sub = cases[cases["split"].astype(str) == split]
        if len(sub):
            rows.append({"stage": SPLIT_LABELS[split], **_counts(sub), "note": ""})
    cols = ["stage", "images", "patients", "events", "note"]
    return pd.DataFrame(rows).reindex(columns=cols)


def _box(title: str, row: pd.Series, event_name: str) -> str:
    lines = [f"{int(row['images'])} images"]
    if pd.notna(row.get("patients")):
        lines.append(f"{int(row['patients'])} patients")
    if pd.notna(row.get("events")):
        lines.append(f"{int(row['events'])} {event_name}")
    body = "<br>".join(esc(s) for s in lines)
    note = f'<div class="fnote">{esc(row["note"])}</div>' if row.get("note") else ""
    return f'<div class="fbox"><b>{esc(title)}</b><br>{body}{note}</div>'


def flow_diagram(table: pd.DataFrame, event_name: str) -> str:
    """HTML boxes of :func:`flow_table` (manifest -> excluded -> analysed -> sets).

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`flow_table`'s result.
    event_name : str
        The positive class (e.g. "APT/PC"), named after the event counts.
    """
    by = table.set_index("stage")
    sets = [s for s in table["stage"] if s in SPLIT_LABELS.values()]
    excluded = by.loc["Excluded"]
    return (
        '<div class="flow" role="img" aria-label="Participant flow diagram">'
        f'<div class="frow">{_box("Cohort manifest", by.loc["Manifest"], event_name)}</div>'
        '<div class="farrow">↓</div>'
        f'<div class="frow fside"><div class="fbox fexcl"><b>Excluded</b><br>'
        f"{int(excluded['images'])} images<div class='fnote'>{esc(excluded['note'])}</div>"
        "</div></div>"
        '<div class="farrow">↓</div>'
        f'<div class="frow">{_box("Analysed", by.loc["Analysed"], event_name)}</div>'
        '<div class="farrow">↓</div>'
        f'<div class="frow">{"".join(_box(f"{s} set", by.loc[s], event_name) for s in sets)}'
        "</div></div>"
    )
