"""IBSI 1 digital-phantom check of radfusion's radiomics extraction.

The Image Biomarker Standardisation Initiative (IBSI 1) publishes a 5 x 4 x 4 voxel digital
phantom and consensus reference values for it (Zwanenburg et al., Radiology 2020;295:328;
``ATTRIBUTION.md`` beside this file). :func:`ibsi_check` extracts the phantom through
radfusion's own PyRadiomics call (:func:`radfusion.radiomics._worker.pyradiomics_execute`,
the one every study case goes through) with IBSI-compatible settings
(``radiomics_ibsi.yaml``: no resampling, no normalisation, bin width 1 on the phantom's
integer grey levels) in the three aggregations the references use:

- ``3D``: the whole volume; GLCM / GLRLM features averaged over the 13 directions
  (IBSI ``*_3D_avg``), the zone / neighbourhood matrices over 26-connected voxels (``*_3D``),
  morphology and intensity statistics;
- ``2.5D``: the volume with ``force2D``: in-plane neighbours, all slices in one matrix per
  direction (``*_2_5D_avg``, ``*_2_5D``);
- ``2D``: every slice handed to PyRadiomics as a 2D image, exactly as a study hands over
  its ultrasound crops, and the features averaged over the slices (``*_2D_avg``, ``*_2D``).

``pyradiomics_ibsi_map.csv`` maps every IBSI feature to the PyRadiomics feature that
computes it, or says that none does; PyRadiomics' documented deviations are relations
there (kurtosis = IBSI + 3; PCA axis lengths = IBSI x sqrt((N - 1) / N)) and are checked as
such, so a deviation that changes fails like any other value.
``pyradiomics_setting_deviations.csv`` lists the deviations in settings and says whether
this check exercises them.

A value passes when it lies within the IBSI tolerance of the reference, plus half a unit
of the reference's third significant digit (the references are rounded to three).
The extracted values are cached per PyRadiomics / SimpleITK / numpy version and settings;
the comparison with the references is redone every time.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radfusion.errors import RadfusionError
from radfusion.radiomics._worker import (
    collect_messages,
    pyradiomics_execute,
    split_output,
)
from radfusion.utils import atomic_write_json, atomic_write_text, file_sha256, json_sha256

__all__ = [
    "STATUSES",
    "TABLE_COLUMNS",
    "IbsiCheck",
    "ibsi_check",
    "load_mapping",
    "load_references",
    "read_ibsi_summary",
    "setting_deviations",
    "summary_line",
    "within_tolerance",
    "write_ibsi",
]

log = logging.getLogger(__name__)

#: Bump when the cached extraction changes meaning.
CACHE_FORMAT = "radfusion-ibsi-phantom/1"

PASS = "pass"
DEVIATION = "documented deviation"
FAIL = "fail"
NOT_COMPUTED = "not computed"
NO_REFERENCE = "no reference"
#: Every status a reference value can get, in the order the table sorts them.
STATUSES = (FAIL, PASS, DEVIATION, NOT_COMPUTED, NO_REFERENCE)

REFERENCES_FILE = "reference_values_digital_phantom.csv"
MAPPING_FILE = "pyradiomics_ibsi_map.csv"
SETTINGS_DEVIATIONS_FILE = "pyradiomics_setting_deviations.csv"
PARAMS_FILE = "radiomics_ibsi.yaml"
IMAGE_FILE = "phantom_image.nii.gz"
MASK_FILE = "phantom_mask.nii.gz"

#: Aggregation suffix of an IBSI tag -> (aggregation, the radfusion run that computes it or
#: None when PyRadiomics cannot: it averages GLCM / GLRLM features over directions and never
#: merges the matrices). Longest suffixes first; a tag without one (morphology, statistics,
#: histograms) is a 3D feature.
_AGGREGATIONS: tuple[tuple[str, str, str | None], ...] = (
    ("_2_5D_comb", "2.5D merged", None),
    ("_2_5D_avg", "2.5D direction-merged", "2.5D"),
    ("_2D_comb", "2D slice-merged", None),
    ("_2D_avg", "2D averaged", "2D"),
    ("_3D_comb", "3D merged", None),
    ("_3D_avg", "3D averaged", "3D"),
    ("_2_5D", "2.5D", "2.5D"),
    ("_2D", "2D", "2D"),
    ("_3D", "3D", "3D"),
)
_TEXTURE_CLASSES = ("glcm", "glrlm", "glszm", "gldm", "ngtdm")
_RUNS = ("3D", "2.5D", "2D")

#: Mapping relations: PyRadiomics' value -> the value IBSI defines (``n``: voxels in the ROI).
_TO_IBSI: dict[str, Callable[[float, int], float]] = {
    "equal": lambda v, n: v,
    # PyRadiomics' kurtosis is not the excess kurtosis (PyRadiomics FAQ).
    "plus_3": lambda v, n: v - 3.0,
    # PyRadiomics divides the covariance of the voxel positions by N, IBSI by N - 1.
    "axis_population_covariance": lambda v, n: v / math.sqrt((n - 1) / n),
}
_COMPUTED = tuple(_TO_IBSI)
_RELATIONS = (*_COMPUTED, "not_computed", "no_ibsi_feature")

TABLE_COLUMNS = (
    "family",
    "feature",
    "ibsi_tag",
    "aggregation",
    "pyradiomics_feature",
    "reference",
    "tolerance",
    "radfusion",
    "ibsi_equivalent",
    "difference",
    "status",
    "note",
)


def _data_file(name: str) -> Path:
    return Path(str(resources.files("radfusion.radiomics.ibsi").joinpath(name)))


def load_references(path: str | Path | None = None) -> pd.DataFrame:
    """The IBSI 1 digital-phantom reference values (``reference_values_digital_phantom.csv``).

    Returns
    -------
    DataFrame
        ``family, feature, consensus, reference, tolerance, tag``; ``reference`` and
        ``tolerance`` are NaN where IBSI did not standardise the feature.
    """
    ref = pd.read_csv(path or _data_file(REFERENCES_FILE), encoding="utf-8-sig", dtype=str)
    ref = ref.rename(columns={"reference value": "reference"})
    out = ref[["family", "feature", "consensus", "reference", "tolerance", "tag"]].copy()
    for col in ("reference", "tolerance"):
        out[col] = pd.to_numeric(out[col], errors="coerce")
    return out


def load_mapping(path: str | Path | None = None) -> pd.DataFrame:
    """The PyRadiomics -> IBSI mapping (``pyradiomics_ibsi_map.csv``), one row a feature.

    Columns ``ibsi_tag`` (IBSI code without the aggregation suffix), ``ibsi_feature``,
    ``ibsi_family``, ``pyradiomics_feature`` (``class_Name``), ``relation`` (``equal``,
    ``plus_3``, ``axis_population_covariance``, ``not_computed``, ``no_ibsi_feature``)
    and ``note``.

    Raises
    ------
    RadfusionError
        An unknown relation, a mapped row without a PyRadiomics feature, or a repeated tag.
    """
    m = pd.read_csv(path or _data_file(MAPPING_FILE), dtype=str, keep_default_na=False)
    bad = sorted(set(m["relation"]) - set(_RELATIONS))
    if bad:
        raise RadfusionError(f"IBSI mapping: unknown relation(s) {bad}; known: {_RELATIONS}")
    unmapped = m[m["relation"].isin(_COMPUTED) & (m["pyradiomics_feature"] == "")]
    if len(unmapped):
        raise RadfusionError(
            f"IBSI mapping: {', '.join(unmapped['ibsi_tag'])} have a relation but no "
            "PyRadiomics feature"
        )
    tags = m.loc[m["ibsi_tag"] != "", "ibsi_tag"]
    if tags.duplicated().any():
        raise RadfusionError(
            f"IBSI mapping: repeated tag(s) {sorted(set(tags[tags.duplicated()]))}"
        )
    return m


def setting_deviations() -> pd.DataFrame:
    """PyRadiomics' documented deviations from IBSI in settings, and how the check treats them."""
    return pd.read_csv(_data_file(SETTINGS_DEVIATIONS_FILE), dtype=str, keep_default_na=False)


