"""Same data, config and seed, same numbers: what makes that hold, and where.

Two scopes, chosen with ``reproducibility.mode`` in the study config
(:class:`radfusion.config.ReproducibilityConfig`):

``fast`` (default)
    Bit-identical results on one machine: fresh process or not, idle or loaded, any
    ``models.n_jobs``, an interrupted and resumed run or an uninterrupted one
    (``tests/test_reproducibility.py`` checks each, byte for byte). Every seed is derived
    from the study seed, and oneDNN runs in its deterministic mode
    (``torch.backends.mkldnn.deterministic``). Each library still picks its fastest
    kernels for this CPU, so another CPU (AVX2 instead of AVX-512) or another core count
    (PyTorch uses one thread per core) changes the last digits, which network training
    amplifies into different weights and AUCs.

``strict``
    The same numbers on every x86-64 CPU with AVX2, whatever its vector extensions,
    cache sizes, vendor or core count. Before numpy or torch is loaded
    (:func:`strict_environment`), PyTorch's ATen kernels are held to AVX2
    (``ATEN_CPU_CAPABILITY``), MKL to the conditional-numerical-reproducibility branch
    that is the same on Intel and AMD CPUs (``MKL_CBWR=COMPATIBLE``), OpenBLAS to its
    Haswell kernels (``OPENBLAS_CORETYPE``), numpy's dispatched loops to AVX2
    (``NPY_DISABLE_CPU_FEATURES``), and PyTorch and MKL to ``reproducibility.threads``
    threads. Convolutions run through PyTorch's own kernels (im2col and MKL's
    reproducible GEMM) instead of oneDNN's, whose block sizes follow the CPU's cache
    sizes even at a fixed instruction set. The ``radfusion`` command applies all this
    itself: it restarts once with these variables set (:func:`restart_with`). From
    Python, start the interpreter with them (``radfusion config env study.yaml`` prints
    them); a strict study started without them is refused with that advice.

What the run recorded is in ``versions.json`` (``compute``: :func:`compute_environment`),
and the report's methods section states the scope.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import sys
from collections.abc import Iterator
from typing import Any

from radfusion.config import ReproducibilityConfig
from radfusion.errors import ConfigError

log = logging.getLogger(__name__)

#: The instruction set strict mode holds every library to (any x86-64 CPU since 2013-15).
STRICT_ISA = "AVX2"
#: Set in a process that :func:`restart_with` started, so that it never restarts twice.
_RESTARTED = "RADFUSION_REPRODUCIBILITY_RESTARTED"
#: Thread-count variables of the OpenMP, MKL and OpenBLAS runtimes.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _numpy_cpu_tables() -> tuple[list[str], dict[str, bool]]:
    """numpy's dispatched SIMD targets and which CPU features it may use."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    return list(__cpu_dispatch__), dict(__cpu_features__)


def _numpy_simd() -> list[str]:
    """The dispatched targets numpy runs in this process (disabled ones left out)."""
    dispatch, features = _numpy_cpu_tables()
    return [name for name in dispatch if features.get(name)]


def _numpy_features_above_avx2() -> list[str]:
    """numpy's dispatched SIMD targets beyond AVX2 that this CPU has (AVX-512 families).

    The names depend on the numpy version (``AVX512_SKX`` ... up to 2.2, ``X86_V4`` from
    2.3); naming one numpy does not dispatch, or the CPU lacks, only earns a warning, so
    only those present are listed.
    """
    return [name for name in _numpy_simd() if name.startswith("AVX512") or name == "X86_V4"]


def strict_environment(threads: int) -> dict[str, str]:
    """The environment variables that fix every library's kernels and threads.

    They are read when each library loads, so they must be set before numpy and torch
    are imported (in the environment of the process, and so of its worker processes).

    Parameters
    ----------
    threads : int
        Threads of PyTorch, MKL and OpenMP (``reproducibility.threads``); OpenBLAS
        (numpy, scipy) always gets one.
    """
    env = {
        "ATEN_CPU_CAPABILITY": STRICT_ISA.lower(),
        "ONEDNN_MAX_CPU_ISA": STRICT_ISA,
        "DNNL_MAX_CPU_ISA": STRICT_ISA,  # the name before oneDNN 2.x
        # MKL honours its AVX2 branch on Intel CPUs only (elsewhere it falls back to its
        # CPU-dependent default); COMPATIBLE is the branch that is the same on every x86-64
        # CPU. STRICT: results independent of MKL's thread count, too.
        "MKL_CBWR": "COMPATIBLE,STRICT",
        "MKL_DYNAMIC": "FALSE",
        "OPENBLAS_CORETYPE": "Haswell",  # OpenBLAS's AVX2 kernels
        "OMP_DYNAMIC": "FALSE",
        **dict.fromkeys(_THREAD_VARIABLES, str(threads)),
        # numpy / scipy work is small here; one thread keeps OpenBLAS's sums in one order
        "OPENBLAS_NUM_THREADS": "1",
    }
    numpy_off = _numpy_features_above_avx2()
    if numpy_off:
        env["NPY_DISABLE_CPU_FEATURES"] = " ".join(numpy_off)
    return env


