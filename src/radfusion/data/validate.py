"""Check a cohort before any long work, and summarise its data quality.

Errors (the study cannot run; exit status 2): missing or unreadable file, corrupt
image, mask size differs from image, empty mask, duplicate ``case_id``, label not
0/1, only one class present, missing required value, non-numeric value in a
numeric clinical column or one outside its ``data.clinical.plausible`` range, unknown
``split`` value.

Warnings (reported, exit 0): mask with several components, tiny ROI, ROI covering
(nearly) the whole image, tiny image, categorical value never seen in training
(when scoring new cases), exact and
near-duplicate images (and pixel-identical images with conflicting labels),
duplicates or patients that would straddle the manifest's ``split`` column,
near-duplicate clusters that span several groups (a grouped split would separate
them), missing clinical values.

The checks of one row live in :func:`check_case`, shared by ``validate``, the
study's validate stage and ``predict``. Nothing is dropped silently:
:func:`drop_invalid` returns a cleaned cohort and the list of what it removed, for the
CLI's ``--drop-invalid``.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy import ndimage

from radfusion.data.manifest import REQUIRED_COLUMNS, Cohort
from radfusion.data.readers import read_image, read_mask
from radfusion.data.splits import SPLIT_ALIASES
from radfusion.errors import InputError


@dataclass(frozen=True)
class Issue:
    """One finding: ``severity`` is ``error`` or ``warning``; ``code`` is stable for scripts."""

    severity: str
    code: str
    message: str
    case_id: str | None = None


class _Findings:
    """The ``errors`` and ``warnings`` of an ``issues`` list (one row's or the cohort's)."""

    issues: list[Issue]

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]


@dataclass
class ValidationReport(_Findings):
    """Everything :func:`validate_cohort` found, plus the data-quality summary."""

    manifest: str
    n_rows: int
    issues: list[Issue] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def invalid_case_ids(self) -> list[str]:
        """Cases with at least one error (in first-seen order)."""
        seen: dict[str, None] = {}
        for i in self.errors:
            if i.case_id is not None:
                seen.setdefault(i.case_id, None)
        return list(seen)

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest,
            "n_rows": self.n_rows,
            "ok": self.ok,
            "n_errors": len(self.errors),
            "n_warnings": len(self.warnings),
            "errors": [asdict(i) for i in self.errors],
            "warnings": [asdict(i) for i in self.warnings],
            "summary": self.summary,
        }


#: Images smaller than this on either side raise a 'tiny image' warning (pixels).
MIN_IMAGE_SIDE = 32
#: ROIs covering more than this fraction of the image raise a 'whole image ROI' warning.
MAX_ROI_FRACTION = 0.9


@dataclass
class CaseCheck(_Findings):
    """What :func:`check_case` found for one manifest row.

    ``issues`` are the row's errors and warnings; the other fields feed the cohort
    summary and the duplicate search of :func:`validate_cohort`.
    """

    row: int
    case_id: str
    issues: list[Issue]
    label: str | None = None
    shape: tuple[int, int] | None = None
    roi_area: int | None = None
    pixel_hash: str | None = None
    phash: int | None = None


def _add(issues: list[Issue], sev: str, code: str, msg: str, case_id: str | None) -> None:
    issues.append(Issue(sev, code, msg, case_id))


def _check_mask(
    cohort: Cohort, value: str, column: str, shape: tuple[int, int] | None, case_id: str
) -> tuple[np.ndarray | None, list[Issue]]:
    issues: list[Issue] = []
    path = cohort.resolve(value)
    if not path.is_file():
        _add(issues, "error", "missing_file", f"{column} file not found: {path}", case_id)
        return None, issues
    try:
        mask = read_mask(path, shape=shape, label=cohort.data.mask_label)
    except InputError as exc:
        _add(issues, "error", "unreadable_mask", f"{column}: {exc.problem}", case_id)
        return None, issues
    if shape is not None and mask.shape != shape:
        _add(
            issues,
            "error",
            "mask_size_mismatch",
            f"{column} size {mask.shape[1]}x{mask.shape[0]} (WxH) differs from image size "
            f"{shape[1]}x{shape[0]}",
            case_id,
        )
        return None, issues
    area = int(mask.sum())
    if area == 0:
        _add(issues, "error", "empty_mask", f"{column} is empty (no lesion pixel)", case_id)
        return None, issues
    _, n_comp = ndimage.label(mask)
    if n_comp > 1:
        _add(
            issues,
            "warning",
            "several_components",
            f"{column} has {n_comp} separate components; the bounding box spans all of them",
            case_id,
        )
    if area < cohort.data.min_roi_pixels:
        _add(
            issues,
            "warning",
            "tiny_roi",
            f"{column} ROI has only {area} pixels (< {cohort.data.min_roi_pixels}); texture "
            "features will be unstable",
            case_id,
        )
    if area > MAX_ROI_FRACTION * mask.size:
        _add(
            issues,
            "warning",
            "roi_covers_image",
            f"{column} ROI covers {area / mask.size:.0%} of the image; is it inverted, or "
            "not a lesion outline?",
            case_id,
        )
    return mask, issues


def _phash(image: np.ndarray) -> int:
    import imagehash
    from PIL import Image

    lo, hi = float(image.min()), float(image.max())
    u8 = ((image - lo) / max(hi - lo, 1e-6) * 255).astype(np.uint8)
    bits = imagehash.phash(Image.fromarray(u8)).hash.flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def _value_checks(
    cohort: Cohort,
    row: pd.Series,
    cid: str,
    require_labels: bool,
    categories: Mapping[str, Collection[str]] | None,
) -> tuple[list[Issue], str | None]:
    """Checks on one row's values (no file access); returns the issues and the label."""
    issues: list[Issue] = []
    label = None
    lab = row["label"]
    if require_labels and lab == "":
        _add(issues, "error", "missing_value", "required value 'label' is empty", cid)
    elif require_labels:
        try:
            val = float(lab)
        except ValueError:
            val = None
        if val not in (0.0, 1.0):
            _add(
                issues,
                "error",
                "bad_label",
                f"label {lab!r} is not 0 (adenoma/benign) or 1 (APT/PC/malignant)",
                cid,
            )
        else:
            label = str(int(val))
    for col in cohort.data.clinical.numeric:
        v = row[col]
        if v == "":
            _add(issues, "warning", "missing_clinical", f"'{col}' is missing", cid)
            continue
        try:
            x = float(v)
        except ValueError:
            x = float("nan")
        if not np.isfinite(x):
            _add(
                issues,
                "error",
                "non_numeric",
                f"numeric clinical column '{col}' has non-numeric value {v!r}",
                cid,
            )
        elif col in cohort.data.clinical.plausible:
            lo, hi = cohort.data.clinical.plausible[col]
            if not lo <= x <= hi:
                _add(
                    issues,
                    "error",
                    "implausible_value",
                    f"'{col}' value {v} is outside its plausible range {lo:g} to {hi:g} "
                    "(data.clinical.plausible); correct the value",
                    cid,
                )
    for col in cohort.data.clinical.categorical:
        v = row[col]
        if v == "":
            _add(issues, "warning", "missing_clinical", f"'{col}' is missing", cid)
        elif categories is not None and col in categories and v not in categories[col]:
            seen = ", ".join(map(repr, sorted(categories[col])))
            _add(
                issues,
                "warning",
                "unseen_category",
                f"'{col}' value {v!r} was never seen in training (seen: {seen}); the model "
                "treats it as unknown",
                cid,
            )
    if "split" in row.index and row["split"] and row["split"].lower() not in SPLIT_ALIASES:
        _add(
            issues,
            "error",
            "bad_split",
            f"split value {row['split']!r} is not train / val / test",
            cid,
        )
    return issues, label


