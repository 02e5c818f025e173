"""The cohort manifest: one CSV row per image.

Required columns: ``case_id`` (unique), ``image``, ``mask`` (paths relative to
the manifest), ``label`` (0 = adenoma / benign, 1 = APT/PC / malignant).
Optional: ``patient_id``, ``center``, ``mask_reader2``, ``split`` and any
clinical columns named in the config.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radfusion.config import DataConfig
from radfusion.errors import ManifestError
from radfusion.utils import atomic_path

REQUIRED_COLUMNS = ("case_id", "image", "mask", "label")
OPTIONAL_COLUMNS = ("patient_id", "center", "mask_reader2", "split")
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Case:
    """One image of the cohort, with absolute file paths."""

    case_id: str
    image: Path
    mask: Path
    label: int
    group: str
    patient_id: str | None = None
    center: str | None = None
    mask_reader2: Path | None = None
    split: str | None = None
    clinical: dict[str, Any] = field(default_factory=dict)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or str(value) == ""


class Cohort:
    """A manifest table plus the folder its relative paths start from.

    Parameters
    ----------
    table : pandas.DataFrame
        The manifest rows, every column read as text (clinical values are
        parsed when used, so a bad value is reported, not coerced to NaN).
    root : Path
        Folder the image / mask paths are relative to.
    data : DataConfig
        Data settings (clinical columns, group column, mask label ...).
    """

    def __init__(self, table: pd.DataFrame, root: Path, data: DataConfig | None = None) -> None:
        self.table = table.reset_index(drop=True)
        self.root = Path(root)
        self.data = data or DataConfig()

    # --- construction ----------------------------------------------------
    @classmethod
    def from_csv(
        cls, path: str | Path, data: DataConfig | None = None, require_labels: bool = True
    ) -> Cohort:
        """Read a manifest CSV. Raises ManifestError for an unusable file.

        ``require_labels=False`` reads a manifest of new cases to score (no ``label``).
        """
        path = Path(path)
        if path.is_dir():
            raise ManifestError(f"manifest {path} is a folder; give the cohort's manifest CSV")
        if not path.is_file():
            raise ManifestError(f"manifest not found: {path}")
        try:
            _check_row_lengths(path)
            table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
        except (pd.errors.ParserError, UnicodeDecodeError, csv.Error) as exc:
            raise ManifestError(f"manifest {path} is not a readable CSV: {exc}") from None
        except pd.errors.EmptyDataError:
            raise ManifestError(f"manifest {path} is empty") from None
        table.columns = [c.strip() for c in table.columns]
        if not require_labels and "label" not in table.columns:
            table["label"] = ""
        missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
        if missing:
            raise ManifestError(
                f"manifest {path} lacks required column(s) {', '.join(missing)}; "
                f"it has: {', '.join(table.columns)}"
            )
        if len(table) == 0:
            raise ManifestError(f"manifest {path} has no rows")
        data = data or DataConfig()
        absent = [c for c in data.clinical.all if c not in table.columns]
        if absent:
            raise ManifestError(
                f"manifest {path} lacks the configured clinical column(s) {', '.join(absent)}"
            )
        if data.group_column and data.group_column not in table.columns:
            raise ManifestError(f"manifest {path} lacks the group column '{data.group_column}'")
        table = table.apply(lambda s: s.str.strip())
        return cls(table, path.parent.resolve(), data)

    # --- columns ---------------------------------------------------------
    def has(self, column: str) -> bool:
        """Whether the manifest has a column with at least one non-empty value."""
        return column in self.table.columns and (self.table[column] != "").any()

    @property
    def group_column(self) -> str | None:
        """Column whose groups must stay inside one split (config, else patient_id)."""
        if self.data.group_column:
            return self.data.group_column
        return "patient_id" if self.has("patient_id") else None

    @property
    def case_ids(self) -> np.ndarray:
        return self.table["case_id"].to_numpy(dtype=str)

    @property
    def labels(self) -> np.ndarray:
        """Labels as int (call after validation)."""
        return self.table["label"].astype(float).astype(int).to_numpy()

    @property
    def groups(self) -> np.ndarray:
        """Group of every row; a row without a group is its own group."""
        col = self.group_column
        ids = self.case_ids
        if col is None:
            return ids.copy()
        g = self.table[col].to_numpy(dtype=str)
        return np.where(g == "", np.char.add("case:", ids), g)

    def resolve(self, value: str) -> Path:
        """Absolute path of a manifest path value."""
        p = Path(value)
        return p if p.is_absolute() else (self.root / p)

    def clinical_frame(self) -> pd.DataFrame:
        """Clinical columns parsed: numeric as float, categorical as text (NaN when blank)."""
        out = pd.DataFrame(index=self.table.index)
        for col in self.data.clinical.numeric:
            out[col] = pd.to_numeric(self.table[col].replace("", np.nan), errors="raise")
        for col in self.data.clinical.categorical:
            out[col] = self.table[col].replace("", np.nan)
        out.index = self.case_ids
        return out

    def __len__(self) -> int:
        return len(self.table)

    def case(self, i: int) -> Case:
        """Row ``i`` as a :class:`Case` (call after validation)."""
        row = self.table.iloc[i]

        def opt(col: str) -> str | None:
            return None if col not in row or _blank(row[col]) else str(row[col])

        r2 = opt("mask_reader2")
        clinical: dict[str, Any] = {}
        for col in self.data.clinical.numeric:
            clinical[col] = float(row[col]) if not _blank(row[col]) else float("nan")
        for col in self.data.clinical.categorical:
            # NaN, not None, like clinical_frame(): the models' imputers treat NaN as missing
            value = opt(col)
            clinical[col] = value if value is not None else float("nan")
        return Case(
            case_id=str(row["case_id"]),
            image=self.resolve(row["image"]),
            mask=self.resolve(row["mask"]),
            label=int(float(row["label"])) if row["label"] != "" else -1,
            group=str(self.groups[i]),
            patient_id=opt("patient_id"),
            center=opt("center"),
            mask_reader2=self.resolve(r2) if r2 else None,
            split=opt("split"),
            clinical=clinical,
        )

    def cases(self) -> list[Case]:
        """All rows as :class:`Case` objects."""
        return [self.case(i) for i in range(len(self))]

    def subset(self, case_ids: list[str] | np.ndarray) -> Cohort:
        """The cohort restricted to ``case_ids`` (in manifest order)."""
        keep = self.table["case_id"].isin(set(map(str, case_ids)))
        return Cohort(self.table[keep], self.root, self.data)

    def drop(self, case_ids: list[str]) -> Cohort:
        """The cohort without ``case_ids``."""
        keep = ~self.table["case_id"].isin(set(case_ids))
        return Cohort(self.table[keep], self.root, self.data)

    def to_csv(self, path: str | Path) -> None:
        """Write the manifest atomically, with paths made absolute (it may live elsewhere)."""
        table = self.table.copy()
        for col in ("image", "mask", "mask_reader2"):
            if col in table.columns:
                table[col] = [str(self.resolve(v)) if v else "" for v in table[col]]
        with atomic_path(path) as tmp:
            table.to_csv(tmp, index=False)


def _check_row_lengths(path: Path) -> None:
    """Refuse a row with more fields than the header.

    pandas silently turns the surplus of the *first* data row into an index, which
    shifts every column by one (and then every label looks wrong).
    """
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, skipinitialspace=True)
        header = next(reader, None)
        if header is None:
            return
        for row in reader:
            if len(row) > len(header):
                raise ManifestError(
                    f"manifest {path}: CSV line {reader.line_num} has {len(row)} fields but the "
                    f"header has {len(header)}; quote values that contain commas or add the "
                    "missing column name"
                )


def load_cohort(
    path: str | Path, data: DataConfig | None = None, require_labels: bool = True
) -> Cohort:
    """Read a cohort manifest (see :meth:`Cohort.from_csv`)."""
    return Cohort.from_csv(path, data, require_labels)