def within_tolerance(value: float, reference: float, tolerance: float) -> bool:
    """Whether ``value`` matches an IBSI reference given to three significant digits.

    Allowed: the IBSI tolerance plus half a unit of the reference's third significant digit
    (the rounding of the published value), e.g. reference -0.355 with tolerance 0 accepts
    -0.3555 ... -0.3545.
    """
    if not math.isfinite(value):
        return False
    half_unit = 0.5 * 10.0 ** (math.floor(math.log10(abs(reference))) - 2) if reference else 0.0
    slack = 1e-12 * max(1.0, abs(reference))  # binary floating point of the written value
    return abs(value - reference) <= tolerance + half_unit + slack


# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------
def _read_phantom() -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Image (float, ``z, y, x``), mask (bool) and spacing (``x, y, z``) of the phantom."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(_data_file(IMAGE_FILE)))
    mask = sitk.ReadImage(str(_data_file(MASK_FILE)))
    return (
        sitk.GetArrayFromImage(image).astype(np.float64),
        sitk.GetArrayFromImage(mask) != 0,
        tuple(float(s) for s in image.GetSpacing()),
    )


def _run_params(base: dict[str, Any], run: str) -> dict[str, Any]:
    """The parameter set of one run: 3D as the file says; 2.5D / 2D texture classes only."""
    if run == "3D":
        return base
    setting = dict(base.get("setting") or {})
    if run == "2.5D":
        setting.update(force2D=True, force2Ddimension=0)
    return {**base, "setting": setting, "featureClass": {c: None for c in _TEXTURE_CLASSES}}