def check_case(
    cohort: Cohort,
    i: int,
    *,
    require_labels: bool = True,
    categories: Mapping[str, Collection[str]] | None = None,
) -> CaseCheck:
    """Every check that concerns one case: its values and its files.

    This is the one place the per-case rules live: :func:`validate_cohort` runs it
    on every row of a study cohort, ``radfusion predict`` (and any other scorer) on
    every new case before scoring it.

    Parameters
    ----------
    cohort : Cohort
        The manifest the row belongs to (for a single new case, a one-row cohort).
    i : int
        Row position in ``cohort.table``.
    require_labels : bool
        False for new cases to score: the label is then not checked.
    categories : mapping of str to collection of str, optional
        Categorical clinical values seen in training, per column; a value outside
        them is an ``unseen_category`` warning.

    Returns
    -------
    CaseCheck
        Errors (the case cannot be used: missing or unreadable file, mask size
        mismatch, empty mask, bad label, non-numeric clinical value or one outside
        ``data.clinical.plausible``, unknown split)
        and warnings (tiny ROI, tiny image, ROI covering the image, several ROI
        components, missing clinical value, unseen category).
    """
    row = cohort.table.iloc[i]
    cid = str(row["case_id"]) or f"<row {i + 2}>"
    issues: list[Issue] = []
    if row["case_id"] == "":
        _add(issues, "error", "missing_value", f"row {i + 2}: 'case_id' is empty", None)
    value_issues, label = _value_checks(cohort, row, cid, require_labels, categories)
    issues += value_issues
    scan = CaseCheck(i, cid, issues, label=label)
    for col in ("image", "mask"):
        if row[col] == "":
            _add(scan.issues, "error", "missing_value", f"required value '{col}' is empty", cid)
    if row["image"] == "":
        return scan
    path = cohort.resolve(row["image"])
    if not path.is_file():
        _add(scan.issues, "error", "missing_file", f"image file not found: {path}", cid)
        return scan
    try:
        image = read_image(path, dicom_frame=cohort.data.dicom_frame)
    except InputError as exc:
        _add(scan.issues, "error", "corrupt_image", f"image: {exc.problem}", cid)
        return scan
    scan.shape = image.shape
    if min(image.shape) < MIN_IMAGE_SIDE:
        _add(
            scan.issues,
            "warning",
            "tiny_image",
            f"image is only {image.shape[1]}x{image.shape[0]} pixels (WxH, < {MIN_IMAGE_SIDE} "
            "on a side); is it a thumbnail?",
            cid,
        )
    h = hashlib.sha256(np.ascontiguousarray(image).tobytes())
    h.update(str(image.shape).encode())
    scan.pixel_hash = h.hexdigest()
    scan.phash = _phash(image)
    if row["mask"] != "":
        mask, mask_issues = _check_mask(cohort, row["mask"], "mask", image.shape, cid)
        scan.issues += mask_issues
        if mask is not None:
            scan.roi_area = int(mask.sum())
    if "mask_reader2" in row and row["mask_reader2"] != "":
        _, mask_issues = _check_mask(cohort, row["mask_reader2"], "mask_reader2", image.shape, cid)
        scan.issues += mask_issues
    return scan


