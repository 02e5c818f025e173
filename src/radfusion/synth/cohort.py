"""Writing a synthetic cohort: the patients, their images and masks, the manifest and the
clinical sheet (the manifest's patient columns).

Each image is rendered by :mod:`radfusion.synth.simulator`, whose docstring says
what is simulated and how ``difficulty`` moves the classes apart.

Cohort
    ``n`` images; a fraction of patients (``second_image_fraction``) have a
    second view of the same lesion (new probe position, depth setting, tilt,
    speckle and delineations; same label, patient and centre). Prevalence is
    counted over images: ``round(prevalence * n)`` images are APT/PC, and when
    ``n >= 20`` and ``0 < prevalence < 1`` at least 2 images of each class
    exist (so stratified splits and AUCs are defined). Patients are spread
    over the centres stratified by label, the first centre the largest (about
    60/40 for two, like the paper's two hospitals). Each centre has its own
    scanner profile (gain, dynamic range, grey map, speckle grain, noise,
    speckle reduction, field of view); H1-H3 are fixed, further ones are drawn
    from a fixed seed, so a centre looks the same in every cohort.

Clinical columns (per patient; Table 1 of the paper, overall)
    age 54.2 +- 13.7 years, ~24% male, iPTH median ~18 pmol/L (IQR ~13-26;
    paper 18.5, 10.9-23.6), calcium median ~2.7 mmol/L (IQR ~2.5-3.0),
    phosphate median ~0.55 mmol/L (IQR ~0.35-0.85). A latent disease severity
    links them (calcium and iPTH rise together, phosphate falls); APT/PC
    patients have higher severity and are more often men, with overlap.

Determinism
    Every patient and image draws from its own ``numpy.random.SeedSequence``
    child of ``seed``, so the files are byte-identical for a given seed and
    arguments, whatever ``n_jobs``.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from radfusion.errors import ConfigError
from radfusion.layout import SYNTH_PARAMS_NAME
from radfusion.synth.simulator import (
    ScannerProfile,
    _Lesion,
    _mix,
    _render_view,
    _sample_lesion,
    scanner_profile,
)
from radfusion.utils import atomic_path, atomic_write_json

__all__ = ["MANIFEST_COLUMNS", "class_counts", "generate_cohort"]

MANIFEST_COLUMNS = (
    "case_id",
    "image",
    "mask",
    "mask_reader2",
    "label",
    "patient_id",
    "center",
    "age",
    "sex",
    "calcium",
    "phosphate",
    "ipth",
)
SUBDIRS = ("images", "masks", "masks_reader2")
MANIFEST_NAME = "manifest.csv"
PARAMS_NAME = SYNTH_PARAMS_NAME


# --------------------------------------------------------------------------- patients
@dataclass
class _Patient:
    patient_id: str
    label: int
    center: int
    n_images: int
    mirror: bool  # left-side lesion: the view is mirrored
    age: int
    sex: str
    calcium: float
    phosphate: float
    ipth: float


def _sample_clinical(rng: np.random.Generator, label: int, sep: float) -> dict:
    """Age, sex and serum values of one patient (paper Table 1, with class shifts)."""
    age = round(float(np.clip(rng.normal(54.2, 13.7), 18, 90)))
    sex = "M" if rng.random() < _mix(0.225, 0.45, label, sep) else "F"
    severity = rng.normal() + _mix(0.0, 1.3, label, sep)
    e = rng.normal(size=3)
    ipth = math.exp(math.log(17.8) + 0.52 * (0.75 * severity + 0.66 * e[0]))
    calcium = 2.7 + 0.34 * (0.65 * severity + 0.76 * e[1]) + 0.04 * severity**2
    phosphate = math.exp(math.log(0.55) + 0.65 * (-0.45 * severity + 0.89 * e[2]))
    return {
        "age": age,
        "sex": sex,
        "ipth": round(float(np.clip(ipth, 2.0, 400.0)), 1),
        "calcium": round(float(np.clip(calcium, 2.05, 4.5)), 2),
        "phosphate": round(float(np.clip(phosphate, 0.12, 1.8)), 2),
    }


# --------------------------------------------------------------------------- cohort layout
def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def class_counts(n: int, prevalence: float) -> tuple[int, int]:
    """Number of PA and APT/PC images in a cohort of ``n`` images.

    ``round(prevalence * n)`` APT/PC images (halves round up); when ``n >= 20``
    and ``0 < prevalence < 1``, at least 2 images of each class.

    Returns
    -------
    (int, int)
        ``(n_pa, n_apt_pc)``.
    """
    n_pos = _round_half_up(prevalence * n)
    if n >= 20 and 0.0 < prevalence < 1.0:
        n_pos = min(max(n_pos, 2), n - 2)
    return n - n_pos, n_pos


def _largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    quota = total * weights / weights.sum()
    counts = np.floor(quota).astype(int)
    rest = total - counts.sum()
    counts[np.argsort(-(quota - counts), kind="stable")[:rest]] += 1
    return counts


def _plan_patients(
    rng: np.random.Generator, n: int, prevalence: float, fraction: float, n_centers: int
) -> list[tuple[int, int, int]]:
    """(label, n_images, centre) of every patient, in cohort order."""
    center_w = 0.65 ** np.arange(n_centers)
    plan: list[tuple[int, int, int]] = []
    for label, m in enumerate(class_counts(n, prevalence)):
        if m == 0:
            continue
        twice = min(_round_half_up(m * fraction / (1.0 + fraction)), m // 2)
        n_pat = m - twice
        n_img = np.ones(n_pat, dtype=int)
        n_img[rng.choice(n_pat, size=twice, replace=False)] = 2
        centers = np.repeat(np.arange(n_centers), _largest_remainder(n_pat, center_w))
        rng.shuffle(centers)
        plan += [(label, int(k), int(c)) for k, c in zip(n_img, centers, strict=True)]
    order = rng.permutation(len(plan))
    return [plan[i] for i in order]


# --------------------------------------------------------------------------- writing
def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)  # fast; images stay ~65 kB
    return buf.getvalue()


def _write_case(
    out: Path,
    case_ids: list[str],
    lesion: _Lesion,
    profile: ScannerProfile,
    shape: tuple[int, int],
    mirror: bool,
    seeds: list[np.random.SeedSequence],
    reader2: list[bool],
) -> None:
    """Render and write every view of one patient (reader 2's ROI where ``reader2``)."""
    for case_id, ss, second in zip(case_ids, seeds, reader2, strict=True):
        # reader 2's outline is always drawn, so that the random streams, hence every
        # image, do not depend on which views were delineated twice
        view = _render_view(lesion, profile, shape, mirror, np.random.default_rng(ss))
        name = f"{case_id}.png"
        (out / "images" / name).write_bytes(_png_bytes(view.image))
        (out / "masks" / name).write_bytes(_png_bytes(view.mask.astype(np.uint8) * 255))
        if second:
            (out / "masks_reader2" / name).write_bytes(
                _png_bytes(view.mask_reader2.astype(np.uint8) * 255)
            )


def _check_args(
    n, seed, prevalence, difficulty, n_centers, image_shape, fraction, n_jobs, reader2_fraction
):
    if int(n) != n or n < 1:
        raise ConfigError(f"n must be a positive integer, got {n!r}")
    if int(seed) != seed or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if not 0.0 <= prevalence <= 1.0:
        raise ConfigError(f"prevalence must be in [0, 1], got {prevalence!r}")
    if not 0.0 <= difficulty <= 1.0:
        raise ConfigError(f"difficulty must be in [0, 1], got {difficulty!r}")
    if int(n_centers) != n_centers or n_centers < 1:
        raise ConfigError(f"n_centers must be a positive integer, got {n_centers!r}")
    if len(image_shape) != 2 or min(image_shape) < 64:
        raise ConfigError(f"image_shape must be (height, width), each >= 64, got {image_shape!r}")
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"second_image_fraction must be in [0, 1), got {fraction!r}")
    if not 0.0 <= reader2_fraction <= 1.0:
        raise ConfigError(f"reader2_fraction must be in [0, 1], got {reader2_fraction!r}")
    if int(n_jobs) != n_jobs or n_jobs == 0:
        raise ConfigError(f"n_jobs must be a non-zero integer (-1: all cores), got {n_jobs!r}")


