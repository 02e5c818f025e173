"""Helpers shared by the benchmark scripts: data location, memory and the RESULT line."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the deep stack is imported only by the benchmarks that use it
    import numpy as np

    import radfusion.config
    from radfusion.deep.inputs import InputRow

REPO = Path(__file__).resolve().parents[1]
BUSI = REPO.parent / "shared" / "data" / "busi"


def busi_manifest() -> Path:
    """The BUSI manifest, or exit with a clear message when the data is absent."""
    path = BUSI / "manifest.csv"
    if not path.is_file():
        sys.exit(f"BUSI data not found at {BUSI}; see README (benchmarks need it)")
    return path


def busi_study_config(name: str) -> radfusion.config.StudyConfig:
    """The paper preset pointed at BUSI: its manifest and near-duplicate groups, no clinical
    columns, benign/malignant labels. Benchmarks then set their CPU-feasible sizes."""
    from radfusion.config import load_preset

    cfg = load_preset("paper")
    cfg.name = name
    cfg.data.manifest = busi_manifest()
    cfg.data.group_column = "group_id"
    cfg.data.clinical.numeric = []
    cfg.data.clinical.categorical = []
    cfg.evaluation.outcome_name = "Pathology"
    cfg.evaluation.class_names = ("benign", "malignant")
    return cfg


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident memory (MiB) of this process, or of its finished children."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024.0


def result_line(**figures: object) -> str:
    """The benchmark's last line: ``RESULT key=value ...`` (floats with 4 significant digits)."""
    parts = []
    for key, value in figures.items():
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={text}")
    return "RESULT " + " ".join(parts)


def synthetic_inputs(
    cases: int, size: int, seed: int = 0, factor: int = 10
) -> tuple[dict[str, np.ndarray], list[InputRow]]:
    """A synthetic cohort as the deep arms see it after the input cache.

    ``cases`` cached-style 2-channel inputs (``float16`` [0, 1] image with speckle-like noise
    and a square ROI mask; label 1, one third of the cases as in BUSI, has a brighter
    lesion), split 70/15/15 stratified by label, and the training minority cases expanded
    ``factor``-fold with the planned flips and noise (the paper's augmentation).

    Returns
    -------
    arrays : dict
        case_id -> ``(2, size, size)`` ``float16`` input.
    rows : list of InputRow
        Every case plus the planned copies, each with its split.
    """
    import numpy as np
    import pandas as pd

    from radfusion.config import AugmentConfig
    from radfusion.deep.inputs import input_rows
    from radfusion.preprocessing import plan_augmentation

    rng = np.random.default_rng(seed)
    labels = (np.arange(cases) % 3 == 0).astype(int)
    arrays: dict[str, np.ndarray] = {}
    c, r = size // 2, max(1, size // 6)
    for i in range(cases):
        x = np.zeros((2, size, size), np.float32)
        x[0] = rng.random((size, size), dtype=np.float32) * 0.6
        x[0, c - r : c + r, c - r : c + r] += 0.3 * labels[i]
        x[1, c - r : c + r, c - r : c + r] = 1.0
        arrays[f"c{i:04d}"] = x.astype(np.float16)
    ids = list(arrays)
    split = np.empty(cases, dtype=object)
    for lab in (0, 1):  # stratified 70 / 15 / 15
        idx = rng.permutation(np.flatnonzero(labels == lab))
        n_train, n_val = round(0.7 * len(idx)), round(0.15 * len(idx))
        split[idx[:n_train]] = "train"
        split[idx[n_train : n_train + n_val]] = "val"
        split[idx[n_train + n_val :]] = "test"
    table = pd.DataFrame({"case_id": ids, "label": labels, "split": split})
    plan = plan_augmentation(table, AugmentConfig(factor=factor), seed=seed)
    # input_rows reads case_id and label only.
    shims = [SimpleNamespace(case_id=i, label=int(lab)) for i, lab in zip(ids, labels, strict=True)]
    return arrays, input_rows(shims, pd.Series(split, index=ids), plan)  # type: ignore[arg-type]


def upload_requests(bundle: Path, n: int, seed: int = 5) -> list[dict]:
    """Multipart uploads (``files`` + clinical ``data``) of ``n`` synthetic cases, for
    ``radfusion serve``'s API; the cohort goes into a fresh temporary folder."""
    import tempfile

    import pandas as pd

    from radfusion.bundle import load_bundle
    from radfusion.synth import generate_cohort

    clinical = load_bundle(bundle).config.data.clinical.all
    tmp = Path(tempfile.mkdtemp(prefix="radfusion-serve-bench-"))
    manifest = generate_cohort(tmp / "cohort", n=n, seed=seed, prevalence=0.5)
    rows = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    return [
        {
            "files": {
                "image": (Path(r["image"]).name, (manifest.parent / r["image"]).read_bytes()),
                "mask": (Path(r["mask"]).name, (manifest.parent / r["mask"]).read_bytes()),
            },
            "data": {c: r[c] for c in clinical if c in r},
        }
        for _, r in rows.iterrows()
    ]


@contextlib.contextmanager
def served(bundle: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """`radfusion serve BUNDLE` on 127.0.0.1 (a free port; nothing else is contacted),
    answering ``/api/health``: yields its URL and process, stops it afterwards."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    exe = [sys.executable, "-m", "radfusion", "serve", str(bundle), "--port", str(port)]
    server = subprocess.Popen(exe, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for _ in range(600):  # at most 2 minutes to verify and load the bundle
            try:
                if httpx.get(url + "/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            sys.exit("radfusion serve did not start within 2 minutes")
        yield url, server
    finally:
        server.terminate()
        server.wait(timeout=30)
