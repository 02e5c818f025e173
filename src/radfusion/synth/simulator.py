"""The image simulator: one transverse neck ultrasound view of a parathyroid lesion.

A tissue reflectivity map (anatomy + lesion) is turned into an image the way a
scanner forms one, so the same physics gives speckle, shadowing and enhancement
everywhere. :mod:`radfusion.synth.cohort` draws the patients and writes the files.

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from scipy import ndimage
from scipy.special import expit

__all__ = ["ScannerProfile", "scanner_profile"]

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
