"""A description of the machine and software a benchmark run measured (recorded with every result).

Only versions and hardware facts: no paths, host names or user names.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import subprocess
import sys
import time
from multiprocessing import Process
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_details() -> dict[str, Any]:
    """Family/model/stepping and the SIMD flags that matter for BLAS (from ``/proc/cpuinfo``)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" in line:
                key, value = (part.strip() for part in line.split(":", 1))
                fields.setdefault(key, value)
    except OSError:
        return {}
    flags = set(fields.get("flags", "").split())
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile")
    return {
        "family": fields.get("cpu family"), "model": fields.get("model"), "stepping": fields.get("stepping"),
        "simd": [f for f in wanted if f in flags], "hypervisor": "hypervisor" in flags,
    }


def cpu_count() -> dict[str, int | None]:
    """Logical CPUs, and those this process may use."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = None
    return {"logical": os.cpu_count(), "usable": usable}


def openblas_core() -> str | None:
    """The kernel family numpy's OpenBLAS picked at run time (e.g. ``SkylakeX``), if it is OpenBLAS."""
    import numpy as np

    libs = Path(np.__file__).parent.parent / "numpy.libs"
    for lib_path in sorted(libs.glob("*openblas*")) if libs.is_dir() else []:
        try:
            lib = ctypes.CDLL(str(lib_path))
        except OSError:
            continue
        for name in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename64_",
                     "openblas_get_corename"):
            func = getattr(lib, name, None)
            if func is not None:
                func.restype = ctypes.c_char_p
                return func().decode()
    return None


def numpy_blas() -> dict[str, Any]:
    """numpy's version and the BLAS it was built against (name, version, build options)."""
    import numpy as np

    info: dict[str, Any] = {"numpy": np.__version__}
    try:
        config = np.show_config(mode="dicts")  # numpy >= 1.25
        blas = config.get("Build Dependencies", {}).get("blas", {})
        info.update(blas=blas.get("name"), blas_version=blas.get("version"),
                    blas_config=" ".join(str(blas.get("openblas configuration", "")).split()) or None)
    except Exception:  # pragma: no cover - older numpy
        pass
    info["blas_core"] = openblas_core()
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [
            {k: lib.get(k) for k in ("internal_api", "version", "num_threads", "architecture", "threading_layer")}
            for lib in threadpool_info()
        ]
    except ImportError:
        info["threadpools"] = "threadpoolctl not installed"
    return info


def torch_info() -> dict[str, Any] | None:
    """torch's version and its CPU capability / BLAS, or ``None`` when torch is not importable."""
    try:
        import torch
    except ImportError:
        return None
    out: dict[str, Any] = {"torch": torch.__version__, "threads_default": torch.get_num_threads()}
    with contextlib.suppress(AttributeError):
        out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    out["mkl"] = bool(torch.backends.mkl.is_available())
    return out


def git_commit() -> dict[str, Any]:
    """The checked-out commit and whether the work tree has uncommitted changes to tracked files."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
        return {"commit": commit, "short": commit[:8], "dirty": dirty}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "short": "unknown", "dirty": None}


def _spin(n: int) -> None:
    total = 0
    for i in range(n):
        total += i


def parallel_capacity(n: int = 1_000_000) -> float:
    """How many CPUs were free while measuring: the time of one busy process over the time each of two
    concurrent ones took (≈ 2 on an idle 2-core machine, ≈ 1 if another workload holds a core)."""
    def wall(k: int) -> float:
        procs = [Process(target=_spin, args=(n,)) for _ in range(k)]
        start = time.perf_counter()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        return time.perf_counter() - start

    one = min(wall(1) for _ in range(2))
    two = min(wall(2) for _ in range(2))
    return round(2 * one / two, 2)


def describe() -> dict[str, Any]:
    """Everything above, plus Python, the OS, and the BLAS-related environment variables in effect."""
    env_keys = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                "MKL_NUM_THREADS")
    return {
        "cpu": cpu_model(),
        "cpu_details": cpu_details(),
        "cpus": cpu_count(),
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        **numpy_blas(),
        "torch": torch_info(),
        "env": {k: os.environ[k] for k in env_keys if k in os.environ},
        "git": git_commit(),
        "parallel_capacity": parallel_capacity(),
    }
