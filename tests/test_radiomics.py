"""PyRadiomics extraction: feature set, analytic values, cache / resume, failures, dask."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

import radfusion.radiomics.extract as extract_mod
from radfusion.config import AugmentConfig, StudyConfig, radiomics_params_path
from radfusion.data import Case
from radfusion.errors import ConfigError, RadfusionError
from radfusion.preprocessing import plan_augmentation
from radfusion.radiomics import (
    RadiomicsExtractionError,
    extract_radiomics,
    read_feature_table,
    write_feature_table,
)
from radfusion.radiomics._worker import run_task

SIZE = 64  # small crops keep the paper's 567-feature extraction at ~0.2 s per case
TEXTURE_CLASSES = {"firstorder": 18, "glcm": 24, "glrlm": 16, "glszm": 16, "gldm": 14, "ngtdm": 5}
IMAGE_TYPES = ["original"] + [f"log-sigma-{s}-0-mm-3D" for s in range(1, 6)]


def _save(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def _ellipse(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _make_case(folder: Path, cid: str, seed: int, reader2: bool = True) -> Case:
    """A textured 96x96 'ultrasound' image with a darker elliptical lesion."""
    rng = np.random.default_rng(seed)
    shape = (96, 96)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, shape), 1.5)
    ry, rx = 14 + seed % 7, 18 + seed % 5
    lesion = _ellipse(shape, 46 + seed % 5, 50 - seed % 4, ry, rx)
    image = 120 + 40 * texture / texture.std() - 45 * lesion
    image = np.clip(image, 0, 255).astype(np.uint8)
    r2 = _ellipse(shape, 46 + seed % 5, 50 - seed % 4, ry + 2, rx + 2)
    return Case(
        case_id=cid,
        image=_save(folder / f"{cid}_img.png", image),
        mask=_save(folder / f"{cid}_mask.png", lesion.astype(np.uint8) * 255),
        label=seed % 2,
        group=cid,
        mask_reader2=_save(folder / f"{cid}_r2.png", r2.astype(np.uint8) * 255)
        if reader2
        else None,
    )


def _config(**radiomics) -> StudyConfig:
    cfg = StudyConfig()
    cfg.preprocess.size = SIZE
    cfg.radiomics.n_jobs = 1
    for k, v in radiomics.items():
        setattr(cfg.radiomics, k, v)
    return cfg


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> list[Case]:
    folder = tmp_path_factory.mktemp("cohort")
    return [_make_case(folder, f"case{i}", seed=i) for i in range(4)]


@pytest.fixture(scope="module")
def augmentations(cohort) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "case_id": [c.case_id for c in cohort],
            "label": [1, 0, 0, 0],
            "split": ["train"] * 4,
        }
    )
    # One minority case (case0) x factor 5 -> hflip, vflip, hflip+vflip, noise copies.
    return plan_augmentation(table, AugmentConfig(factor=5, noise_std=0.05), seed=7)


@pytest.fixture(scope="module")
def baseline(cohort, augmentations, tmp_path_factory):
    """The cohort and its copies extracted once, in two loky worker processes."""
    cache = tmp_path_factory.mktemp("baseline_cache")
    result = extract_radiomics(
        cohort, _config(), cache, augmentations=augmentations, n_jobs=2, progress=False
    )
    return result, cache


def test_paper_file_yields_the_567_features(cohort, tmp_path, capfd):
    result = extract_radiomics(cohort[:2], _config(), tmp_path, progress=False)
    features = result.features
    assert features.shape == (2, 567)
    assert list(features.index) == ["case0", "case1"]
    assert (features.dtypes == np.float64).all()
    cols = list(features.columns)
    assert sum(c.startswith("original_shape2D_") for c in cols) == 9
    for image_type in IMAGE_TYPES:
        for cls, n in TEXTURE_CLASSES.items():
            assert sum(c.startswith(f"{image_type}_{cls}_") for c in cols) == n, (image_type, cls)
    assert np.isfinite(features.filter(like="shape2D")).all().all()

    # Diagnostics: provenance a reader can check independently of the code under test.
    diag = result.diagnostics.loc["case0"]
    case = cohort[0]
    mask = np.asarray(Image.open(case.mask)) > 0
    rows, cols_ = np.nonzero(mask)
    assert (diag.bbox_top, diag.bbox_bottom) == (rows.min(), rows.max())
    assert (diag.bbox_left, diag.bbox_right) == (cols_.min(), cols_.max())
    assert diag.roi_pixels == mask.sum()
    assert diag.image_sha256 == hashlib.sha256(case.image.read_bytes()).hexdigest()
    assert diag.mask_sha256 == hashlib.sha256(case.mask.read_bytes()).hexdigest()
    shipped = radiomics_params_path("paper").read_bytes()
    assert diag.params_sha256 == hashlib.sha256(shipped).hexdigest()
    import radiomics
    import SimpleITK

    assert diag["diagnostics_Versions_PyRadiomics"] == radiomics.__version__
    assert diag["diagnostics_Versions_SimpleITK"] == SimpleITK.__version__
    assert diag["diagnostics_Versions_Numpy"] == np.__version__
    assert diag["diagnostics_Mask-original_VoxelNum"] == diag.crop_roi_pixels
    # PyRadiomics' per-image "GLCM is symmetrical" notice is not printed, nor kept.
    assert "GLCM is symmetrical" not in capfd.readouterr().err
    assert not result.diagnostics["pyradiomics_messages"].str.contains("symmetrical").any()


def _shape_firstorder_params(folder: Path, bin_width: float = 5) -> Path:
    path = folder / "shape_firstorder.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            setting: {{label: 1, binWidth: {bin_width}}}
            imageType: {{Original: {{}}}}
            featureClass: {{shape2D: , firstorder: }}
            """
        )
    )
    return path


