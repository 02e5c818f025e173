"""Benchmark: radfusion's radiomics extraction against a plain serial PyRadiomics loop.

On N real BUSI images (paper preset: 500x500 crops, 567 features) it times

(a) a plain serial loop, one process: read image + ROI, the same radfusion
    preprocessing, ``RadiomicsFeatureExtractor(params).execute`` on the crop;
(b) ``extract_radiomics(..., n_jobs=-1)`` on a fresh cache (worker start-up included:
    the loky workers are shut down before each run);
(c) the same call again, fully cached;

checks that (a) and (b) give bit-identical features, and samples the resident memory
of this process plus all its children during (b). It does this for two values of N
to show memory does not grow with N. CPU seconds per image (parent + reaped workers)
are printed too: unlike wall time they do not depend on what else runs on the machine.

    python benchmarks/radiomics_extraction.py --n 40 --n2 80

Last line: ``RESULT ratio=... cached_fraction=... s_per_image_serial=...
s_per_image_radfusion=... peak_mb_n1=... peak_mb_n2=...`` (ratio and seconds per
image pooled over both N; cached_fraction the larger of the two).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from radfusion.config import load_preset, radiomics_params_path
from radfusion.data import load_cohort, read_image, read_mask
from radfusion.preprocessing import preprocess_case
from radfusion.radiomics import extract_radiomics

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "busi"


class PeakMemory:
    """Samples RSS of this process + all descendants every ``interval`` seconds."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):  # a child may exit meanwhile
                total += child.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


def serial_pyradiomics(cases, cfg) -> pd.DataFrame:
    """What a user would write by hand: one process, one case after another."""
    import radiomics
    import SimpleITK as sitk
    from radiomics import featureextractor

    radiomics.setVerbosity(logging.ERROR)
    logging.getLogger("radiomics").setLevel(logging.ERROR)  # e.g. "GLCM is symmetrical"
    extractor = featureextractor.RadiomicsFeatureExtractor(
        str(radiomics_params_path(cfg.radiomics.params))
    )
    rows = {}
    for case in cases:
        image = read_image(case.image)
        mask = read_mask(case.mask, shape=image.shape)
        pre = preprocess_case(image, mask, cfg.preprocess)
        out = extractor.execute(
            sitk.GetImageFromArray(pre.image), sitk.GetImageFromArray(pre.mask.astype(np.int32))
        )
        rows[case.case_id] = {k: float(v) for k, v in out.items() if not k.startswith("diag")}
    return pd.DataFrame.from_dict(rows, orient="index")


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy since boot (Linux /proc/stat; else 0)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def others_share(busy: float, ours: float, wall: float) -> float:
    """Fraction of the machine's cores used by other processes during a timed section."""
    return max(0.0, busy - ours) / (wall * (os.cpu_count() or 1))