def _cohort_checks(
    cohort: Cohort, scans: list[CaseCheck], require_labels: bool = True
) -> list[Issue]:
    """Checks across rows: duplicate ids, both classes present."""
    issues: list[Issue] = []
    ids = cohort.table["case_id"].tolist()
    counts = Counter(c for c in ids if c)
    for cid, n in counts.items():
        if n > 1:
            rows = [str(i + 2) for i, c in enumerate(ids) if c == cid]
            _add(
                issues,
                "error",
                "duplicate_case_id",
                f"case_id appears {n} times (CSV rows {', '.join(rows)})",
                cid,
            )
    present = sorted({s.label for s in scans if s.label is not None})
    if require_labels and len(present) == 1:
        _add(
            issues,
            "error",
            "one_class",
            f"only one class present (label {present[0]} for every valid row); a classifier "
            "needs both 0 and 1",
            None,
        )
    return issues


def _clusters(pairs: list[tuple[int, int]], n: int) -> list[list[int]]:
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        groups[find(i)].append(i)
    return [sorted(g) for g in groups.values() if len(g) > 1]


def _near_duplicate_pairs(hashes: list[int], max_dist: int) -> list[tuple[int, int]]:
    if len(hashes) < 2:
        return []
    bits = np.array([[(h >> k) & 1 for k in range(64)] for h in hashes], dtype=np.uint8)  # (n, 64)
    # Hamming distance via dot products; n = a few thousand stays small.
    b = bits.astype(np.int32)
    dist = b.sum(1)[:, None] + b.sum(1)[None, :] - 2 * (b @ b.T)
    iu = np.triu_indices(len(hashes), k=1)
    close = dist[iu] <= max_dist
    return list(zip(iu[0][close].tolist(), iu[1][close].tolist(), strict=True))


def _describe(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values, dtype=float)
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {
        "n": int(a.size),
        "min": float(a.min()),
        "q1": float(q1),
        "median": float(med),
        "q3": float(q3),
        "max": float(a.max()),
    }


