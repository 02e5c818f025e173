"""The synthetic parathyroid ultrasound cohort: files, determinism and realism.

Every check reads the PNGs and the manifest back from disk, as a user would.
Images are kept small (192 x 256) so the whole file runs in well under a minute.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage, stats
from skimage.measure import regionprops
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from radfusion.data.readers import read_image, read_mask
from radfusion.errors import ConfigError
from radfusion.synth import MANIFEST_COLUMNS, class_counts, generate_cohort
from radfusion.synth import cohort as synth_cohort

SHAPE = (192, 256)


def _read(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "manifest.csv", dtype={"case_id": str, "patient_id": str})


def _digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file the generator wrote, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _roi_features(root: Path, table: pd.DataFrame) -> np.ndarray:
    """Simple ROI statistics: log area, mean and sd of intensity, perimeter^2/area, solidity."""
    rows = []
    for _, r in table.iterrows():
        image = read_image(root / r["image"])
        mask = read_mask(root / r["mask"])
        (props,) = regionprops(mask.astype(np.uint8))
        values = image[mask]
        rows.append(
            [
                math.log(props.area),
                values.mean(),
                values.std(),
                props.perimeter**2 / props.area,
                props.solidity,
            ]
        )
    return np.asarray(rows)


def _cv_auc(table: pd.DataFrame, X: np.ndarray) -> float:
    """Patient-grouped, stratified 5-fold cross-validated AUC of a logistic regression."""
    cv = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression())
    p = cross_val_predict(
        model, X, table["label"], groups=table["patient_id"], cv=cv, method="predict_proba"
    )[:, 1]
    return float(roc_auc_score(table["label"], p))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, pd.DataFrame, np.ndarray]:
    """n=400 images at prevalence 0.3 (about 120 APT/PC): enough for stable AUCs."""
    root = tmp_path_factory.mktemp("synth400")
    generate_cohort(root, n=400, seed=11, prevalence=0.3, image_shape=SHAPE)
    table = _read(root)
    return root, table, _roi_features(root, table)


# --------------------------------------------------------------------------- files
def test_manifest_files_and_masks(tmp_path):
    manifest = generate_cohort(tmp_path, n=24, seed=1, image_shape=(128, 160), n_centers=3)
    assert manifest == tmp_path / "manifest.csv"
    table = _read(tmp_path)
    assert tuple(table.columns) == MANIFEST_COLUMNS
    assert len(table) == 24 and table["case_id"].is_unique
    assert set(table["label"]) <= {0, 1}
    assert set(table["sex"]) <= {"F", "M"}
    assert set(table["center"]) == {"H1", "H2", "H3"}
    for col, lo, hi in (("age", 18, 90), ("calcium", 2.0, 4.5), ("phosphate", 0.1, 1.8)):
        assert table[col].between(lo, hi).all(), col
    assert (table["ipth"] > 0).all()
    for _, r in table.iterrows():
        for col, folder in (
            ("image", "images"),
            ("mask", "masks"),
            ("mask_reader2", "masks_reader2"),
        ):
            assert r[col] == f"{folder}/{r['case_id']}.png"  # relative to the manifest
        with Image.open(tmp_path / r["image"]) as im:
            assert im.mode == "L" and im.size == (160, 128)
            image = np.asarray(im)
        assert image.std() > 10  # a real picture, not a blank
        for col in ("mask", "mask_reader2"):
            with Image.open(tmp_path / r[col]) as im:
                assert im.mode == "L" and im.size == (160, 128)
                m = np.asarray(im)
            assert set(np.unique(m)) == {0, 255}
            _, n_parts = ndimage.label(m > 0)
            assert n_parts == 1, (r["case_id"], col)
            # The lesion lies inside the field of view, not on the image border.
            assert not (m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())
            # ... and it is hypoechoic: darker inside than in a ring around it.
            inside = m > 0
            ring = ndimage.binary_dilation(inside, iterations=6) & ~inside
            if col == "mask":
                assert image[inside].mean() < image[ring].mean(), r["case_id"]
    params = json.loads((tmp_path / "synth.json").read_text())
    assert params["n"] == 24 and params["seed"] == 1


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kwargs = dict(n=8, prevalence=0.3, image_shape=(96, 128))
    a = _digest(generate_cohort(tmp_path / "a", seed=5, **kwargs).parent)
    b = _digest(generate_cohort(tmp_path / "b", seed=5, n_jobs=2, **kwargs).parent)
    c = _digest(generate_cohort(tmp_path / "c", seed=6, **kwargs).parent)
    assert a == b  # byte-identical, also when rendered by two worker processes
    assert a.keys() == c.keys()
    images = [k for k in a if k.startswith("images/")]
    assert len(images) == 8
    assert all(a[k] != c[k] for k in images)
    assert a["manifest.csv"] != c["manifest.csv"]


def test_class_counts_rounding_and_minimum():
    # round(prevalence * n), halves up ...
    assert class_counts(300, 0.066) == (300 - round(0.066 * 300), round(0.066 * 300))
    assert class_counts(10, 0.05) == (9, 1)
    assert class_counts(100, 0.0) == (100, 0)
    assert class_counts(100, 1.0) == (0, 100)
    # ... but at least 2 of each class once n >= 20
    assert class_counts(20, 0.01) == (18, 2)
    assert class_counts(30, 0.99) == (2, 28)
    assert class_counts(19, 0.01) == (19, 0)


def test_generated_prevalence(tmp_path, cohort):
    _, table, _ = cohort
    assert (table["label"] == 1).sum() == round(0.3 * 400)
    small = _read(generate_cohort(tmp_path, n=20, seed=2, image_shape=(96, 128)).parent)
    assert (small["label"] == 1).sum() == 2  # 6.6% of 20 is 1.3, raised to the minimum of 2


def test_refuses_existing_cohort_and_overwrites_cleanly(tmp_path):
    generate_cohort(tmp_path, n=6, seed=0, image_shape=(96, 128))
    with pytest.raises(ConfigError, match="already holds files the synthetic cohort would write"):
        generate_cohort(tmp_path, n=6, seed=0, image_shape=(96, 128))
    generate_cohort(tmp_path, n=3, seed=0, image_shape=(96, 128), overwrite=True)
    assert len(_read(tmp_path)) == 3
    assert len(list((tmp_path / "images").glob("*.png"))) == 3  # no stale images left


def test_interrupted_run_leaves_no_manifest(tmp_path, monkeypatch):
    generate_cohort(tmp_path, n=4, seed=0, image_shape=(96, 128))
    calls = []

    def crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(synth_cohort, "_write_case", crash)
    with pytest.raises(KeyboardInterrupt):
        generate_cohort(tmp_path, n=4, seed=1, image_shape=(96, 128), overwrite=True)
    assert not (tmp_path / "manifest.csv").exists()
    assert not list(tmp_path.glob(".manifest.csv*"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 0},
        {"seed": -1},
        {"n_jobs": 0},
        {"prevalence": 1.5},
        {"difficulty": -0.1},
        {"n_centers": 0},
        {"image_shape": (32, 32)},
        {"second_image_fraction": 1.0},
    ],
)
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        generate_cohort(tmp_path, **{"n": 4, **kwargs})
    assert not (tmp_path / "manifest.csv").exists()


# --------------------------------------------------------------------------- realism
def test_reader_masks_differ_at_the_boundary_only(cohort):
    root, table, _ = cohort
    dice = []
    for _, r in table.iterrows():
        a, b = read_mask(root / r["mask"]), read_mask(root / r["mask_reader2"])
        dice.append(2 * (a & b).sum() / (a.sum() + b.sum()))
        # Re-annotation moves the border by a few pixels, not the lesion.
        ca, cb = ndimage.center_of_mass(a), ndimage.center_of_mass(b)
        assert math.dist(ca, cb) < 4.0
    dice = np.asarray(dice)
    assert (dice < 1.0).all()  # every lesion drawn differently
    assert dice.min() > 0.7
    assert 0.85 <= np.median(dice) <= 0.96


def test_second_views_share_patient_label_and_centre(cohort):
    root, table, _ = cohort
    per_patient = table.groupby("patient_id")
    n_views = per_patient.size()
    twice = n_views[n_views == 2].index
    assert set(n_views) == {1, 2}
    # 15% of patients have a second view.
    assert 0.10 <= len(twice) / len(n_views) <= 0.20
    constant = ["label", "center", "age", "sex", "calcium", "phosphate", "ipth"]
    assert (per_patient[constant].nunique() == 1).all().all()
    for pid in twice[:5]:
        a, b = table[table["patient_id"] == pid]["image"]
        assert not np.array_equal(read_image(root / a), read_image(root / b))


def test_centres_have_different_scanner_appearance(cohort):
    root, table, _ = cohort
    fov_mean, fov_sd = [], []
    for path in table["image"]:
        image = read_image(root / path)
        values = image[image > 0]  # inside the field of view
        fov_mean.append(values.mean())
        fov_sd.append(values.std())
    fov_mean, fov_sd = np.asarray(fov_mean), np.asarray(fov_sd)
    h1, h2 = (table["center"] == "H1").to_numpy(), (table["center"] == "H2").to_numpy()
    assert h1.sum() > h2.sum() > 100  # H1 the larger centre, as in the paper
    assert stats.mannwhitneyu(fov_mean[h1], fov_mean[h2]).pvalue < 1e-6
    assert stats.mannwhitneyu(fov_sd[h1], fov_sd[h2]).pvalue < 1e-6


def test_apt_pc_larger_and_clinically_shifted(cohort):
    _, table, X = cohort
    y = table["label"].to_numpy() == 1
    area = np.exp(X[:, 0])
    assert np.median(area[y]) > 1.2 * np.median(area[~y])
    assert stats.mannwhitneyu(area[y], area[~y], alternative="greater").pvalue < 1e-4
    # Overlap, as in reality: some adenomas are larger than the median carcinoma.
    assert (area[~y] > np.median(area[y])).mean() > 0.05

    patients = table.drop_duplicates("patient_id")
    pa, pc = patients[patients["label"] == 0], patients[patients["label"] == 1]
    assert abs(pa["age"].mean() - 54.2) < 4 and 9 < pa["age"].std() < 18
    assert 0.1 < (pa["sex"] == "M").mean() < 0.35
    assert 2.55 <= pa["calcium"].median() <= 2.85
    assert 12 <= pa["ipth"].median() <= 25
    assert 0.35 <= pa["phosphate"].median() <= 0.75
    for col, sign in (("calcium", 1), ("ipth", 1), ("phosphate", -1)):
        shift = sign * (pc[col].median() - pa[col].median())
        assert shift > 0, col
    assert stats.mannwhitneyu(pc["ipth"], pa["ipth"], alternative="greater").pvalue < 0.01


def test_roi_statistics_separate_classes_but_not_perfectly(cohort):
    _, table, X = cohort
    auc = _cv_auc(table, X)
    # At the default difficulty a linear model on 5 ROI statistics should do clearly
    # better than chance (>= 0.75; it reaches ~0.88-0.91 over seeds) but not separate
    # the classes (<= 0.97), so that texture-rich radiomics / deep features have
    # something to add. With ~120 positives the CV AUC's SE is ~0.02.
    assert 0.75 <= auc <= 0.97, auc


def test_difficulty_controls_separability(tmp_path):
    aucs = {}
    for difficulty in (0.0, 1.0):
        root = tmp_path / f"d{difficulty}"
        generate_cohort(
            root, n=160, seed=3, prevalence=0.3, difficulty=difficulty, image_shape=SHAPE
        )
        table = _read(root)
        aucs[difficulty] = _cv_auc(table, _roi_features(root, table))
    # difficulty 0: easily separable (0.93-0.97 over seeds); 1: near chance (0.48-0.59).
    assert aucs[0.0] > 0.85, aucs
    assert aucs[1.0] < 0.72, aucs
    assert aucs[0.0] - aucs[1.0] > 0.25, aucs


def test_scanner_effect_separates_centres_and_zero_changes_nothing(tmp_path):
    from radfusion.synth import scanner_profile

    assert scanner_profile(1, 0.0) == scanner_profile(1)
    strong = [scanner_profile(k, 1.0) for k in range(3)]
    assert all(s.name == f"H{k + 1}" for k, s in enumerate(strong))
    assert any(abs(s.gain_db - scanner_profile(k).gain_db) >= 4 for k, s in enumerate(strong))

    def centre_means(effect: float, name: str) -> dict[str, float]:
        m = generate_cohort(
            tmp_path / name,
            n=20,
            seed=2,
            n_centers=2,
            image_shape=(64, 80),
            scanner_effect=effect,
        )
        t = pd.read_csv(m)
        return {
            c: float(np.mean([np.asarray(Image.open(m.parent / p)).mean() for p in g["image"]]))
            for c, g in t.groupby("center")
        }

    base = generate_cohort(tmp_path / "a", n=20, seed=2, n_centers=2, image_shape=(64, 80))
    zero = generate_cohort(
        tmp_path / "b", n=20, seed=2, n_centers=2, image_shape=(64, 80), scanner_effect=0.0
    )
    assert base.read_bytes() == zero.read_bytes()
    assert (base.parent / "images" / "case_0001.png").read_bytes() == (
        zero.parent / "images" / "case_0001.png"
    ).read_bytes()
    # the same patients, rendered by exaggerated scanners: centre brightness moves
    none, strong = centre_means(0.0, "none"), centre_means(1.0, "strong")
    assert max(abs(strong[c] - none[c]) for c in none) > 5


def test_reader2_on_a_random_subset_leaves_every_image_unchanged(tmp_path):
    kwargs = dict(n=12, seed=3, prevalence=0.3, image_shape=(96, 128))
    full = _digest(generate_cohort(tmp_path / "full", **kwargs).parent)
    part_root = generate_cohort(tmp_path / "part", reader2_fraction=0.25, **kwargs).parent
    part = _digest(part_root)
    table = pd.read_csv(part_root / "manifest.csv", dtype=str, keep_default_na=False)
    twice = table[table["mask_reader2"] != ""]
    assert len(twice) == 3  # round(0.25 * 12) images, the others with an empty cell
    assert sorted(p for p in part if p.startswith("masks_reader2")) == sorted(twice["mask_reader2"])
    # images, reader 1's ROIs and the outlines reader 2 did draw are byte-identical
    for path, digest in part.items():
        if path not in ("manifest.csv", "synth.json"):
            assert full[path] == digest, path
    params = json.loads((part_root / "synth.json").read_text())
    assert params["reader2_fraction"] == 0.25 and params["n_reader2"] == 3
    from radfusion.data import load_cohort

    cohort = load_cohort(part_root / "manifest.csv")
    assert sum(c.mask_reader2 is not None for c in cohort.cases()) == 3
    with pytest.raises(ConfigError, match="reader2_fraction"):
        generate_cohort(tmp_path / "bad", reader2_fraction=1.5, **kwargs)
