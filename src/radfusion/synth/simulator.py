"""A synthetic parathyroid ultrasound cohort for the demo and the tests.

No public parathyroid ultrasound dataset exists, so radfusion ships a generator
of transverse neck ultrasound images, each with two reader delineations of a
parathyroid lesion and a patient sheet that mimics Table 1 of Liu et al.
(QIMS 2026). The images are *simulated*, not drawn: a tissue reflectivity map
(anatomy + lesion) is turned into an image the way a scanner forms one, so the
same physics gives speckle, shadowing and enhancement everywhere.

Image formation (per image)
    1. Anatomy in millimetres: skin, subcutaneous fat, strap and
       sternocleidomastoid muscles (striated), a thyroid lobe with its isthmus
       (homogeneous, medium-high echogenicity), the common carotid artery
       (anechoic lumen, bright wall), often the internal jugular vein, the
       trachea (bright air interface, ring-down, air shadow), the longus
       colli, fascial planes and the prevertebral bone line. The parathyroid
       lesion sits posterior to the thyroid lobe, indenting it; the scan depth
       (30-60 mm) is chosen per image so that the lesion fits. Left-side scans
       are mirrored.
    2. Speckle: complex Gaussian scatterers weighted by the reflectivity map
       and convolved with an anisotropic Gaussian point-spread function; the
       envelope is Rayleigh distributed, with a grain set by the scanner.
       Specular interfaces (capsules, fasciae, vessel walls, calcifications)
       are added as coherent bright lines.
    3. Attenuation: the cumulative attenuation along each beam (column) is
       applied, so that calcifications, air and bone cast acoustic shadows and
       fluid (vessels, cysts) gives posterior enhancement. A time-gain
       compensation curve (per-image random slider positions) undoes most,
       not all, of the depth loss, and electronic noise is added before it.
       The envelope is low-passed (detection plus the scanner's speckle
       reduction).
    4. Log compression to the scanner's dynamic range, gain and grey map
       (gamma), the field-of-view border (linear or trapezoid), 8 bits.

Lesion phenotypes
    Parathyroid adenoma (PA, label 0): oval, well circumscribed, homogeneous,
    markedly hypoechoic, often an echogenic capsule line. APT/PC (label 1):
    larger on average, rounder (taller), lobulated or irregular and less sharp
    margins, heterogeneous echotexture, and more often calcifications (bright
    foci with shadowing) and cystic (anechoic) areas. Every trait is drawn from
    a class-conditional distribution and the distributions overlap, so some
    adenomas are large or slightly heterogeneous and some carcinomas are small
    and oval, as in reality.

Difficulty
    ``difficulty`` in [0, 1] sets how far the APT/PC distributions are moved
    away from the PA ones: every class-dependent parameter (lesion size, aspect
    ratio, lobulation, margin irregularity and blur, heterogeneity, the
    probabilities of calcification, cystic change and capsule, and the shifts
    of calcium, iPTH, phosphate and sex) is set to
    ``PA value + separation * (APT/PC reference - PA value)`` with
    ``separation = 1 - 0.9 * difficulty``. A logistic regression on five ROI
    statistics (log area, mean and sd of intensity, perimeter^2/area,
    solidity; patient-grouped 5-fold CV, prevalence 0.3) reaches AUC ~0.98 at
    difficulty 0 (easily separable), ~0.86-0.92 at the default 0.5 (close to
    the paper's radiomics model, 0.905) and ~0.5 at 1, where a tenth of the
    difference remains (nearly indistinguishable). Within-class spread,
    anatomy and scanner effects do not depend on it.

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.special import expit

from radfusion.errors import ConfigError
from radfusion.utils import atomic_path, atomic_write_json

__all__ = [
    "MANIFEST_COLUMNS",
    "ScannerProfile",
    "class_counts",
    "generate_cohort",
    "scanner_profile",
]

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
PARAMS_NAME = "synth.json"

# Amplitude attenuation of soft tissue at ~10 MHz, round trip: ~1 dB/mm = 0.115 Np/mm.
TISSUE_ATTENUATION_NP_PER_MM = 0.115


# --------------------------------------------------------------------------- scanners
@dataclass(frozen=True)
class ScannerProfile:
    """How one centre's scanner renders tissue.

    Attributes
    ----------
    name : str
        Centre name, e.g. ``"H1"``.
    gain_db : float
        Overall receive gain added before log compression.
    dynamic_range_db : float
        Width of the log-compression window (smaller: more contrast).
    gamma : float
        Exponent of the grey map applied to the compressed image.
    psf_axial_mm, psf_lateral_mm : float
        Gaussian point-spread function sigmas, i.e. the speckle grain.
    noise : float
        Electronic noise, relative to the envelope of reflectivity-1 tissue.
    smoothing_px : float
        Sigma (pixels) of the scanner's speckle-reduction filter on the envelope.
    tgc_compensation : float
        Fraction of the tissue attenuation the time-gain compensation undoes.
    fov : {"linear", "trapezoid"}
        Field-of-view shape.
    fov_margin : float
        Blank border at each side, as a fraction of the image width.
    """

    name: str
    gain_db: float
    dynamic_range_db: float
    gamma: float
    psf_axial_mm: float
    psf_lateral_mm: float
    noise: float
    smoothing_px: float
    tgc_compensation: float
    fov: Literal["linear", "trapezoid"]
    fov_margin: float


_FIXED_PROFILES = (
    ScannerProfile("H1", 0.0, 60.0, 1.25, 0.085, 0.17, 0.003, 1.0, 0.82, "linear", 0.06),
    ScannerProfile("H2", -4.0, 48.0, 1.5, 0.13, 0.30, 0.008, 0.35, 0.76, "trapezoid", 0.02),
    ScannerProfile("H3", 0.5, 62.0, 1.2, 0.07, 0.14, 0.002, 1.3, 0.86, "linear", 0.1),
)


def scanner_profile(index: int, scanner_effect: float = 0.0) -> ScannerProfile:
    """Scanner profile of centre ``index`` (0-based; named ``H{index + 1}``).

    The first three are fixed; further ones are drawn from a fixed seed per
    index, so a centre renders the same way in every cohort.

    ``scanner_effect`` (>= 0) exaggerates the differences between centres: each
    centre gets a fixed direction (from a seed per index) in which its receive gain
    (up to +-8 dB per unit), speckle grain (point-spread function up to x/÷ e^0.5)
    and resolution (speckle-reduction blur, up to +2.4 px) move away from its
    profile, scaled by ``scanner_effect``. 0 (the default) leaves profiles as they
    are; 1 makes the centre effects dominate most intensity and texture features,
    so that harmonisation matters.
    """
    base = _base_profile(index)
    if scanner_effect <= 0:
        return base
    rng = np.random.default_rng(np.random.SeedSequence(104729, spawn_key=(index,)))
    gain, grain, blur = rng.choice([-1.0, 1.0], 3) * rng.uniform(0.5, 1.0, 3)
    s = float(scanner_effect)
    return replace(
        base,
        gain_db=base.gain_db + 8.0 * s * gain,
        psf_axial_mm=base.psf_axial_mm * math.exp(0.5 * s * grain),
        psf_lateral_mm=base.psf_lateral_mm * math.exp(0.5 * s * grain),
        smoothing_px=base.smoothing_px + 1.2 * s * (blur + 1.0),
    )


def _base_profile(index: int) -> ScannerProfile:
    if index < len(_FIXED_PROFILES):
        return _FIXED_PROFILES[index]
    rng = np.random.default_rng(np.random.SeedSequence(7919, spawn_key=(index,)))
    return ScannerProfile(
        name=f"H{index + 1}",
        gain_db=float(rng.uniform(-5, 4)),
        dynamic_range_db=float(rng.uniform(45, 68)),
        gamma=float(rng.uniform(1.05, 1.55)),
        psf_axial_mm=float(rng.uniform(0.065, 0.14)),
        psf_lateral_mm=float(rng.uniform(0.13, 0.32)),
        noise=float(rng.uniform(0.002, 0.01)),
        smoothing_px=float(rng.uniform(0.3, 1.1)),
        tgc_compensation=float(rng.uniform(0.74, 0.88)),
        fov="trapezoid" if rng.random() < 0.4 else "linear",
        fov_margin=float(rng.uniform(0.0, 0.1)),
    )


# --------------------------------------------------------------------------- phenotypes
@dataclass
class _Lesion:
    """One lesion, in its own normalised coordinates (unit ellipse ~ the lesion)."""

    width_mm: float  # long axis in the transverse plane
    aspect: float  # short / long axis
    tilt: float  # radians, long axis from horizontal
    harmonics: np.ndarray  # (K, 3): order k, cos and sin coefficients of the radius
    edge_blur_mm: float
    echo: float  # mean reflectivity (thyroid = 1)
    heterogeneity: float  # log-sd of the internal echo texture
    bumps: np.ndarray  # (M, 4): u, v, width, weight of the internal texture
    cysts: np.ndarray  # (C, 4): u, v, semi-axis u, semi-axis v
    calcs: np.ndarray  # (Q, 3): u, v, radius in mm
    capsule: float  # amplitude of the echogenic capsule line (0: none)


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


def _mix(pa: float, pc: float, label: int, sep: float) -> float:
    """The class-conditional parameter: PA value, moved towards APT/PC by ``sep``."""
    return pa + (label * sep) * (pc - pa)


def _radius_offset(harmonics: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Sum of ``c_k cos(k theta) + s_k sin(k theta)`` over the rows ``(k, c_k, s_k)``.

    ``e`` is ``exp(i theta)``: powers of it give every order without trigonometry.
    """
    coef = {int(k): (float(c), float(s)) for k, c, s in harmonics}
    out = np.zeros(e.shape, dtype=np.float32)
    power = np.ones_like(e)
    for k in range(1, max(coef) + 1):
        power = power * e
        if k in coef:
            out += coef[k][0] * power.real + coef[k][1] * power.imag
    return out