def validate_cohort(
    cohort: Cohort,
    n_jobs: int = -1,
    require_labels: bool = True,
    *,
    categories: Mapping[str, Collection[str]] | None = None,
) -> ValidationReport:
    """Check every row of a cohort and summarise its data quality.

    Parameters
    ----------
    cohort : Cohort
        The manifest as read by :func:`radfusion.data.load_cohort`.
    n_jobs : int
        Threads reading images in parallel (-1: all cores).
    require_labels : bool
        False for new cases to score: labels are then not checked.
    categories : mapping of str to collection of str, optional
        Categorical values seen in training (see :func:`check_case`).

    Returns
    -------
    ValidationReport
        ``report.ok`` is False when any error was found; ``report.summary`` holds
        the counts, size range, ROI areas, duplicate and straddling-group findings.
    """
    report = ValidationReport(str(cohort.root), len(cohort))
    scans: list[CaseCheck] = Parallel(n_jobs=n_jobs, prefer="threads")(
        delayed(check_case)(cohort, i, require_labels=require_labels, categories=categories)
        for i in range(len(cohort))
    )
    issues = _cohort_checks(cohort, scans, require_labels)
    for s in scans:
        issues += s.issues
    t = cohort.table
    ids = t["case_id"].tolist()
    labels = t["label"].tolist()
    groups = cohort.groups

    # Exact duplicates: identical decoded pixels.
    by_hash: dict[str, list[int]] = defaultdict(list)
    for s in scans:
        if s.pixel_hash:
            by_hash[s.pixel_hash].append(s.row)
    exact = [rows for rows in by_hash.values() if len(rows) > 1]
    for rows in exact:
        names = [ids[r] for r in rows]
        labs = sorted({labels[r] for r in rows})
        if len(labs) > 1:
            _add(
                issues,
                "warning",
                "duplicate_conflicting_labels",
                f"pixel-identical images with DIFFERENT labels {labs}: {', '.join(names)}",
                names[0],
            )
        else:
            _add(
                issues,
                "warning",
                "exact_duplicate",
                f"pixel-identical images: {', '.join(names)}",
                names[0],
            )

    # Near duplicates: perceptual-hash clusters.
    valid = [s for s in scans if s.phash is not None]
    pairs = _near_duplicate_pairs([s.phash for s in valid], cohort.data.near_duplicate_distance)
    clusters = [[valid[i].row for i in c] for c in _clusters(pairs, len(valid))]
    exact_sets = [set(r) for r in exact]
    near = [c for c in clusters if set(c) not in exact_sets]
    cross_group = []
    mixed_label = []
    for c in near:
        names = [ids[r] for r in c]
        if len({groups[r] for r in c}) > 1:
            cross_group.append(names)
        if len({labels[r] for r in c}) > 1:
            mixed_label.append(names)
    # what a study's split keeps together (split.join_duplicates), exact copies included
    linked = [[ids[r] for r in c] for c in exact + near if len({groups[r] for r in c}) > 1]
    if near:
        _add(
            issues,
            "warning",
            "near_duplicates",
            f"{len(near)} near-duplicate cluster(s) ({sum(map(len, near))} images, perceptual "
            f"hash distance <= {cohort.data.near_duplicate_distance}); see summary",
            None,
        )
    if cross_group:
        _add(
            issues,
            "warning",
            "near_duplicates_across_groups",
            f"{len(cross_group)} near-duplicate cluster(s) span several "
            f"{cohort.group_column or 'case'} groups; a study keeps each cluster in one split "
            "group (split.join_duplicates), a manifest 'split' column may separate them",
            None,
        )

    # Straddling: groups or duplicate clusters across the manifest's split column.
    straddle: dict[str, list[str]] = {}
    if cohort.has("split"):
        split = t["split"].str.lower().map(SPLIT_ALIASES)
        per_group: dict[str, set] = defaultdict(set)
        for g, sp in zip(groups, split, strict=True):
            if isinstance(sp, str):
                per_group[str(g)].add(sp)
        straddle = {g: sorted(v) for g, v in per_group.items() if len(v) > 1}
        for g, v in straddle.items():
            _add(
                issues,
                "warning",
                "group_straddles_split",
                f"group {g} has cases in several splits ({', '.join(v)})",
                None,
            )
        for c in exact + near:
            sps = {split.iloc[r] for r in c if isinstance(split.iloc[r], str)}
            if len(sps) > 1:
                _add(
                    issues,
                    "warning",
                    "duplicate_straddles_split",
                    f"duplicates {', '.join(ids[r] for r in c)} fall in splits {sorted(sps)}",
                    ids[c[0]],
                )

    shapes = [s.shape for s in scans if s.shape]
    area_by_label: dict[str, list[int]] = defaultdict(list)
    for s in scans:
        if s.roi_area is not None:
            area_by_label[labels[s.row]].append(s.roi_area)
    summary: dict[str, Any] = {
        "cases": len(t),
        "cases_per_label": dict(Counter(labels)),
        "image_height": _describe([h for h, _ in shapes]),
        "image_width": _describe([w for _, w in shapes]),
        "roi_area_per_label": {k: _describe(v) for k, v in sorted(area_by_label.items())},
        "exact_duplicates": [[ids[r] for r in rows] for rows in exact],
        "near_duplicate_clusters": [[ids[r] for r in c] for c in near],
        "near_duplicate_clusters_mixed_labels": mixed_label,
        "near_duplicate_clusters_across_groups": cross_group,
        "duplicate_clusters_across_groups": linked,
        "groups_straddling_split": straddle,
        "group_column": cohort.group_column,
        "has_reader2": cohort.has("mask_reader2"),
    }
    if cohort.has("center"):
        summary["cases_per_center"] = (
            t.groupby("center")["label"].value_counts().unstack(fill_value=0).to_dict("index")
        )
    if cohort.has("patient_id"):
        per_patient = Counter(t["patient_id"][t["patient_id"] != ""])
        summary["patients"] = len(per_patient)
        summary["images_per_patient"] = dict(Counter(per_patient.values()))
    if cohort.group_column and cohort.group_column != "patient_id":
        summary["groups"] = len(set(groups))
    if cohort.has("split"):
        summary["cases_per_split"] = (
            t.assign(split=t["split"].str.lower().map(SPLIT_ALIASES))
            .groupby("split")["label"]
            .value_counts()
            .unstack(fill_value=0)
            .to_dict("index")
        )
    report.issues = issues
    report.summary = summary
    return report