def generate_cohort(
    out_dir: str | Path,
    n: int = 300,
    seed: int = 0,
    prevalence: float = 0.066,
    difficulty: float = 0.5,
    n_centers: int = 2,
    image_shape: tuple[int, int] = (360, 480),
    second_image_fraction: float = 0.15,
    n_jobs: int = 1,
    overwrite: bool = False,
    scanner_effect: float = 0.0,
    reader2_fraction: float = 1.0,
) -> Path:
    """Write a synthetic parathyroid ultrasound cohort and its manifest.

    Writes ``images/``, ``masks/`` and ``masks_reader2/`` (8-bit PNG; masks
    0/255, one connected lesion each), ``synth.json`` (the arguments and
    counts) and, last and atomically, ``manifest.csv`` with the columns
    ``case_id, image, mask, mask_reader2, label, patient_id, center, age,
    sex, calcium, phosphate, ipth`` (paths relative to ``out_dir``; label 0 =
    parathyroid adenoma, 1 = APT/PC; sex ``"F"``/``"M"``; centres ``"H1"``...).
    An interrupted run leaves no manifest. See :mod:`radfusion.synth.simulator`
    for what is simulated and how.

    Parameters
    ----------
    out_dir : str or Path
        Output folder (created).
    n : int
        Number of images (rows of the manifest).
    seed : int
        Random seed; the same seed and arguments give byte-identical files.
    prevalence : float
        Fraction of APT/PC images, in [0, 1] (paper: 6.6%). ``round(prevalence
        * n)`` images, at least 2 of each class when ``n >= 20`` and the
        prevalence is strictly between 0 and 1.
    difficulty : float
        In [0, 1]: 0 = classes easily separable, 1 = nearly indistinguishable.
        It scales every class difference by ``1 - 0.9 * difficulty``
        (:mod:`radfusion.synth.simulator`, Difficulty).
    n_centers : int
        Number of centres ``H1..HK``, each with its own scanner profile.
    image_shape : (int, int)
        ``(height, width)`` of every image, in pixels. The field spans the
        scan depth (30-60 mm, chosen per image so the lesion fits).
    second_image_fraction : float
        Fraction of patients with a second view of the same lesion, in [0, 1).
    n_jobs : int
        Worker processes (joblib); -1 for all cores. Output does not depend on it.
    overwrite : bool
        Replace a cohort already in ``out_dir``. Otherwise a folder that holds any
        file the generator would write (manifest, ``synth.json``, case images or masks)
        is refused.
    scanner_effect : float
        Strength (>= 0) of the extra per-centre scanner differences in gain, speckle
        grain and resolution (:func:`scanner_profile`); 0 keeps the built-in
        profiles, ~1 makes centre effects strong enough that harmonisation matters.
    reader2_fraction : float
        Fraction of the images, drawn at random, that a second reader also outlined
        (``masks_reader2/``; the manifest's ``mask_reader2`` is empty for the others),
        in [0, 1]. The paper re-annotated 100 random images for its ICC analysis. The
        images and reader 1's ROIs do not depend on it.

    Returns
    -------
    Path
        The manifest path, ``out_dir / "manifest.csv"``.

    Raises
    ------
    ConfigError
        An argument out of range, ``out_dir`` is a file, or it holds files the
        generator would write and ``overwrite`` is False.

    Notes
    -----
    About 30-50 ms per 360 x 480 image on one CPU core (rendering plus three
    PNGs), so 300 images take ~10-15 s; ``n_jobs`` spreads patients over
    processes.

    Examples
    --------
    >>> manifest = generate_cohort("cohort", n=300, seed=0)  # doctest: +SKIP
    >>> load_cohort(manifest)  # radfusion.data.load_cohort  # doctest: +SKIP
    """
    _check_args(
        n,
        seed,
        prevalence,
        difficulty,
        n_centers,
        image_shape,
        second_image_fraction,
        n_jobs,
        reader2_fraction,
    )
    n, n_centers = int(n), int(n_centers)
    shape = (int(image_shape[0]), int(image_shape[1]))
    out = Path(out_dir)
    manifest = out / MANIFEST_NAME
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; give a folder to write the cohort into")
    clashes = [p for p in (manifest, out / PARAMS_NAME) if p.exists()]
    clashes += [p for sub in SUBDIRS for p in sorted((out / sub).glob("case_*.png"))]
    if clashes and not overwrite:
        raise ConfigError(
            f"{out} already holds files the synthetic cohort would write (e.g. {clashes[0]}); "
            "choose another folder, or replace them with --overwrite (overwrite=True in Python)"
        )
    if manifest.exists():
        # First the manifest, so that a run interrupted from here on leaves none.
        manifest.unlink()
    for sub in SUBDIRS:
        (out / sub).mkdir(parents=True, exist_ok=True)
        if overwrite:
            for old in (out / sub).glob("case_*.png"):
                old.unlink()

    sep = 1.0 - 0.9 * float(difficulty)
    # Independent streams: (0,) the cohort plan, (1, i) patient i, (2, k) image k,
    # (3,) the images a second reader outlined.
    seed = int(seed)
    plan_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    plan = _plan_patients(plan_rng, n, prevalence, second_image_fraction, n_centers)
    if not scanner_effect >= 0:
        raise ConfigError(f"scanner_effect must be >= 0, got {scanner_effect!r}")
    profiles = [scanner_profile(k, float(scanner_effect)) for k in range(n_centers)]

    width = max(4, len(str(n)))
    patients: list[_Patient] = []
    lesions: list[_Lesion] = []
    for i, (label, n_img, center) in enumerate(plan):
        prng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, i)))
        lesions.append(_sample_lesion(prng, label, sep))
        clin = _sample_clinical(prng, label, sep)
        mirror = bool(prng.random() < 0.5)
        patients.append(_Patient(f"P{i + 1:0{width}d}", label, center, n_img, mirror, **clin))

    twice = np.zeros(n, dtype=bool)
    if reader2_fraction >= 1.0:
        twice[:] = True
    else:
        r2_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3,)))
        twice[r2_rng.choice(n, size=_round_half_up(reader2_fraction * n), replace=False)] = True
    rows: list[dict] = []
    jobs = []
    k = 0
    for p, lesion in zip(patients, lesions, strict=True):
        ids, seeds, second = [], [], []
        for _ in range(p.n_images):
            case_id = f"case_{k + 1:0{width}d}"
            ids.append(case_id)
            seeds.append(np.random.SeedSequence(seed, spawn_key=(2, k)))
            second.append(bool(twice[k]))
            rows.append(
                {
                    "case_id": case_id,
                    "image": f"images/{case_id}.png",
                    "mask": f"masks/{case_id}.png",
                    "mask_reader2": f"masks_reader2/{case_id}.png" if twice[k] else "",
                    "label": p.label,
                    "patient_id": p.patient_id,
                    "center": profiles[p.center].name,
                    "age": p.age,
                    "sex": p.sex,
                    "calcium": f"{p.calcium:.2f}",
                    "phosphate": f"{p.phosphate:.2f}",
                    "ipth": f"{p.ipth:.1f}",
                }
            )
            k += 1
        jobs.append((ids, lesion, profiles[p.center], p.mirror, seeds, second))

    if n_jobs == 1:
        for ids, lesion, profile, mirror, seeds, second in jobs:
            _write_case(out, ids, lesion, profile, shape, mirror, seeds, second)
    else:
        from joblib import Parallel, delayed

        Parallel(n_jobs=n_jobs)(
            delayed(_write_case)(out, ids, lesion, profile, shape, mirror, seeds, second)
            for ids, lesion, profile, mirror, seeds, second in jobs
        )

    n_pa, n_pc = class_counts(n, prevalence)
    atomic_write_json(
        out / PARAMS_NAME,
        {
            "generator": "radfusion.synth.generate_cohort",
            "n": n,
            "seed": seed,
            "prevalence": float(prevalence),
            "difficulty": float(difficulty),
            "separation": sep,
            "n_centers": n_centers,
            "scanner_effect": float(scanner_effect),
            "image_shape": list(shape),
            "second_image_fraction": float(second_image_fraction),
            "reader2_fraction": float(reader2_fraction),
            "n_reader2": int(twice.sum()),
            "n_images": {"PA": n_pa, "APT/PC": n_pc},
            "n_patients": len(patients),
            "scanner_profiles": [p.__dict__ for p in profiles],
        },
    )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(manifest) as tmp:
        tmp.write_text(buf.getvalue())
    return manifest