def test_disc_shape_features_match_geometry(tmp_path):
    R = 20
    disc = _ellipse((64, 64), 32, 31, R, R)
    rng = np.random.default_rng(1)
    image = rng.integers(60, 200, (64, 64)).astype(np.uint8)
    case = Case(
        "disc",
        _save(tmp_path / "i.png", image),
        _save(tmp_path / "m.png", disc.astype(np.uint8) * 255),
        0,
        "g",
    )
    # The disc's bounding box is 2R+1 pixels wide: with size 2R+1 and no normalisation the
    # crop is not resampled, so the ROI stays the digital disc.
    cfg = _config(params=str(_shape_firstorder_params(tmp_path)))
    cfg.preprocess.size = 2 * R + 1
    cfg.preprocess.normalization = "none"
    f = extract_radiomics([case], cfg, tmp_path / "cache", progress=False).features.loc["disc"]

    area = math.pi * R**2
    assert f["original_shape2D_PixelSurface"] == disc.sum()
    # The lattice-point count of a radius-20 disc is within 1% of pi R^2 (Gauss circle).
    assert f["original_shape2D_PixelSurface"] == pytest.approx(area, rel=0.01)
    # The marching-squares polygon runs through the midpoints between ROI and background
    # pixels: its area is the pixel count less the cut corners, within ~2% of pi R^2.
    assert f["original_shape2D_MeshSurface"] == pytest.approx(area, rel=0.02)
    # That polygon is an 8-direction chain: its length exceeds a smooth circle's by a factor
    # of at most ~1.055 averaged over directions (4/pi (2 sqrt2 - 2)), and its radius lies
    # between R and R + 0.5.
    perimeter = f["original_shape2D_Perimeter"]
    assert 2 * math.pi * R <= perimeter <= 1.06 * 2 * math.pi * (R + 0.5)
    # Sphericity 2 sqrt(pi A) / P is 1 for a circle; the chain's excess length lowers it.
    assert 0.90 <= f["original_shape2D_Sphericity"] <= 1.0
    assert f["original_shape2D_Elongation"] == pytest.approx(1.0, abs=1e-3)
    # Second moment of a disc along any axis is R^2/4, so 4 sqrt(R^2/4) = 2R.
    assert f["original_shape2D_MajorAxisLength"] == pytest.approx(2 * R, rel=0.01)
    assert f["original_shape2D_MinorAxisLength"] == pytest.approx(2 * R, rel=0.01)
    assert 2 * R <= f["original_shape2D_MaximumDiameter"] <= 2 * R + 1
    # First order on the raw (not normalised, not resampled) ROI pixels.
    roi = image[disc].astype(np.float64)
    assert f["original_firstorder_Mean"] == pytest.approx(roi.mean(), rel=1e-9)
    assert f["original_firstorder_Variance"] == pytest.approx(roi.var(), rel=1e-9)
    assert f["original_firstorder_Range"] == roi.max() - roi.min()