def environment_mismatches(cfg: ReproducibilityConfig) -> list[str]:
    """What in this process differs from ``cfg``'s strict setting (empty: all in place).

    Checks the variables of :func:`strict_environment` and, when torch is already loaded,
    the kernel level it actually runs (a CPU without AVX2 cannot be held to AVX2).
    """
    if cfg.mode != "strict":
        return []
    want = strict_environment(cfg.threads)
    wrong = [f"{key}={value}" for key, value in want.items() if os.environ.get(key) != value]
    torch = sys.modules.get("torch")
    if not wrong and torch is not None:
        capability = torch.backends.cpu.get_cpu_capability()
        if capability != STRICT_ISA:
            wrong.append(f"PyTorch kernels {capability} (this CPU needs {STRICT_ISA})")
    return wrong


def restart_with(cfg: ReproducibilityConfig, argv: list[str]) -> None:
    """Restart this command with the strict environment (returns only when not needed).

    The ``radfusion`` command calls this right after reading the config: in strict mode
    without the variables in place, it replaces the process with ``python -m radfusion
    ARGV`` under them (same arguments, same terminal). A restarted process never
    restarts again; if the variables still do not hold there, the CPU cannot honour them.

    Raises
    ------
    ConfigError
        Strict mode cannot be set up on this machine (no AVX2).
    """
    wrong = environment_mismatches(cfg)
    if not wrong:
        return
    if os.environ.get(_RESTARTED):
        raise ConfigError(
            "reproducibility.mode strict could not be set up on this machine ("
            + "; ".join(wrong)
            + "); it needs an x86-64 CPU with AVX2. Use reproducibility.mode: fast"
        )
    env = {**os.environ, **strict_environment(cfg.threads), _RESTARTED: "1"}
    log.info("strict reproducibility: restarting with %s", strict_environment(cfg.threads))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "radfusion", *argv], env)


@contextlib.contextmanager
def reproducible_numerics(cfg: ReproducibilityConfig) -> Iterator[None]:
    """The process-wide numerical settings of a study, restored afterwards.

    Both modes: oneDNN's deterministic kernels. Strict: the environment is checked
    (:func:`environment_mismatches`), PyTorch uses ``cfg.threads`` threads and
    convolutions bypass oneDNN.

    Raises
    ------
    ConfigError
        Strict mode in a process started without :func:`strict_environment`.
    """
    wrong = environment_mismatches(cfg)
    if wrong:
        variables = " ".join(f"{k}='{v}'" for k, v in strict_environment(cfg.threads).items())
        raise ConfigError(
            "reproducibility.mode strict needs its settings in place before numpy and "
            f"torch are loaded (not so here: {'; '.join(wrong)}). Use the radfusion command "
            f"(it sets them itself), or start Python with: {variables}"
        )
    import torch

    mkldnn = torch.backends.mkldnn
    before = (torch.get_num_threads(), mkldnn.enabled, mkldnn.deterministic)
    mkldnn.deterministic = True
    if cfg.mode == "strict":
        torch.set_num_threads(cfg.threads)
        mkldnn.enabled = False
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        mkldnn.enabled, mkldnn.deterministic = before[1], before[2]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def compute_environment(cfg: ReproducibilityConfig) -> dict[str, Any]:
    """What decides the last digits of this run's numbers (``versions.json`` ``compute``).

    The CPU and the kernel level PyTorch runs, the ISA and thread settings in force, the
    BLAS / OpenMP libraries with their kernels and threads, and the reproducibility mode.
    """
    import torch
    from threadpoolctl import threadpool_info

    from radfusion.utils import usable_cores

    # numpy's variable is listed only while numpy still runs AVX-512 loops: name it always
    variables = sorted(
        {*strict_environment(cfg.threads), "NPY_DISABLE_CPU_FEATURES", "MKL_ENABLE_INSTRUCTIONS"}
    )
    return {
        "reproducibility": cfg.model_dump(mode="json"),
        "cpu": _cpu_model(),
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cores": usable_cores(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "onednn_enabled": bool(torch.backends.mkldnn.enabled),
        "numpy_simd": _numpy_simd(),
        "environment": {k: os.environ[k] for k in variables if k in os.environ},
        "thread_pools": [
            {
                k: info.get(k)
                for k in ("internal_api", "version", "architecture", "num_threads")
                if info.get(k) is not None
            }
            for info in threadpool_info()
        ],
    }


def scope_sentence(cfg: ReproducibilityConfig) -> str:
    """One sentence for the report's methods: what reproduces where."""
    if cfg.mode == "strict":
        return (
            "Numerical reproducibility: strict mode (every library's kernels held to "
            f"{STRICT_ISA} and {cfg.threads} thread(s)); the same data, configuration and "
            "seed give bit-identical results on any x86-64 CPU with AVX2."
        )
    return (
        "Numerical reproducibility: fast mode; the same data, configuration and seed give "
        "bit-identical results on the machine that ran the study, while another CPU type "
        "or core count can change the last digits, and through network training the "
        "reported figures (use reproducibility.mode: strict for results identical on any "
        "x86-64 CPU with AVX2)."
    )