def _sample_lesion(rng: np.random.Generator, label: int, sep: float) -> _Lesion:
    width = float(np.clip(np.exp(rng.normal(math.log(_mix(10.5, 17.0, label, sep)), 0.33)), 5, 36))
    aspect = float(np.clip(rng.normal(_mix(0.55, 0.82, label, sep), 0.12), 0.35, 1.05))
    tilt = float(rng.normal(0.0, 0.2))

    # Lobulation: low orders of the radius; irregular margin: high orders.
    lob = math.exp(rng.normal(math.log(_mix(0.03, 0.14, label, sep)), 0.5))
    irr = math.exp(rng.normal(math.log(_mix(0.006, 0.03, label, sep)), 0.5))
    rows = []
    for orders, amp in ((range(2, 6), lob), (range(6, 16), irr)):
        ks = np.array(list(orders), dtype=float)
        w = rng.normal(size=(len(ks), 2)) / ks[:, None]
        w *= amp / math.sqrt((w**2).sum() / 2)
        rows.append(np.column_stack([ks, w]))
    harmonics = np.vstack(rows)
    # Keep the outline star-shaped and free of deep notches (one connected lesion).
    unit = np.exp(1j * np.linspace(0, 2 * np.pi, 720, endpoint=False)).astype(np.complex64)
    low = _radius_offset(harmonics, unit).min()
    if low < -0.4:
        harmonics[:, 1:] *= 0.4 / -low

    edge_blur = math.exp(rng.normal(math.log(_mix(0.05, 0.2, label, sep)), 0.5))
    echo = min(math.exp(rng.normal(math.log(_mix(0.11, 0.13, label, sep)), 0.2)), 0.16)
    het = min(math.exp(rng.normal(math.log(_mix(0.15, 0.55, label, sep)), 0.4)), 1.0)

    m = 24
    r = np.sqrt(rng.uniform(0, 1, m)) * 0.95
    a = rng.uniform(0, 2 * np.pi, m)
    bumps = np.column_stack(
        [r * np.cos(a), r * np.sin(a), rng.uniform(0.1, 0.3, m), rng.normal(size=m)]
    )

    cysts = np.zeros((0, 4))
    if rng.random() < _mix(0.08, 0.35, label, sep):
        c = int(rng.integers(1, 4))
        r = np.sqrt(rng.uniform(0, 1, c)) * 0.5
        a = rng.uniform(0, 2 * np.pi, c)
        cysts = np.column_stack(
            [r * np.cos(a), r * np.sin(a), rng.uniform(0.15, 0.4, c), rng.uniform(0.15, 0.4, c)]
        )
    calcs = np.zeros((0, 3))
    if rng.random() < _mix(0.04, 0.45, label, sep):
        q = int(rng.integers(1, 6))
        # Clustered foci of 0.3-0.8 mm radius (at most 15% of the short semi-axis).
        cu, cv = rng.uniform(-0.4, 0.4, 2)
        calcs = np.column_stack(
            [
                np.clip(cu + rng.normal(0, 0.2, q), -0.7, 0.7),
                np.clip(cv + rng.normal(0, 0.2, q), -0.6, 0.6),
                rng.uniform(0.3, 0.8, q),
            ]
        )
    capsule = float(rng.uniform(0.4, 1.0)) if rng.random() < _mix(0.5, 0.2, label, sep) else 0.0
    return _Lesion(
        width, aspect, tilt, harmonics, edge_blur, echo, het, bumps, cysts, calcs, capsule
    )


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


