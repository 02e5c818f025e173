"""Same data, config and seed, same numbers: on one machine by default, on any x86-64 CPU
with AVX2 under ``reproducibility.mode: strict``.

Every comparison here is made on the machine running the test (no value measured with one
CPU's kernels is pinned): fresh processes against an in-process run, an idle machine
against a loaded one, one search process against many, and strict runs started from
environments that mimic other machines.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from threadpoolctl import threadpool_limits
from typer.testing import CliRunner

from radfusion.cli import app
from radfusion.config import ReproducibilityConfig, StudyConfig
from radfusion.reproducibility import (
    STRICT_ISA,
    environment_mismatches,
    reproducible_numerics,
    strict_environment,
)
from radfusion.synth import generate_cohort

from .conftest import TINY, cpu_has_avx2

runner = CliRunner()

#: Files whose bytes must not change between equivalent runs (models and statistics).
COMPARED = (
    "deep/1ch/network.safetensors",
    "deep/2ch/network.safetensors",
    "predictions.parquet",
    "evaluation/metrics.csv",
    "evaluation/table2.csv",
)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_config(tmp: Path, manifest: Path, name: str, **override: object) -> Path:
    cfg = dict(TINY, data={"manifest": str(manifest)}, output_dir=str(tmp / name), **override)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _radfusion(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m radfusion ARGS`` in a fresh process (the program a user runs)."""
    return subprocess.Popen(
        [sys.executable, "-m", "radfusion", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _finish(proc: subprocess.Popen) -> str:
    output, _ = proc.communicate(timeout=3600)
    assert proc.returncode == 0, output
    return output


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    return generate_cohort(root, n=40, seed=5, prevalence=0.4, image_shape=(96, 128))


@pytest.fixture
def keep_torch_state() -> Iterator[None]:
    state = (
        torch.get_num_threads(),
        torch.backends.mkldnn.enabled,
        torch.backends.mkldnn.deterministic,
    )
    yield
    torch.set_num_threads(state[0])
    torch.backends.mkldnn.enabled, torch.backends.mkldnn.deterministic = state[1:]


def test_strict_environment_holds_every_library_to_avx2_and_the_thread_count() -> None:
    env = strict_environment(3)
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert env["MKL_CBWR"].startswith("COMPATIBLE") and env["OPENBLAS_CORETYPE"] == "Haswell"
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
    assert env["OPENBLAS_NUM_THREADS"] == "1"
    # numpy is told to skip exactly the AVX-512 loops this CPU would otherwise run
    for name in env.get("NPY_DISABLE_CPU_FEATURES", "").split():
        assert name.startswith("AVX512") or name == "X86_V4"


def test_fast_mode_needs_nothing_and_strict_mode_names_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert environment_mismatches(ReproducibilityConfig()) == []
    strict = ReproducibilityConfig(mode="strict", threads=2)
    for key in strict_environment(2):
        monkeypatch.delenv(key, raising=False)
    assert "ATEN_CPU_CAPABILITY=avx2" in environment_mismatches(strict)
    for key, value in strict_environment(2).items():
        monkeypatch.setenv(key, value)
    # torch was loaded before the variables were set: its kernels are this CPU's own
    left = environment_mismatches(strict)
    native = torch.backends.cpu.get_cpu_capability()
    assert left == (
        [] if native == STRICT_ISA else [f"PyTorch kernels {native} (this CPU needs AVX2)"]
    )


def test_numerics_are_restored_after_a_study(keep_torch_state: None) -> None:
    torch.set_num_threads(1)
    torch.backends.mkldnn.deterministic = False
    with reproducible_numerics(ReproducibilityConfig()):
        assert torch.backends.mkldnn.deterministic
    assert torch.get_num_threads() == 1 and not torch.backends.mkldnn.deterministic


def test_strict_study_in_a_process_without_its_environment_is_refused_before_writing(
    cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in strict_environment(2):
        monkeypatch.delenv(key, raising=False)
    cfg = _write_config(tmp_path, cohort, "refused", reproducibility={"mode": "strict"})
    res = runner.invoke(app, ["run", str(cfg)])
    assert res.exit_code == 2, res.output
    assert "reproducibility.mode strict" in res.output and "ATEN_CPU_CAPABILITY" in res.output
    assert not (tmp_path / "refused").exists()


def test_config_env_prints_the_strict_environment_for_python_users(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"preset": "demo", "reproducibility": {"threads": 4}}))
    res = runner.invoke(app, ["config", "env", str(path)])
    assert res.exit_code == 0, res.output
    assert "export ATEN_CPU_CAPABILITY=avx2" in res.output
    assert "export OMP_NUM_THREADS=4" in res.output


def test_strict_is_part_of_the_stage_keys_and_fast_keys_are_unchanged() -> None:
    from radfusion.deep.resume import training_settings

    fast = StudyConfig.from_dict(TINY)
    strict = StudyConfig.from_dict({**TINY, "reproducibility": {"mode": "strict"}})
    assert "reproducibility" not in training_settings(fast, "1ch")
    assert training_settings(strict, "1ch")["reproducibility"]["mode"] == "strict"


@pytest.mark.slow
def test_same_numbers_in_fresh_processes_under_load_and_with_any_n_jobs(
    cohort: Path, tmp_path: Path
) -> None:
    """The in-machine guarantee, byte for byte: an in-process run (after other networks and
    searches ran in this process), a fresh process, and a fresh process with the
    hyperparameter search spread over worker processes while two busy loops load the CPU."""
    one = {"OMP_NUM_THREADS": "1"}  # the test process trains on one thread (below)
    fresh = _radfusion(["run", str(_write_config(tmp_path, cohort, "fresh"))], one)
    _finish(fresh)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        models = {**TINY["models"], "n_jobs": -1}
        loaded = _radfusion(
            ["run", str(_write_config(tmp_path, cohort, "loaded", models=models))], one
        )
        _finish(loaded)
    finally:
        for hog in hogs:
            hog.kill()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # the thread count is part of the result: the fresh runs' one thread, BLAS too
        with threadpool_limits(limits=1):
            res = runner.invoke(app, ["run", str(_write_config(tmp_path, cohort, "inproc"))])
    finally:
        torch.set_num_threads(before)
    assert res.exit_code == 0, res.output
    for rel in COMPARED:
        want = _sha(tmp_path / "fresh" / rel)
        assert _sha(tmp_path / "loaded" / rel) == want, rel
        assert _sha(tmp_path / "inproc" / rel) == want, rel


@pytest.mark.slow
@pytest.mark.skipif(not cpu_has_avx2(), reason="strict mode needs an x86-64 CPU with AVX2")
def test_strict_runs_match_across_emulated_machines(cohort: Path, tmp_path: Path) -> None:
    """Two strict runs started from environments of different machines (an AVX-512 CPU
    with 1 thread per library, an AVX2-only one with 3) restart themselves under the
    same settings and give the same bytes; versions.json records what was in force."""
    strict = {"mode": "strict", "threads": 2}
    machines = {
        "avx512": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        "avx2": {
            "ATEN_CPU_CAPABILITY": "avx2",
            "ONEDNN_MAX_CPU_ISA": "AVX2",
            "OPENBLAS_CORETYPE": "Haswell",
            "OMP_NUM_THREADS": "3",
        },
    }
    for name, env in machines.items():
        # stacking blended on validation: no cross-fitting networks, every kind of numerics
        fusion = {**TINY["fusion"], "stacking": "blend"}
        cfg = _write_config(tmp_path, cohort, name, reproducibility=strict, fusion=fusion)
        clean = {k: v for k, v in os.environ.items() if k not in strict_environment(2)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "radfusion", "run", str(cfg)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**clean, **env},
        )
        _finish(proc)
        compute = json.loads((tmp_path / name / "versions.json").read_text())["compute"]
        assert compute["torch_cpu_capability"] == STRICT_ISA
        assert compute["torch_threads"] == 2 and not compute["onednn_enabled"]
        assert compute["environment"]["MKL_CBWR"] == strict_environment(2)["MKL_CBWR"]
    for rel in COMPARED:
        assert _sha(tmp_path / "avx512" / rel) == _sha(tmp_path / "avx2" / rel), rel
    a = pd.read_parquet(tmp_path / "avx512" / "predictions.parquet")
    assert a["probability"].notna().all()


def test_saved_network_weights_are_the_same_bytes_every_time(tmp_path: Path) -> None:
    # safetensors orders its metadata map by hash (random per map): with more than one
    # entry, identical weights were written in one of two byte orders
    from radfusion.deep import build_resnet
    from radfusion.deep.network import save_weights

    torch.manual_seed(0)
    model = build_resnet(18, 1, num_classes=1)
    digests = set()
    for i in range(8):
        save_weights(model, tmp_path / f"w{i}.safetensors", "1ch_ResNet18")
        digests.add(_sha(tmp_path / f"w{i}.safetensors"))
    assert len(digests) == 1