def test_constant_roi_has_no_spread(tmp_path):
    disc = _ellipse((64, 64), 30, 34, 15, 12)
    image = np.full((64, 64), 100, np.uint8)
    case = Case(
        "flat",
        _save(tmp_path / "i.png", image),
        _save(tmp_path / "m.png", disc.astype(np.uint8) * 255),
        0,
        "g",
    )
    cfg = _config(params=str(_shape_firstorder_params(tmp_path)))
    cfg.preprocess.normalization = "none"  # min-max would map a flat crop to mid-grey
    f = extract_radiomics([case], cfg, tmp_path / "cache", progress=False).features.loc["flat"]
    assert f["original_firstorder_Mean"] == 100.0
    assert f["original_firstorder_Median"] == 100.0
    assert f["original_firstorder_Variance"] == 0.0
    assert f["original_firstorder_Range"] == 0.0
    assert f["original_firstorder_Entropy"] == pytest.approx(0.0, abs=1e-12)
    assert f["original_firstorder_Uniformity"] == pytest.approx(1.0, abs=1e-12)


def test_augmented_copies_follow_their_operations(baseline, augmentations):
    result, _ = baseline
    f = result.features
    copies = list(augmentations["case_id"])
    assert list(f.index) == ["case0", "case1", "case2", "case3", *copies]
    ops = dict(zip(augmentations["case_id"], augmentations["ops"], strict=True))
    src = f.loc["case0"]
    for cid in copies:
        copy = f.loc[cid]
        # A flip moves pixels but keeps the ROI's shape and grey-level histogram.
        for name in ("PixelSurface", "Perimeter", "MeshSurface", "MajorAxisLength"):
            col = f"original_shape2D_{name}"
            assert copy[col] == pytest.approx(src[col], rel=1e-9), (cid, col)
        var = "original_firstorder_Variance"
        if "noise" in ops[cid]:
            assert copy[var] != pytest.approx(src[var], rel=1e-3)
        else:
            assert copy[var] == pytest.approx(src[var], rel=1e-9)
            assert copy["original_firstorder_Mean"] == pytest.approx(
                src["original_firstorder_Mean"], rel=1e-9
            )
    diag = result.diagnostics
    assert (diag.loc[copies, "source_case_id"] == "case0").all()
    assert list(diag.loc[copies, "augmentation"]) == list(augmentations["ops"])
    assert diag.loc[copies, "cache_key"].nunique() == len(copies)


def test_cache_second_run_computes_nothing_and_partial_cache_recomputes_only_missing(
    baseline, cohort, augmentations, monkeypatch
):
    first, cache = baseline
    files = sorted(cache.glob("*.json"))
    assert len(files) == len(first.features)  # one small file per case / copy
    mtimes = {p: p.stat().st_mtime_ns for p in files}

    def forbidden(task):
        raise AssertionError(f"computed {task.key} although it was cached")

    monkeypatch.setattr(extract_mod, "_run_task", forbidden)
    cfg = _config()
    again = extract_radiomics(cohort, cfg, cache, augmentations=augmentations, progress=False)
    assert (again.n_computed, again.n_cached) == (0, len(files))
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*.json")} == mtimes
    assert again.diagnostics["from_cache"].all()
    pd.testing.assert_frame_equal(again.features, first.features, check_exact=True)

    # Delete two entries and corrupt a third: exactly those three are recomputed, in this
    # process, and the table is bit-identical to the one the worker processes produced.
    computed: list[str] = []

    def counting(task):
        computed.append(task.key)
        return run_task(task)

    monkeypatch.setattr(extract_mod, "_run_task", counting)
    keys = first.diagnostics["cache_key"]
    gone = [keys["case1"], keys[augmentations["case_id"].iloc[3]]]
    for key in gone:
        (cache / f"{key}.json").unlink()
    (cache / f"{keys['case2']}.json").write_text('{"format": "radfusion-radiomics-case/1", "ke')
    resumed = extract_radiomics(cohort, cfg, cache, augmentations=augmentations, progress=False)
    assert sorted(computed) == sorted([*gone, keys["case2"]])
    assert resumed.n_computed == 3
    np.testing.assert_array_equal(
        resumed.features.to_numpy().view(np.int64), first.features.to_numpy().view(np.int64)
    )
    pd.testing.assert_frame_equal(resumed.features, first.features, check_exact=True)


