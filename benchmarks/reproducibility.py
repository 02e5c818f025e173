"""Same numbers on another CPU? The demo study in fast and strict mode, on this machine's
own kernels and on an emulated AVX2-only machine, with the cost of strict mode.

The demo cohort (300 synthetic images, as `radfusion demo`) is written once; the demo
study then runs four times as `radfusion run`, each in a fresh process:

* fast, native: this machine's kernels (AVX-512 here);
* fast, emulated AVX2: the kernel levels an AVX2-only CPU gets, set before the libraries
  load (ATen, oneDNN, MKL, OpenBLAS, numpy), which is how the newcomer's machine of
  issue 20 differs from this one;
* strict, native and strict, emulated AVX2: `reproducibility.mode: strict`.

It prints Table 2 (validation and test) of each run, whether the pairs are identical
(Table 2, every probability, the network weights), and the wall time of each run.

    python benchmarks/reproducibility.py [--out /tmp/radfusion-repro] [--n 300]

Emulation cannot change what the CPU reports about itself (vendor, cache sizes): strict
mode is built not to depend on those (see radfusion.reproducibility), which this
benchmark cannot show; a real second machine can.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import result_line

#: What an AVX2-only x86-64 CPU gets from each library's run-time dispatch.
EMULATED_AVX2 = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
}
COMPARED = ("deep/1ch/network.safetensors", "deep/2ch/network.safetensors")


def _numpy_avx512() -> str:
    from radfusion.reproducibility import strict_environment

    return strict_environment(1).get("NPY_DISABLE_CPU_FEATURES", "")


def _start(out: Path, manifest: Path, name: str, mode: str, emulate: bool) -> subprocess.Popen:
    cfg = {
        "preset": "demo",
        "data": {"manifest": str(manifest)},
        "output_dir": str(out / name),
        "reproducibility": {"mode": mode},
    }
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ)
    if emulate:
        env.update(EMULATED_AVX2)
        if _numpy_avx512():
            env["NPY_DISABLE_CPU_FEATURES"] = _numpy_avx512()
    log = (out / f"{name}.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "radfusion", "run", str(path)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _wait(proc: subprocess.Popen, name: str, out: Path) -> None:
    if proc.wait() != 0:
        tail = (out / f"{name}.log").read_text()[-3000:]
        sys.exit(f"{name} failed ({proc.returncode}):\n{tail}")


def _table2(run: Path) -> pd.DataFrame:
    df = pd.read_csv(run / "evaluation" / "table2.csv", dtype=str, keep_default_na=False)
    return df[df["Set"].isin(["Validation", "Test"])][
        ["Model", "Set", "AUC (95% CI)", "ACC", "SEN", "SPE"]
    ].reset_index(drop=True)


def _same(a: Path, b: Path) -> dict[str, bool]:
    pa = pd.read_parquet(a / "predictions.parquet")
    pb = pd.read_parquet(b / "predictions.parquet")
    out = {
        "table2": _table2(a).equals(_table2(b)),
        "probabilities": pa.equals(pb),
    }
    for rel in COMPARED:
        digest = [hashlib.sha256((r / rel).read_bytes()).hexdigest() for r in (a, b)]
        out[rel.split("/")[1] + "_weights"] = digest[0] == digest[1]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/radfusion-repro"))
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument(
        "--parallel", action="store_true", help="run the four studies at once (busy machine)"
    )
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    from radfusion.synth import generate_cohort

    # the demo's cohort (radfusion demo's defaults)
    manifest = generate_cohort(
        args.out / "cohort", n=args.n, seed=0, prevalence=0.2, reader2_fraction=0.33, n_jobs=-1
    )
    runs = {
        "fast_native": ("fast", False),
        "fast_avx2": ("fast", True),
        "strict_native": ("strict", False),
        "strict_avx2": ("strict", True),
    }
    wall: dict[str, float] = {}
    if args.parallel:  # all at once: equal shares of the machine, so the ratio still holds
        start = time.perf_counter()
        procs = {name: _start(args.out, manifest, name, *how) for name, how in runs.items()}
        for name, proc in procs.items():
            _wait(proc, name, args.out)
            wall[name] = time.perf_counter() - start
        for name in runs:  # each run's own stage times, free of the waiting order
            wall[name] = sum(
                json.loads(m.read_text()).get("seconds", 0.0)
                for m in (args.out / name / "stages").glob("*.json")
            )
    else:
        for name, how in runs.items():
            start = time.perf_counter()
            _wait(_start(args.out, manifest, name, *how), name, args.out)
            wall[name] = time.perf_counter() - start
    for name in runs:
        print(f"\n{name} ({wall[name] / 60:.1f} min)")
        print(_table2(args.out / name).to_string(index=False))
        compute = json.loads((args.out / name / "versions.json").read_text())["compute"]
        print(
            "PyTorch kernels:",
            compute["torch_cpu_capability"],
            "threads:",
            compute["torch_threads"],
        )
    fast = _same(args.out / "fast_native", args.out / "fast_avx2")
    strict = _same(args.out / "strict_native", args.out / "strict_avx2")
    print("\nfast native vs emulated AVX2 identical:", fast)
    print("strict native vs emulated AVX2 identical:", strict)
    cost = wall["strict_native"] / wall["fast_native"]
    print(f"strict / fast wall time: {cost:.2f}")
    print(
        result_line(
            fast_table2_identical=fast["table2"],
            fast_weights_identical=fast["1ch_weights"] and fast["2ch_weights"],
            strict_table2_identical=strict["table2"],
            strict_probabilities_identical=strict["probabilities"],
            strict_weights_identical=strict["1ch_weights"] and strict["2ch_weights"],
            fast_native_s=wall["fast_native"],
            strict_native_s=wall["strict_native"],
            strict_cost=cost,
        )
    )


if __name__ == "__main__":
    main()