def drop_invalid(cohort: Cohort, report: ValidationReport) -> tuple[Cohort, dict[str, list[str]]]:
    """Remove the rows with errors; return the cleaned cohort and what was dropped and why.

    For a duplicated ``case_id`` whose only problem is the duplication, the first row
    is kept and the later ones dropped. Errors that belong to no single case (e.g.
    only one class present) cannot be fixed by dropping: re-validate the result.
    """
    t = cohort.table
    reasons: dict[str, list[str]] = defaultdict(list)
    codes: dict[str, set[str]] = defaultdict(set)
    for i in report.errors:
        if i.case_id is not None:
            reasons[i.case_id].append(i.message)
            codes[i.case_id].add(i.code)
    later_dup = t["case_id"].duplicated(keep="first").to_numpy()
    drop = np.zeros(len(t), dtype=bool)
    dropped: dict[str, list[str]] = {}
    for pos, cid in enumerate(t["case_id"]):
        only_dup = codes.get(cid) == {"duplicate_case_id"}
        if cid == "" or (cid in reasons and (not only_dup or later_dup[pos])):
            drop[pos] = True
            label = cid or f"<row {pos + 2}>"
            key = label if label not in dropped else f"{label} (CSV row {pos + 2})"
            dropped[key] = reasons.get(cid, ["'case_id' is empty"])
    return Cohort(t[~drop], cohort.root, cohort.data), dropped


def duplicate_links(validation: Mapping[str, Any]) -> list[list[str]]:
    """Clusters of exact or near-duplicate images that span several groups.

    ``validation`` is a report as :meth:`ValidationReport.to_dict` gives it (a run's
    ``validation.json``); the clusters are what a split with ``split.join_duplicates``
    keeps together (:func:`radfusion.data.splits.join_groups`).
    """
    summary = validation.get("summary", {})
    return [list(c) for c in summary.get("duplicate_clusters_across_groups", [])]


def issues_frame(report: ValidationReport) -> pd.DataFrame:
    """All issues as a table (severity, code, case_id, message)."""
    return pd.DataFrame(
        [asdict(i) for i in report.issues], columns=["severity", "code", "message", "case_id"]
    )


__all__ = [
    "MAX_ROI_FRACTION",
    "MIN_IMAGE_SIDE",
    "REQUIRED_COLUMNS",
    "CaseCheck",
    "Issue",
    "ValidationReport",
    "check_case",
    "drop_invalid",
    "duplicate_links",
    "issues_frame",
    "validate_cohort",
]