def _features(output: dict[str, Any]) -> dict[str, float]:
    """PyRadiomics output -> ``{class_Name: value}`` (the ``original_`` image prefix dropped)."""
    features, _ = split_output(output)
    return {name.removeprefix("original_"): value for name, value in features.items()}


def _extract_phantom(params: dict[str, Any]) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Feature values of the three runs (``3D``, ``2.5D``, ``2D``) and PyRadiomics' messages."""
    image, mask, spacing = _read_phantom()
    values: dict[str, dict[str, float]] = {}
    with collect_messages() as messages:
        for run in _RUNS:
            p = _run_params(params, run)
            sha = json_sha256(p)
            if run != "2D":
                values[run] = _features(
                    pyradiomics_execute(image, mask, params_sha256=sha, params=p, spacing=spacing)
                )
                continue
            # IBSI 2D: features of every slice that holds ROI voxels, averaged over slices.
            per_slice = [
                _features(
                    pyradiomics_execute(
                        image[z], mask[z], params_sha256=sha, params=p, spacing=spacing[:2]
                    )
                )
                for z in range(image.shape[0])
                if mask[z].any()
            ]
            values[run] = {
                name: float(np.mean([s[name] for s in per_slice])) for name in per_slice[0]
            }
    return values, list(messages)


def _cache_key(params_sha: str, versions: dict[str, str]) -> str:
    return json_sha256(
        {
            "format": CACHE_FORMAT,
            "params_sha256": params_sha,
            "phantom": [file_sha256(_data_file(f)) for f in (IMAGE_FILE, MASK_FILE)],
            "versions": {k: versions[k] for k in ("pyradiomics", "SimpleITK", "numpy")},
        }
    )


def _phantom_values(
    cache_dir: Path | None,
) -> tuple[dict[str, dict[str, float]], list[str], dict[str, str], bool]:
    """The phantom's feature values per run, from the cache when there is one."""
    from radfusion.radiomics.params import load_params, radiomics_versions

    _, params_sha, params = load_params(str(_data_file(PARAMS_FILE)))
    versions = radiomics_versions()
    key = _cache_key(params_sha, versions)
    path = cache_dir / f"ibsi-{key}.json" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            entry = json.loads(path.read_text())
            if entry.get("format") == CACHE_FORMAT and entry.get("key") == key:
                return entry["values"], entry["messages"], versions, True
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            log.warning("ignoring unreadable IBSI cache file %s (%s)", path, exc)
    values, messages = _extract_phantom(params)
    if path is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            path,
            json.dumps(
                {
                    "format": CACHE_FORMAT,
                    "key": key,
                    "values": values,
                    "messages": messages,
                    "versions": versions,
                }
            ),
        )
    return values, messages, versions, False