def test_run_killed_midway_resumes_to_identical_table(cohort, tmp_path):
    """kill -9 during extraction leaves only complete cache files; the rerun fills the gaps."""
    cfg = _config()
    cfg.preprocess.size = 128  # ~0.5 s per case: a comfortable window to kill in
    cases = [_make_case(tmp_path, f"k{i}", seed=10 + i) for i in range(8)]
    cache = tmp_path / "cache"
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from radfusion.config import StudyConfig
        from radfusion.data import Case
        from radfusion.radiomics import extract_radiomics
        cfg = StudyConfig.model_validate_json({cfg.model_dump_json()!r})
        cases = [Case(f"k{{i}}", Path({str(tmp_path)!r}) / f"k{{i}}_img.png",
                      Path({str(tmp_path)!r}) / f"k{{i}}_mask.png", 0, "g") for i in range(8)]
        extract_radiomics(cases, cfg, Path({str(cache)!r}), n_jobs=1, progress=False)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while len(list(cache.glob("*.json"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    done = list(cache.glob("*.json"))
    assert 2 <= len(done) < len(cases)
    for path in done:  # every visible file is complete
        assert json.loads(path.read_text())["feature_names"]
    resumed = extract_radiomics(cases, cfg, cache, progress=False)
    assert resumed.n_cached == len(done)
    assert resumed.n_computed == len(cases) - len(done)
    fresh = extract_radiomics(cases, cfg, tmp_path / "fresh", progress=False)
    pd.testing.assert_frame_equal(resumed.features, fresh.features, check_exact=True)


def test_failing_cases_are_reported_and_others_finish(cohort, tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    empty_mask = _save(tmp_path / "empty.png", np.zeros((96, 96), np.uint8))
    cases = [
        cohort[0],
        Case("broken", corrupt, cohort[1].mask, 0, "g"),
        Case("no_roi", cohort[2].image, empty_mask, 0, "g"),
        Case("missing", tmp_path / "nope.png", cohort[1].mask, 0, "g"),
        cohort[3],
    ]
    cache = tmp_path / "cache"
    with pytest.raises(RadiomicsExtractionError) as info:
        extract_radiomics(cases, _config(), cache, progress=False)
    err = info.value
    assert isinstance(err, RadfusionError)
    assert [cid for cid, _ in err.failures] == ["broken", "no_roi", "missing"]
    message = str(err)
    assert "3 of 5" in message
    assert "broken: InputError" in message and "corrupt.png" in message
    assert "no_roi: InputError" in message and "ROI mask is empty" in message
    assert "missing: InputError" in message and "nope.png" in message
    assert list(err.result.features.index) == ["case0", "case3"]
    assert len(list(cache.glob("*.json"))) == 2  # the good cases finished and were cached

    result = extract_radiomics(cases, _config(), cache, allow_failures=True, progress=False)
    assert list(result.features.index) == ["case0", "case3"]
    assert result.failures == err.failures
    # Failures are retried, not cached (the missing file is not even hashed).
    assert result.n_cached == 2 and result.n_computed == 2


def test_second_reader_mask(cohort, tmp_path):
    cases = [*cohort[:2], _make_case(tmp_path, "single_reader", seed=9, reader2=False)]
    cfg = _config(params=str(_shape_firstorder_params(tmp_path)))
    r1 = extract_radiomics(cases[:2], cfg, tmp_path / "cache", progress=False)
    r2 = extract_radiomics(
        cases, cfg, tmp_path / "cache", reader="mask_reader2", allow_failures=True, progress=False
    )
    assert r2.failures == [
        ("single_reader", "InputError: no mask_reader2 (second delineation) for this case")
    ]
    assert list(r2.diagnostics["mask_path"]) == [str(c.mask_reader2) for c in cohort[:2]]
    assert r2.n_computed == 2  # a different delineation is a different cache entry
    # Reader 2 drew each ellipse 2 pixels wider: a larger ROI in the original image.
    assert (r2.diagnostics["roi_pixels"] > r1.diagnostics["roi_pixels"]).all()
    with pytest.raises(ValueError, match="reader"):
        extract_radiomics(cases, cfg, tmp_path / "cache", reader="reader3", progress=False)


def test_custom_parameter_file(cohort, tmp_path):
    params = tmp_path / "mine.yaml"
    params.write_text(
        "setting: {label: 1, binWidth: 10}\n"
        "imageType: {Original: {}}\n"
        "featureClass: {firstorder: }\n"
    )
    config_file = tmp_path / "study.yaml"
    config_file.write_text(f"preprocess: {{size: {SIZE}}}\nradiomics: {{params: mine.yaml}}\n")
    cfg = StudyConfig.from_yaml(config_file)  # relative to the config file
    result = extract_radiomics(cohort[:2], cfg, tmp_path / "cache", n_jobs=1, progress=False)
    assert result.features.shape == (2, 18)
    assert all(c.startswith("original_firstorder_") for c in result.features.columns)
    assert result.provenance["params_file"] == str(params.resolve())
    assert result.provenance["params"]["setting"]["binWidth"] == 10
    # Editing the parameter file invalidates the cache: every case is computed again.
    params.write_text(params.read_text().replace("binWidth: 10", "binWidth: 20"))
    again = extract_radiomics(cohort[:2], cfg, tmp_path / "cache", n_jobs=1, progress=False)
    assert again.n_computed == 2
    assert again.features.shape == (2, 18)

    params.write_text("featureClass: {no_such_class: }\n")
    with pytest.raises(ConfigError, match="PyRadiomics rejected"):
        extract_radiomics(cohort[:1], cfg, tmp_path / "cache", progress=False)
    with pytest.raises(ConfigError, match="not found"):
        extract_radiomics(cohort[:1], _config(params=str(tmp_path / "nope.yaml")), tmp_path)


def test_write_feature_table_round_trip(baseline, tmp_path):
    result = dataclasses.replace(baseline[0], failures=[("x", "InputError: broken")])
    paths = write_feature_table(result, tmp_path / "out" / "radiomics.parquet")
    table = read_feature_table(paths["features"])
    pd.testing.assert_frame_equal(table, result.features, check_exact=True)
    diag = pd.read_parquet(paths["diagnostics"])
    assert list(diag.index) == list(result.features.index)
    assert diag["cache_key"].equals(result.diagnostics["cache_key"])
    prov = json.loads(paths["provenance"].read_text())
    assert prov["failures"] == [{"case_id": "x", "error": "InputError: broken"}]
    assert prov["n_features"] == 567 and prov["features"] == list(result.features.columns)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "radiomics.diagnostics.parquet",
        "radiomics.parquet",
        "radiomics.provenance.json",
    ]


def test_dask_cluster_gives_identical_features(
    baseline, cohort, augmentations, tmp_path, monkeypatch
):
    distributed = pytest.importorskip("dask.distributed")
    first, _ = baseline

    def not_here(task):
        raise AssertionError("a case ran in the test process, not on the dask cluster")

    monkeypatch.setattr(extract_mod, "_run_task", not_here)  # n_jobs=1 would run locally
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=40,
    ) as cluster:
        cfg = _config(dask_scheduler=cluster.scheduler_address)
        result = extract_radiomics(
            cohort, cfg, tmp_path / "cache", augmentations=augmentations, progress=False
        )
    assert result.n_computed == len(first.features)
    pd.testing.assert_frame_equal(result.features, first.features, check_exact=True)


def test_force2d_is_refused_for_a_study_and_kept_for_a_bundle_trained_with_it(cohort, tmp_path):
    """force2D on radfusion's 2D crops gives one-directional texture (tests/test_ibsi.py):
    a study refuses it; scoring with a bundle trained that way must reproduce its features."""
    params = tmp_path / "old.yaml"
    params.write_text(
        "setting: {label: 1, binWidth: 10, force2D: true}\n"
        "imageType: {Original: {}}\n"
        "featureClass: {glszm: , glrlm: }\n"
    )
    config_file = tmp_path / "study.yaml"
    config_file.write_text(f"preprocess: {{size: {SIZE}}}\nradiomics: {{params: old.yaml}}\n")
    cfg = StudyConfig.from_yaml(config_file)
    with pytest.raises(ConfigError, match="force2D"):
        extract_radiomics(cohort[:1], cfg, tmp_path / "cache", n_jobs=1, progress=False)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    old = extract_radiomics(
        cohort[:1], cfg, tmp_path / "cache", n_jobs=1, progress=False, allow_force2d=True
    ).features.iloc[0]
    # one axis only: every zone is a run along it, so the GLSZM equals the GLRLM
    assert old["original_glszm_ZonePercentage"] == pytest.approx(
        old["original_glrlm_RunPercentage"]
    )
    params.write_text(params.read_text().replace(", force2D: true", ""))
    new = extract_radiomics(
        cohort[:1], cfg, tmp_path / "cache", n_jobs=1, progress=False
    ).features.iloc[0]
    assert new["original_glszm_ZonePercentage"] < new["original_glrlm_RunPercentage"]