# --------------------------------------------------------------------------- rendering
def _upsample(g: np.ndarray, n_out: int, step: int, axis: int) -> np.ndarray:
    """Linear interpolation of ``g`` (spacing ``step`` pixels) onto ``n_out`` pixels."""
    if step == 1:
        return g[:n_out] if axis == 0 else g[:, :n_out]
    pos = np.arange(n_out) / step
    i0 = np.minimum(pos.astype(int), g.shape[axis] - 2)
    t = (pos - i0).astype(np.float32)
    if axis == 0:
        return g[i0] * (1 - t)[:, None] + g[i0 + 1] * t[:, None]
    return g[:, i0] * (1 - t) + g[:, i0 + 1] * t


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, int], sigma: tuple[float, float]
) -> np.ndarray:
    """Zero-mean, unit-sd Gaussian random field with correlation ``sigma`` (pixels).

    Drawn on a grid coarsened by up to sigma/2 per axis and interpolated
    linearly, so wide fields cost little.
    """
    f = [max(1, int(s // 2)) for s in sigma]
    small = (shape[0] // f[0] + 2, shape[1] // f[1] + 2)
    g = ndimage.gaussian_filter(
        rng.standard_normal(small, dtype=np.float32),
        (sigma[0] / f[0], sigma[1] / f[1]),
        mode="wrap",
    )
    g = _upsample(_upsample(g, shape[0], f[0], 0), shape[1], f[1], 1)
    return (g - g.mean()) / (g.std() + np.float32(1e-12))


def _ellipse(xx, zz, cx, cz, a, b, phi=0.0, polar=False):
    """Approximate signed distance (mm, negative inside) from the grid to an ellipse.

    The distance is measured along the ray from the centre, which is exact for
    a circle and close enough for the smooth outlines drawn here. With
    ``polar`` also returns ``rho`` (1 on the ellipse), ``exp(i theta)`` in the
    ellipse's normalised frame and the radial distance ``r``.
    """
    dx = xx - np.float32(cx)
    dz = zz - np.float32(cz)
    if phi:
        c, s = np.float32(math.cos(phi)), np.float32(math.sin(phi))
        dx, dz = dx * c + dz * s, dz * c - dx * s
    u = dx / np.float32(a)
    v = dz / np.float32(b)
    rho = np.sqrt(u * u + v * v) + np.float32(1e-6)
    r = np.sqrt(dx * dx + dz * dz)
    sd = r - r / rho
    if not polar:
        return sd
    e = (u + 1j * v).astype(np.complex64) / rho
    return sd, rho, e, r


def _verticality(xx, zz, cx, cz):
    """Squared cosine between the beam (vertical) and the radial direction.

    A specular interface echoes most where it faces the probe.
    """
    dx, dz = xx - np.float32(cx), zz - np.float32(cz)
    return dz * dz / (dx * dx + dz * dz + np.float32(1e-9))


def _line(sd, ppm, width_px=0.9):
    """A thin bright band along the zero level of a signed distance (mm)."""
    t = sd * np.float32(ppm / width_px)
    return np.exp(-t * t)


@dataclass
class _View:
    image: np.ndarray  # uint8
    mask: np.ndarray  # bool, reader 1
    mask_reader2: np.ndarray  # bool, reader 2


def _reader_mask(rng, rho, e, r, rad, bias_mm):
    """One reader's delineation: the lesion outline moved by a smooth random offset.

    The offset is a few low-order harmonics (a hand drifts slowly along a
    border) plus a global dilation / erosion: ~0.25 mm rms, a few pixels.
    """
    coef = np.column_stack([np.arange(1, 7), rng.normal(0.0, 0.1, size=(6, 2))])
    offset = bias_mm + rng.normal(0.0, 0.08) + _radius_offset(coef, e)
    scale = r / rho  # mm from the centre to the unit ellipse along each ray
    m = rho <= rad + np.maximum(offset / np.maximum(scale, 1e-3), -0.5 * rad)
    lab, n = ndimage.label(m)
    if n > 1:  # keep the lesion; a reader does not draw stray pixels at a sharp lobe
        sizes = ndimage.sum_labels(m, lab, index=np.arange(1, n + 1))
        m = lab == (1 + int(np.argmax(sizes)))
    return ndimage.binary_fill_holes(m)


def _window(ppm: float, shape: tuple[int, int], x0: float, x1: float, z0: float, z1: float):
    """Pixel slices covering the box ``[x0, x1] x [z0, z1]`` (mm), or None if outside."""
    r0, r1 = max(int(z0 * ppm), 0), min(math.ceil(z1 * ppm) + 1, shape[0])
    c0, c1 = max(int(x0 * ppm), 0), min(math.ceil(x1 * ppm) + 1, shape[1])
    if r0 >= r1 or c0 >= c1:
        return None
    return slice(r0, r1), slice(c0, c1)


@dataclass
class _Layout:
    """Geometry of one view, in mm from the skin (z) and the image's left edge (x)."""

    a: float  # lesion semi-axes and tilt in this view
    b: float
    tilt: float
    ex: float  # lesion half extents
    ez: float
    cx: float  # lesion centre
    cz: float
    skin: float  # depth of the skin / fat, fat / muscle and muscle / thyroid boundaries
    fat_bottom: float
    thy_top: float
    thy_thick: float
    depth: float  # scan depth: the image height
    ppm: float  # pixels per mm
    fov_margin: float  # blank border at each side at the bottom, pixels
    fov_extra: float  # extra border at the top (trapezoid), pixels


def _layout(
    lesion: _Lesion, profile: ScannerProfile, shape: tuple[int, int], rng: np.random.Generator
) -> _Layout:
    """Place the lesion behind the thyroid and choose the scan depth so it fits."""
    H, W = shape
    # Another plane or probe pressure: +-8% size, a slightly different tilt.
    a = lesion.width_mm / 2.0 * float(rng.uniform(0.92, 1.08))
    b = a * lesion.aspect
    tilt = lesion.tilt + float(rng.normal(0.0, 0.08))
    rmax = 1.0 + float(np.abs(lesion.harmonics[:, 1:]).sum())
    cs, sn = abs(math.cos(tilt)), abs(math.sin(tilt))
    ex = rmax * math.hypot(a * cs, b * sn)
    ez = rmax * math.hypot(a * sn, b * cs)

    skin = float(rng.uniform(0.9, 1.5))
    fat_bottom = skin + float(rng.uniform(1.0, 5.0))
    thy_top = fat_bottom + float(rng.uniform(2.0, 6.0))
    thy_thick = float(rng.uniform(9.0, 17.0))
    # The lesion indents the lobe's posterior surface.
    overlap = min(float(rng.uniform(0.5, 3.5)), 0.5 * ez)
    cz = thy_top + thy_thick - overlap + ez
    depth = max(30.0, cz + ez + float(rng.uniform(4.0, 16.0)))

    margin = profile.fov_margin * W
    extra = 0.1 * W if profile.fov == "trapezoid" else 0.0  # a trapezoid is narrower on top

    def half_fov_px(z_frac: float) -> float:
        return W / 2.0 - margin - extra * (1.0 - z_frac)

    # The sonographer zooms out until the lesion fits the field of view.
    for _ in range(8):
        need = (ex + 2.5) * H / depth
        have = half_fov_px((cz - ez) / depth)
        if need <= have:
            break
        depth *= need / have * 1.02
    ppm = H / depth
    span = max(half_fov_px((cz - ez) / depth) / ppm - ex - 2.5, 0.0)
    # Where the probe sits: the carotid or the trachea may be out of view.
    cx = W / 2.0 / ppm + span * float(rng.uniform(-0.9, 0.9))
    return _Layout(
        a, b, tilt, ex, ez, cx, cz, skin, fat_bottom, thy_top, thy_thick, depth, ppm, margin, extra
    )


class _Scene:
    """The tissue maps of one view on its pixel grid.

    ``R`` is the scattering amplitude (thyroid = 1), ``alpha`` the attenuation
    relative to soft tissue, ``S`` the specular echoes and ``reverb`` the
    reverberation echoes (which arrive from behind the air they bounce on).
    """

    def __init__(self, shape: tuple[int, int], ppm: float) -> None:
        H, W = shape
        self.shape, self.ppm = shape, ppm
        self.width = W / ppm
        self.zz = ((np.arange(H, dtype=np.float32) + np.float32(0.5)) / np.float32(ppm))[:, None]
        self.xx = ((np.arange(W, dtype=np.float32) + np.float32(0.5)) / np.float32(ppm))[None, :]
        self.R = np.zeros(shape, dtype=np.float32)
        self.alpha = np.ones(shape, dtype=np.float32)
        self.S = np.zeros(shape, dtype=np.float32)
        self.reverb = np.zeros(shape, dtype=np.float32)

    def box(self, x0: float, x1: float, z0: float, z1: float):
        """Slices of the box (mm) and its x, z coordinates; Nones if off the image."""
        w = _window(self.ppm, self.shape, x0, x1, z0, z1)
        return (w, self.xx[:, w[1]], self.zz[w[0]]) if w else (None, None, None)


def _paint_anatomy(sc: _Scene, lay: _Layout, rng: np.random.Generator) -> None:
    """Neck anatomy around the lesion (module docstring, step 1)."""

    def unif(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi))

    f32, ppm, shape = np.float32, sc.ppm, sc.shape
    R, alpha, S, zz = sc.R, sc.alpha, sc.S, sc.zz

    # ---- soft tissue, subcutaneous fat, strap muscles
    iso = _smooth_field(rng, shape, (1.5 * ppm, 2.0 * ppm))
    fib = _smooth_field(rng, shape, (max(0.15 * ppm, 0.7), 2.5 * ppm))
    fat_tex = _smooth_field(rng, shape, (0.6 * ppm, 1.0 * ppm))
    thy_tex = _smooth_field(rng, shape, (0.5 * ppm, 0.5 * ppm))
    # Echo levels differ between patients (build, fat, gland) around thyroid = 1.
    thy_level, deep_level = unif(0.85, 1.2), unif(0.24, 0.38)
    fat_level, muscle_level = unif(0.3, 0.55), unif(0.16, 0.25)
    muscle = f32(muscle_level) * np.exp(f32(0.55) * np.clip(fib * f32(1.6), -1.0, 3.0))
    R[:] = f32(deep_level) * np.exp(f32(0.35) * iso + f32(0.25) * fib)
    rf, rm = int(lay.thy_top * ppm), int(lay.fat_bottom * ppm)
    R[:rf] = f32(fat_level) * np.exp(f32(0.4) * fat_tex[:rf])
    R[rm:rf] = muscle[rm:rf]
    alpha[:rf] = 0.9
    S += 0.5 * _line(zz - lay.fat_bottom, ppm) + 0.35 * _line(zz - lay.thy_top, ppm)
    # Fascial planes between the deep neck muscles: gently curved bright lines.
    for _ in range(int(rng.integers(3, 8))):
        fx, fz, half_len = unif(0.0, sc.width), unif(lay.thy_top, lay.depth), unif(3.0, 12.0)
        curv, amp = float(rng.normal(0.0, 0.02)), unif(0.2, 0.7)
        w, xw, zw = sc.box(fx - half_len, fx + half_len, fz - 4.0, fz + 4.0)
        if w:
            t = (xw - f32(fx)) / f32(half_len)
            fz_x = f32(fz) + f32(curv * half_len**2) * t * t
            S[w] += amp * _line(zw - fz_x, ppm, 1.3) * np.exp(-(t**4))

    # ---- thyroid lobe and isthmus: homogeneous, fine texture, thin bright capsule
    ta = max(unif(6.5, 12.0), 0.8 * lay.ex)
    tx = lay.cx + unif(0.0, 0.4) * lay.a
    tb = lay.thy_thick / 2.0
    tz = lay.thy_top + tb
    lobe_shape = np.array(
        [[2, rng.normal(0, 0.05), rng.normal(0, 0.05)], [3, unif(0.0, 0.1), rng.normal(0, 0.03)]]
    )
    thy_in = np.zeros(shape, dtype=bool)
    w, xw, zw = sc.box(tx - 1.2 * ta, tx + 2.4 * ta, lay.thy_top - 1.0, tz + 1.2 * tb)
    if w:
        _, rho, e, r = _ellipse(xw, zw, tx, tz, ta, tb, polar=True)
        lobe_sd = r - r / rho * (1.0 + _radius_offset(lobe_shape, e))
        isth_sd = _ellipse(xw, zw, tx + 1.1 * ta, lay.thy_top + 2.3, 1.1 * ta, 2.3)
        thy_sd = np.minimum(lobe_sd, isth_sd)
        thy_in[w] = thy_sd < 0
        R[w] = np.where(thy_in[w], f32(thy_level) * np.exp(f32(0.07) * thy_tex[w]), R[w])
        S[w] = np.where(thy_in[w], f32(0.0), S[w])
        S[w] += 0.5 * _line(thy_sd, ppm) * _verticality(xw, zw, tx, tz)

    # ---- sternocleidomastoid, longus colli and the prevertebral bone line
    rc = unif(3.0, 4.2)
    ccx = min(tx - ta, lay.cx - lay.ex) - rc - unif(0.5, 2.5)
    ccz = tz + unif(-1.0, 3.0)
    sa, sb = unif(9, 14), unif(2.5, 3.5)
    sx, sz = ccx - 1.0, lay.fat_bottom + 3.0
    w, xw, zw = sc.box(sx - sa, sx + sa, sz - sb, sz + sb)
    if w:
        R[w] = np.where((_ellipse(xw, zw, sx, sz, sa, sb) < 0) & ~thy_in[w], muscle[w], R[w])
    lcz = max(lay.cz + lay.ez, lay.thy_top + lay.thy_thick) + unif(2.5, 4.5)
    lcx, la, lb = tx + unif(-2, 3), unif(6, 9), unif(2.5, 3.5)
    w, xw, zw = sc.box(lcx - la, lcx + la, lcz - lb, lcz + lb)
    if w:
        R[w] = np.where(_ellipse(xw, zw, lcx, lcz, la, lb) < 0, muscle[w], R[w])
    vr = unif(11.0, 15.0)
    vz = lcz + lb + unif(1.0, 4.0) + vr
    vx = tx + unif(-3, 3)
    w, xw, zw = sc.box(0.0, sc.width, vz - vr - 1.0, vz)
    if w:
        v_sd = _ellipse(xw, zw, vx, vz, vr * 2.0, vr)
        S[w] += 2.0 * _line(v_sd, ppm, 1.5)
        alpha[w] = np.where(v_sd < 0.15, f32(40.0), alpha[w])  # bone: no echo behind
    w, xw, _ = sc.box(0.0, sc.width, vz, lay.depth)
    if w:
        alpha[w] = np.where(np.abs(xw - vx) < 2.0 * vr, f32(40.0), alpha[w])

    # ---- common carotid artery (anechoic lumen, bright wall) and jugular vein
    w, xw, zw = sc.box(ccx - rc - 1.5, ccx + rc + 1.5, ccz - rc - 1.5, ccz + rc + 1.5)
    if w:
        c_sd = _ellipse(xw, zw, ccx, ccz, rc, rc)
        R[w] = np.where((c_sd >= 0) & (c_sd < 0.6), f32(1.3), R[w])
        R[w] = np.where(c_sd < 0, f32(0.012), R[w])
        S[w] = np.where(c_sd < 0, f32(0.0), S[w])
        alpha[w] = np.where(c_sd < 0, f32(0.2), alpha[w])  # blood: enhancement behind
        S[w] += 1.6 * _line(c_sd - 0.1, ppm, 1.0) * _verticality(xw, zw, ccx, ccz)
    if rng.random() < 0.6:
        ja, jb, jt = unif(3.0, 6.0), unif(1.2, 2.8), float(rng.normal(0, 0.2))
        jx, jz = ccx - rc - 0.6 * ja - unif(0.3, 2.0), ccz - rc * unif(0.3, 0.8)
        w, xw, zw = sc.box(jx - ja - 1, jx + ja + 1, jz - ja - 1, jz + ja + 1)
        if w:
            j_sd = _ellipse(xw, zw, jx, jz, ja, jb, jt)
            R[w] = np.where(j_sd < 0, f32(0.02), R[w])
            alpha[w] = np.where(j_sd < 0, f32(0.2), alpha[w])
            S[w] += 0.6 * _line(j_sd, ppm, 0.8) * _verticality(xw, zw, jx, jz)

    # ---- trachea: hypoechoic cartilage, bright air interface, ring-down, air shadow
    tr = unif(7.0, 9.0)
    wall = unif(1.0, 1.6)
    # Medial to the lobe, and never in front of the lesion (it would sit in the air shadow).
    trx = max(tx + ta + unif(3.0, 14.0), lay.cx + lay.ex + tr + wall + 1.0)
    trz = lay.thy_top + unif(1.0, 3.0) + tr + wall
    w, xw, zw = sc.box(trx - tr - wall - 1, trx + tr + wall + 1, trz - tr - wall - 1, lay.depth)
    if w:
        tr_sd = _ellipse(xw, zw, trx, trz, tr, tr)
        upper = zw < trz
        R[w] = np.where((tr_sd >= 0) & (tr_sd < wall) & upper, f32(0.12), R[w])
        air = (tr_sd < 0) | (~upper & (np.abs(xw - trx) < tr))
        alpha[w] = np.where(air, f32(60.0), alpha[w])
        S[w] += 2.2 * _line(tr_sd, ppm, 1.0) * upper
        # The echo bounces inside the wall, repeating the air line deeper.
        cos_z = (zw - f32(trz)) / (np.sqrt((xw - f32(trx)) ** 2 + (zw - f32(trz)) ** 2) + 1e-6)
        for k in range(1, 6):
            sc.reverb[w] += 0.9 * 0.6**k * _line(tr_sd - f32(k * wall) * cos_z, ppm, 1.2) * upper

    # ---- skin and the bright near field
    R[: max(int(lay.skin * ppm), 1)] = 1.5
    S += 1.2 * _line(zz - lay.skin, ppm, 1.0)


def _paint_lesion(sc: _Scene, lesion: _Lesion, lay: _Layout):
    """Insert the lesion into the maps; return its window and polar geometry there."""
    f32, ppm = np.float32, sc.ppm
    a, b, cx, cz = lay.a, lay.b, lay.cx, lay.cz
    w, lx, lz = sc.box(cx - lay.ex - 3.0, cx + lay.ex + 3.0, cz - lay.ez - 3.0, cz + lay.ez + 3.0)
    _, rho, e, r = _ellipse(lx, lz, cx, cz, a, b, lay.tilt, polar=True)
    rad = 1.0 + _radius_offset(lesion.harmonics, e)
    sd = r - r / rho * rad  # mm, negative inside
    w_in = expit(-sd / f32(max(lesion.edge_blur_mm, 0.3 / ppm))).astype(f32)
    inside = sd < 0

    u, v = rho * e.real, rho * e.imag
    tex = np.zeros_like(rho)
    for bu, bv, bw, bwt in lesion.bumps:
        tex += f32(bwt) * np.exp(((u - f32(bu)) ** 2 + (v - f32(bv)) ** 2) * f32(-0.5 / bw**2))
    if inside.sum() > 4:
        tex = (tex - tex[inside].mean()) / (tex[inside].std() + f32(1e-6))
    # Mean-preserving log-normal texture; patches stay hypoechoic (<= ~1.8x the mean echo).
    het = f32(lesion.heterogeneity)
    r_les = f32(lesion.echo) * np.exp(np.clip(het * tex - het * het / 2, -1.5, 0.6))
    a_les = np.full_like(r_les, 0.7)  # solid and cellular: mild posterior enhancement
    for cu, cv, ru, rv in lesion.cysts:
        q = 1.0 - ((u - f32(cu)) / f32(ru)) ** 2 - ((v - f32(cv)) / f32(rv)) ** 2
        wc = expit(q * f32(6.0))
        r_les = r_les * (1 - wc) + f32(0.01) * wc
        a_les = a_les * (1 - wc) + f32(0.2) * wc
    sc.S[w] *= 1 - w_in  # the lesion displaces the thyroid capsule and fasciae it overlaps
    sc.R[w] = sc.R[w] * (1 - w_in) + r_les * w_in
    sc.alpha[w] = sc.alpha[w] * (1 - w_in) + a_les * w_in
    if lesion.capsule > 0:  # seen where it faces the probe, patchy along the border
        patchy = 0.6 + 0.4 * (e * np.complex64(np.exp(1j * lesion.tilt))).real
        sc.S[w] += lesion.capsule * _line(sd, ppm, 1.0) * _verticality(lx, lz, cx, cz) * patchy
    c, s = math.cos(lay.tilt), math.sin(lay.tilt)
    for cu, cv, r_mm in lesion.calcs:
        px, pz = cx + a * cu * c - b * cv * s, cz + a * cu * s + b * cv * c
        r_mm = max(min(r_mm, 0.15 * b), 0.7 / ppm)  # a focus, small even in a small lesion
        d2 = ((lx - f32(px)) ** 2 + (lz - f32(pz)) ** 2) / f32(r_mm**2)
        sc.S[w] += 3.5 * np.exp(-d2)
        sc.alpha[w] = np.where(d2 < 1.0, f32(25.0), sc.alpha[w])  # calcium: acoustic shadow
    return w, rho, e, r, rad


def _form_image(
    sc: _Scene, lay: _Layout, profile: ScannerProfile, rng: np.random.Generator
) -> np.ndarray:
    """The scanner's image of the maps (module docstring, steps 2-4), as uint8."""
    f32, ppm, (H, W) = np.float32, sc.ppm, sc.shape
    psf = (max(profile.psf_axial_mm * ppm, 0.5), max(profile.psf_lateral_mm * ppm, 0.6))
    n = rng.standard_normal((2, H, W), dtype=f32)
    re = ndimage.gaussian_filter(sc.R * n[0], psf)
    im = ndimage.gaussian_filter(sc.R * n[1], psf)
    norm = f32(math.sqrt(2.0 * _kernel_energy(psf[0]) * _kernel_energy(psf[1])))
    env = np.hypot(re, im) / norm + f32(2.5) * sc.S

    att = np.cumsum(sc.alpha, axis=0, dtype=f32) * f32(TISSUE_ATTENUATION_NP_PER_MM / ppm)
    att = ndimage.gaussian_filter1d(att, 0.8, axis=1)  # shadows with slightly soft edges
    knots = np.linspace(0.0, lay.depth, 7)
    # The operator's TGC sliders and overall gain differ from image to image.
    knot_db = rng.normal(0.0, 2.5, knots.size) + rng.normal(0.0, 2.0)
    tgc_db = np.interp(sc.zz[:, 0], knots, knot_db).astype(f32)
    tgc = np.exp(f32(profile.tgc_compensation * TISSUE_ATTENUATION_NP_PER_MM) * sc.zz) * (
        f32(10.0) ** (tgc_db[:, None] / f32(20.0))
    )
    rayleigh = np.sqrt(rng.standard_exponential((H, W), dtype=f32))
    noise = f32(profile.noise / math.sqrt(2.0)) * rayleigh
    env = (env * np.exp(-att) + noise + sc.reverb * np.exp(f32(-0.3) * att)) * tgc
    # Envelope detection and scan conversion low-pass the envelope (without this,
    # log compression carves the speckle nulls into dark cracks); the scanner's
    # speckle reduction adds to it.
    env = ndimage.gaussian_filter(
        env, [math.hypot(0.6 * p, profile.smoothing_px) for p in psf], truncate=3.0
    )

    db = f32(20.0) * np.log10(env + f32(1e-5)) + f32(profile.gain_db)
    g = np.clip(f32(0.63) + db / f32(profile.dynamic_range_db), 0.0, 1.0) ** f32(profile.gamma)
    zf = (np.arange(H) + 0.5)[:, None] / H
    half = W / 2.0 - lay.fov_margin - lay.fov_extra * (1 - zf)
    fov = np.abs((np.arange(W) + 0.5)[None, :] - W / 2.0) <= half
    return np.where(fov, np.rint(g * f32(255.0)), 0).astype(np.uint8)


def _render_view(
    lesion: _Lesion,
    profile: ScannerProfile,
    shape: tuple[int, int],
    mirror: bool,
    rng: np.random.Generator,
) -> _View:
    """Simulate one transverse view of the lesion, with two readers' delineations."""
    lay = _layout(lesion, profile, shape, rng)
    scene = _Scene(shape, lay.ppm)
    _paint_anatomy(scene, lay, rng)
    w, rho, e, r, rad = _paint_lesion(scene, lesion, lay)
    img = _form_image(scene, lay, profile, rng)
    m1 = np.zeros(shape, dtype=bool)
    m2 = np.zeros(shape, dtype=bool)
    m1[w] = _reader_mask(rng, rho, e, r, rad, 0.0)
    m2[w] = _reader_mask(rng, rho, e, r, rad, 0.08)  # reader 2 draws a little wider
    if mirror:  # a left-side lesion: trachea on the image's left
        img, m1, m2 = img[:, ::-1], m1[:, ::-1], m2[:, ::-1]
    return _View(np.ascontiguousarray(img), np.ascontiguousarray(m1), np.ascontiguousarray(m2))


def _kernel_energy(sigma: float) -> float:
    """Sum of squares of scipy's normalised 1D Gaussian kernel of ``sigma``."""
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=float)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    return float((k**2).sum())


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
) -> None:
    """Render and write every view of one patient."""
    for case_id, ss in zip(case_ids, seeds, strict=True):
        view = _render_view(lesion, profile, shape, mirror, np.random.default_rng(ss))
        name = f"{case_id}.png"
        (out / "images" / name).write_bytes(_png_bytes(view.image))
        (out / "masks" / name).write_bytes(_png_bytes(view.mask.astype(np.uint8) * 255))
        (out / "masks_reader2" / name).write_bytes(
            _png_bytes(view.mask_reader2.astype(np.uint8) * 255)
        )


def _check_args(n, seed, prevalence, difficulty, n_centers, image_shape, fraction, n_jobs):
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
) -> Path:
    """Write a synthetic parathyroid ultrasound cohort and its manifest.

    Writes ``images/``, ``masks/`` and ``masks_reader2/`` (8-bit PNG; masks
    0/255, one connected lesion each), ``synth.json`` (the arguments and
    counts) and, last and atomically, ``manifest.csv`` with the columns
    ``case_id, image, mask, mask_reader2, label, patient_id, center, age,
    sex, calcium, phosphate, ipth`` (paths relative to ``out_dir``; label 0 =
    parathyroid adenoma, 1 = APT/PC; sex ``"F"``/``"M"``; centres ``"H1"``...).
    An interrupted run leaves no manifest. See the module docstring for what is
    simulated and how.

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
        It scales every class difference by ``1 - 0.9 * difficulty`` (module
        docstring).
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
        n, seed, prevalence, difficulty, n_centers, image_shape, second_image_fraction, n_jobs
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
    # Independent streams: (0,) the cohort plan, (1, i) patient i, (2, k) image k.
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

    rows: list[dict] = []
    jobs = []
    k = 0
    for p, lesion in zip(patients, lesions, strict=True):
        ids, seeds = [], []
        for _ in range(p.n_images):
            case_id = f"case_{k + 1:0{width}d}"
            ids.append(case_id)
            seeds.append(np.random.SeedSequence(seed, spawn_key=(2, k)))
            rows.append(
                {
                    "case_id": case_id,
                    "image": f"images/{case_id}.png",
                    "mask": f"masks/{case_id}.png",
                    "mask_reader2": f"masks_reader2/{case_id}.png",
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
        jobs.append((ids, lesion, profiles[p.center], p.mirror, seeds))

    if n_jobs == 1:
        for ids, lesion, profile, mirror, seeds in jobs:
            _write_case(out, ids, lesion, profile, shape, mirror, seeds)
    else:
        from joblib import Parallel, delayed

        Parallel(n_jobs=n_jobs)(
            delayed(_write_case)(out, ids, lesion, profile, shape, mirror, seeds)
            for ids, lesion, profile, mirror, seeds in jobs
        )

    n_pa, n_pc = class_counts(n, prevalence)
    atomic_write_json(
        out / PARAMS_NAME,
        {
            "generator": "radfusion.data.synth.generate_cohort",
            "n": n,
            "seed": seed,
            "prevalence": float(prevalence),
            "difficulty": float(difficulty),
            "separation": sep,
            "n_centers": n_centers,
            "scanner_effect": float(scanner_effect),
            "image_shape": list(shape),
            "second_image_fraction": float(second_image_fraction),
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