# ---------------------------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------------------------
def _split_tag(tag: str) -> tuple[str, str, str | None]:
    """IBSI tag -> (tag without aggregation, aggregation, the run computing it or None)."""
    for suffix, aggregation, run in _AGGREGATIONS:
        if tag.endswith(suffix):
            return tag[: -len(suffix)], aggregation, run
    return tag, "3D", "3D"


def _compare(
    references: pd.DataFrame,
    mapping: pd.DataFrame,
    values: dict[str, dict[str, float]],
    n_voxels: int,
) -> pd.DataFrame:
    """One row per reference value: what radfusion computed and whether it matches."""
    by_tag = mapping[mapping["ibsi_tag"] != ""].set_index("ibsi_tag")
    rows = []
    for ref in references.itertuples(index=False):
        base, aggregation, run = _split_tag(ref.tag)
        if base not in by_tag.index:
            raise RadfusionError(f"IBSI mapping has no row for {base} (reference {ref.tag})")
        m = by_tag.loc[base]
        relation, pyrad = m["relation"], m["pyradiomics_feature"]
        row: dict[str, Any] = {
            "family": ref.family,
            "feature": ref.feature,
            "ibsi_tag": ref.tag,
            "aggregation": aggregation,
            "pyradiomics_feature": pyrad,
            "reference": ref.reference,
            "tolerance": ref.tolerance,
            "radfusion": np.nan,
            "ibsi_equivalent": np.nan,
            "difference": np.nan,
            "note": m["note"],
        }
        if math.isnan(ref.reference):
            row["status"] = NO_REFERENCE
            row["note"] = f"IBSI: {ref.consensus}"
        elif relation not in _COMPUTED:
            row["status"] = NOT_COMPUTED
        elif run is None:
            row["status"] = NOT_COMPUTED
            row["note"] = f"PyRadiomics does not compute the {aggregation} aggregation"
        else:
            if pyrad not in values[run]:
                raise RadfusionError(
                    f"PyRadiomics computed no {pyrad} in the {run} run: the IBSI mapping "
                    "does not match this PyRadiomics version"
                )
            value = values[run][pyrad]
            ibsi_value = _TO_IBSI[relation](value, n_voxels)
            row.update(radfusion=value, ibsi_equivalent=ibsi_value)
            row["difference"] = ibsi_value - ref.reference
            if not within_tolerance(ibsi_value, ref.reference, ref.tolerance):
                row["status"] = FAIL
            else:
                row["status"] = PASS if relation == "equal" else DEVIATION
        rows.append(row)
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


@dataclass(frozen=True)
class IbsiCheck:
    """Result of :func:`ibsi_check`.

    Attributes
    ----------
    table : DataFrame
        One row per IBSI reference value (``TABLE_COLUMNS``): the radfusion value, its IBSI
        equivalent (after a documented deviation), the difference and the ``status``
        (``pass``, ``documented deviation``, ``fail``, ``not computed``, ``no reference``).
    versions : dict
        PyRadiomics, SimpleITK, numpy, Python and radfusion versions.
    from_cache : bool
        The phantom's values came from the cache.
    unmapped : list of str
        PyRadiomics features the runs produced that the mapping does not list.
    messages : list of str
        Warnings PyRadiomics logged while extracting the phantom.
    """

    table: pd.DataFrame
    versions: dict[str, str]
    from_cache: bool = False
    unmapped: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """``mapped`` (M), ``within`` (N), ``deviations`` (K), ``failed``, ``not_computed``
        (L), ``features_lacking`` (IBSI features PyRadiomics has no counterpart for) and
        ``no_reference``; the first five count reference values (feature x aggregation)."""
        status = self.table["status"]
        lacking = self.table[status == NOT_COMPUTED]["pyradiomics_feature"] == ""
        tags = self.table.loc[lacking[lacking].index, "ibsi_tag"].map(lambda t: _split_tag(t)[0])
        return {
            "mapped": int(status.isin([PASS, DEVIATION, FAIL]).sum()),
            "within": int(status.isin([PASS, DEVIATION]).sum()),
            "deviations": int((status == DEVIATION).sum()),
            "failed": int((status == FAIL).sum()),
            "not_computed": int((status == NOT_COMPUTED).sum()),
            "features_lacking": int(tags.nunique()),
            "no_reference": int((status == NO_REFERENCE).sum()),
        }

    @property
    def ok(self) -> bool:
        """Every mapped value within tolerance and every PyRadiomics feature mapped."""
        return self.counts["failed"] == 0 and not self.unmapped

    @property
    def pyradiomics_version(self) -> str:
        return str(self.versions.get("pyradiomics", "?")).removeprefix("v")

    def summary_line(self) -> str:
        """The one-line statement for a report or model card."""
        return summary_line(self.pyradiomics_version, self.counts)

    def failures(self) -> pd.DataFrame:
        """The rows outside tolerance."""
        return self.table[self.table["status"] == FAIL]