def children_cpu() -> float:
    """User + system CPU seconds of this process's terminated, reaped children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def shutdown_workers() -> None:
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)


def run_one(cases, cfg, workdir: Path) -> dict[str, float]:
    n = len(cases)
    t0, c0, b0 = time.perf_counter(), time.process_time(), machine_busy()
    serial = serial_pyradiomics(cases, cfg)
    t_serial, cpu_serial = time.perf_counter() - t0, time.process_time() - c0
    others_serial = others_share(machine_busy() - b0, cpu_serial, t_serial)

    cache = workdir / f"cache_{n}"
    shutil.rmtree(cache, ignore_errors=True)
    shutdown_workers()
    children0 = children_cpu()
    with PeakMemory() as mem:
        t0, c0, b0 = time.perf_counter(), time.process_time(), machine_busy()
        result = extract_radiomics(cases, cfg, cache, n_jobs=-1, progress=False)
        t_fast, cpu_parent = time.perf_counter() - t0, time.process_time() - c0
        busy = machine_busy() - b0
    shutdown_workers()  # reaped workers report their CPU time, start-up included
    cpu_fast = cpu_parent + children_cpu() - children0
    others_fast = others_share(busy, cpu_fast, t_fast)
    t0 = time.perf_counter()
    cached = extract_radiomics(cases, cfg, cache, n_jobs=-1, progress=False)
    t_cached = time.perf_counter() - t0

    same = serial.loc[result.features.index, result.features.columns]
    identical = np.array_equal(same.to_numpy(), result.features.to_numpy(), equal_nan=True)
    assert cached.n_computed == 0
    pd.testing.assert_frame_equal(cached.features, result.features, check_exact=True)
    fig = {
        "n": n,
        "others": max(others_serial, others_fast),
        "t_serial": t_serial,
        "t_fast": t_fast,
        "t_cached": t_cached,
        "peak_mb": mem.peak / 2**20,
    }
    print(
        f"N={n:4d}  serial {t_serial:7.1f} s ({t_serial / n:.3f} s/image)  "
        f"radfusion {t_fast:7.1f} s ({t_fast / n:.3f} s/image)  ratio {t_serial / t_fast:.2f}  "
        f"cached re-run {t_cached:.3f} s ({t_cached / t_fast:.2%} of first)  "
        f"peak RSS parent+workers {fig['peak_mb']:.0f} MB  "
        f"features {result.features.shape[1]}  identical to serial: {identical}\n"
        f"        CPU seconds per image (load-independent): serial {cpu_serial / n:.3f}, "
        f"radfusion parent+workers {cpu_fast / n:.3f}; other processes used "
        f"{others_serial:.0%} of the CPUs during the serial loop, {others_fast:.0%} during "
        "radfusion's run",
        flush=True,
    )
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BUSI folder")
    parser.add_argument("--n", type=int, default=40, help="first number of images")
    parser.add_argument("--n2", type=int, default=80, help="second number of images")
    parser.add_argument("--size", type=int, default=500, help="crop size (paper: 500)")
    parser.add_argument("--seed", type=int, default=0, help="which images are drawn")
    args = parser.parse_args()

    logging.basicConfig(level=logging.WARNING)
    cfg = load_preset("paper")
    cfg.preprocess.size = args.size
    cohort = load_cohort(args.data / "manifest.csv")
    order = np.random.default_rng(args.seed).permutation(len(cohort))
    all_cases = cohort.cases()
    print(
        f"radiomics extraction benchmark: BUSI, paper preset (size {args.size}, "
        f"{cfg.radiomics.params} parameter file), {os.cpu_count()} CPU cores, "
        f"load average before start {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="radfusion-bench-") as tmp:
        figs = [
            run_one([all_cases[i] for i in order[:n]], cfg, Path(tmp)) for n in (args.n, args.n2)
        ]
    shutdown_workers()
    n_total = sum(f["n"] for f in figs)
    serial = sum(f["t_serial"] for f in figs)
    fast = sum(f["t_fast"] for f in figs)
    ratio = serial / fast
    cached_fraction = max(f["t_cached"] / f["t_fast"] for f in figs)
    busiest = max(f["others"] for f in figs)
    print(
        f"load average at the end {os.getloadavg()[0]:.2f}; other processes took up to "
        f"{busiest:.0%} of the CPUs during a timed section"
        + (" (timings are not representative; rerun on a quiet machine)" if busiest > 0.1 else "")
    )
    print(
        f"floors: ratio {ratio:.2f} >= 1.7 {'ok' if ratio >= 1.7 else 'MISSED'}; cached "
        f"{cached_fraction:.2%} <= 5% {'ok' if cached_fraction <= 0.05 else 'MISSED'}; peak "
        f"memory N2/N1 {figs[1]['peak_mb'] / figs[0]['peak_mb']:.2f}"
    )
    print(
        f"RESULT ratio={ratio:.2f} cached_fraction={cached_fraction:.4f} "
        f"s_per_image_serial={serial / n_total:.3f} s_per_image_radfusion={fast / n_total:.3f} "
        f"peak_mb_n1={figs[0]['peak_mb']:.0f} peak_mb_n2={figs[1]['peak_mb']:.0f}"
    )


if __name__ == "__main__":
    main()
