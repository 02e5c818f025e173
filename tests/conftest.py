"""Shared fixtures: small cohorts written to tmp folders, built from scratch in the tests."""

from __future__ import annotations

import copy
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

BUSI = Path(__file__).resolve().parents[2] / "shared" / "data" / "busi"

#: The smallest study settings that still run every stage (seconds per stage, not minutes).
TINY = {
    "preset": "demo",
    "name": "tiny",
    "preprocess": {"size": 32},
    "augment": {"factor": 2},
    "radiomics": {"n_jobs": 1},
    "selection": {"lasso_cv": 2, "lasso_cs": 4, "max_features": 8},
    "models": {"classifiers": ["LR", "RF"], "cv": 2, "n_iter": 1, "n_jobs": 1},
    "deep": {
        "depth": 18,
        "image_size": 32,
        "epochs": 2,
        "batch_size": 16,
        "patience": 2,
        "gradcam_cases": 1,
    },
    "fusion": {"stacking": "crossfit", "stacking_folds": 2},
    "evaluation": {"n_bootstrap": 100, "example_cases": 1},
    "reproducibility": {"mode": "fast"},  # studies run in the test process, on its kernels
}


def tiny_config(**sections: dict | str | None) -> dict:
    """:data:`TINY` changed section by section (the one tiny config of the test suite).

    A dict merges into TINY's section of that name (its keys win), any other value
    replaces it (e.g. ``name``), and None drops the section (the preset's values apply).
    """
    raw = copy.deepcopy(TINY)
    for key, value in sections.items():
        if value is None:
            raw.pop(key, None)
        elif isinstance(value, dict):
            raw[key] = {**raw.get(key, {}), **value}
        else:
            raw[key] = value
    return raw


def cpu_has_avx2() -> bool:
    """Strict reproducibility needs an x86-64 CPU with AVX2 (its tests skip elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return " avx2 " in fh.read()
    except OSError:
        return False


def ellipse_mask(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def write_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def bomb_png_bytes(side: int = 20000) -> bytes:
    """A small, valid PNG whose header declares side x side pixels (a decompression bomb:
    Pillow refuses to open it beyond ~179 Mpixels)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * (side + 1)))
        + chunk(b"IEND", b"")
    )


def make_cohort(
    root: Path,
    n: int = 12,
    seed: int = 0,
    shape: tuple[int, int] = (64, 80),
    extra: dict[str, list] | None = None,
    reader2: bool = True,
) -> Path:
    """Write n images (half label 1, brighter larger lesions) + masks + manifest.csv."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = i % 2
        img = rng.normal(120, 20, shape).clip(0, 255)
        ry, rx = (14, 18) if label else (9, 11)
        cy, cx = shape[0] / 2 + rng.integers(-4, 5), shape[1] / 2 + rng.integers(-4, 5)
        m = ellipse_mask(shape, cy, cx, ry, rx)
        img[m] = rng.normal(60 if label else 90, 10, m.sum()).clip(0, 255)
        cid = f"c{i:03d}"
        write_png(root / "images" / f"{cid}.png", img.astype(np.uint8))
        write_png(root / "masks" / f"{cid}.png", (m * 255).astype(np.uint8))
        row = {
            "case_id": cid,
            "image": f"images/{cid}.png",
            "mask": f"masks/{cid}.png",
            "label": label,
        }
        if reader2:
            m2 = ellipse_mask(shape, cy + 1, cx, ry, rx + 1)
            write_png(root / "masks2" / f"{cid}.png", (m2 * 255).astype(np.uint8))
            row["mask_reader2"] = f"masks2/{cid}.png"
        rows.append(row)
    df = pd.DataFrame(rows)
    for k, v in (extra or {}).items():
        df[k] = v
    path = root / "manifest.csv"
    df.to_csv(path, index=False)
    return path


@pytest.fixture
def tiny_cohort(tmp_path: Path) -> Path:
    """A valid 12-image cohort with patient, center and clinical columns."""
    n = 12
    return make_cohort(
        tmp_path / "cohort",
        n=n,
        extra={
            "patient_id": [f"p{i // 2 if i < 4 else i}" for i in range(n)],
            "center": ["H1" if i < 6 else "H2" for i in range(n)],
            "age": [50 + i for i in range(n)],
            "sex": ["F", "M"] * (n // 2),
        },
    )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished tiny study (48 synthetic images, TINY settings) with its bundle, built once
    per test session and shared read-only by the tests that score with a bundle."""
    import yaml
    from typer.testing import CliRunner

    from radfusion.cli import app
    from radfusion.synth import generate_cohort

    root = tmp_path_factory.mktemp("tiny_study")
    manifest = generate_cohort(
        root / "cohort", n=48, seed=3, prevalence=0.35, image_shape=(120, 160)
    )
    cfg = root / "study.yaml"
    cfg.write_text(
        yaml.safe_dump(dict(TINY, data={"manifest": str(manifest)}, output_dir=str(root / "run")))
    )
    res = CliRunner().invoke(app, ["run", str(cfg)])
    assert res.exit_code == 0, res.output
    return root / "run"