def summary_line(pyradiomics_version: str, counts: dict[str, int]) -> str:
    """``Feature extraction: PyRadiomics x.y, IBSI digital phantom: N of M ...``."""
    c = counts
    return (
        f"Feature extraction: PyRadiomics {pyradiomics_version}, IBSI digital phantom: "
        f"{c['within']} of {c['mapped']} mapped reference values within tolerance "
        f"({c['deviations']} as documented deviations), {c['not_computed']} reference values "
        f"not computed by PyRadiomics ({c['features_lacking']} IBSI features it lacks, the "
        "others merged texture aggregations)."
    )


def ibsi_check(
    *,
    cache_dir: str | Path | None = None,
    references: pd.DataFrame | None = None,
    mapping: pd.DataFrame | None = None,
) -> IbsiCheck:
    """Check radfusion's PyRadiomics extraction against the IBSI 1 digital phantom.

    Parameters
    ----------
    cache_dir : Path, optional
        Keep the phantom's extracted values there (``ibsi-<key>.json``, keyed by the
        PyRadiomics / SimpleITK / numpy versions, settings and phantom); a later call with
        the same versions reuses them. Default: extract every time (about a second).
    references : DataFrame, optional
        Reference values as :func:`load_references` returns them; default the shipped IBSI
        values (a test passes altered ones to see the check fail).
    mapping : DataFrame, optional
        As :func:`load_mapping` returns it; default the shipped mapping.

    Returns
    -------
    IbsiCheck
        The table, the counts (:attr:`IbsiCheck.counts`), the one-line summary and ``ok``.

    Raises
    ------
    RadfusionError
        The mapping misses an IBSI feature of the references, or names a PyRadiomics
        feature this PyRadiomics version does not compute.
    """
    refs = load_references() if references is None else references
    m = load_mapping() if mapping is None else mapping
    values, messages, versions, cached = _phantom_values(
        Path(cache_dir) if cache_dir is not None else None
    )
    _, mask, _ = _read_phantom()
    table = _compare(refs, m, values, int(mask.sum()))
    known = set(m["pyradiomics_feature"])
    produced = {name for run in values.values() for name in run}
    unmapped = sorted(produced - known)
    order = {s: i for i, s in enumerate(STATUSES)}
    table = table.sort_values("status", key=lambda s: s.map(order), kind="stable")
    return IbsiCheck(
        table=table.reset_index(drop=True),
        versions=versions,
        from_cache=cached,
        unmapped=unmapped,
        messages=messages,
    )


def write_ibsi(check: IbsiCheck, table_path: str | Path, summary_path: str | Path) -> None:
    """Write the check's table (CSV) and its summary (JSON).

    The summary holds the one-line statement, the counts and the versions: the report and
    the model card read it.
    """
    table_path, summary_path = Path(table_path), Path(summary_path)
    atomic_write_text(table_path, check.table.to_csv(index=False, float_format="%.6g"))
    atomic_write_json(
        summary_path,
        {
            "line": check.summary_line(),
            "ok": check.ok,
            "counts": check.counts,
            "unmapped": check.unmapped,
            "pyradiomics": check.pyradiomics_version,
            "versions": check.versions,
        },
    )


def read_ibsi_summary(summary_path: str | Path) -> dict[str, Any] | None:
    """The summary :func:`write_ibsi` wrote, or None when there is none (or it is unreadable)."""
    try:
        summary = json.loads(Path(summary_path).read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and "line" in summary else None
