"""Sections 5 and 6: the command line as a user meets it, each command a fresh subprocess.

5. ``expsvc --help`` and ``expsvc runs`` start-up wall time; the default job
   (``expsvc run --opt mini_bgd --opt adamw --seeds 5 -q`` in an empty temporary directory) — its wall time
   including start-up and its peak resident memory (the largest ``ru_maxrss`` among the processes of the
   job, read with ``getrusage(RUSAGE_CHILDREN)`` in a fresh helper process that only runs the job).
6. ``expsvc compare`` and ``expsvc runs`` on a store of 1,000 runs × 1,000 loss steps, built once with
   :func:`tests.store_fixtures.populate_benchmark` and cached under the temporary directory (keyed by the
   schema revision).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.timing import Stats, interleaved

CACHE = Path(tempfile.gettempdir()) / "expsvc-benchmarks"


def expsvc_command() -> list[str]:
    """How to start the CLI: the ``expsvc`` script next to this Python if present, else ``python -m expsvc``."""
    script = Path(sys.executable).with_name("expsvc")
    return [str(script)] if script.exists() else [sys.executable, "-m", "expsvc"]


def _env() -> dict[str, str]:
    """The environment of the CLI subprocesses: ours, without a store URL that would redirect them."""
    env = dict(os.environ)
    env.pop("EXPSVC_DB", None)
    return env


def run_cli(args: list[str], cwd: Path) -> float:
    """Wall seconds of one CLI invocation (output discarded; a non-zero exit is an error)."""
    start = time.perf_counter()
    proc = subprocess.run([*expsvc_command(), *args], cwd=cwd, env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"expsvc {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return seconds


_RSS_HELPER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
seconds = time.perf_counter() - start
print(json.dumps({"code": code, "seconds": seconds,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def default_job_subprocess(workdir: Path, extra: tuple[str, ...] = ()) -> dict[str, float]:
    """One default job in a fresh, empty ``workdir``: ``{"seconds": wall incl. start-up, "rss_mb": peak}``;
    ``extra`` flags are added to its command line (section 10: ``--eval-every 1 --val-split 0.2``)."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    cmd = [sys.executable, "-c", _RSS_HELPER, *expsvc_command(), "run", "--opt", "mini_bgd", "--opt", "adamw",
           "--seeds", "5", "-q", *extra]
    proc = subprocess.run(cmd, cwd=workdir, env=_env(), capture_output=True, text=True, check=True)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    if got["code"] != 0:
        raise RuntimeError(f"the default job failed with exit code {got['code']}")
    return {"seconds": got["seconds"], "rss_mb": got["maxrss_kib"] / 1024}  # Linux reports KiB


def section_startup(reps: int, warmup: bool = True) -> dict[str, Any]:
    """Section 5: ``--help`` and ``runs`` start-up; the default job's wall time and peak RSS."""
    with tempfile.TemporaryDirectory(prefix="expsvc-bench-") as name:
        tmp = Path(name)
        jobs: list[dict[str, float]] = []

        def job() -> float:
            got = default_job_subprocess(tmp / f"job{len(jobs)}")
            jobs.append(got)
            return got["seconds"]

        job()  # also leaves a store with the 10 runs of one default job for `expsvc runs`
        small = tmp / "job0"
        cases = {
            "expsvc --help": lambda: run_cli(["--help"], tmp),
            "expsvc runs (10 runs)": lambda: run_cli(["runs"], small),
            "default job (subprocess)": job,
        }
        stats = interleaved(cases, reps, unit="s", warmup=warmup)
        rss = Stats([j["rss_mb"] for j in jobs[-reps:]], "MB")
        return {**stats, "default job peak RSS": rss}


def revision() -> str:
    """The store schema's current revision (the cache key of the big database)."""
    from expsvc.store import RunStore

    CACHE.mkdir(parents=True, exist_ok=True)
    probe = CACHE / "revision-probe.db"
    probe.unlink(missing_ok=True)
    with RunStore.open(f"sqlite:///{probe}", create=True) as store:
        rev = store.current_revision() or "none"
    probe.unlink(missing_ok=True)
    return rev


def big_store(runs: int = 1000, steps: int = 1000) -> tuple[Path, float | None]:
    """The cached ``runs × steps`` store (built if missing): its path and the build time (``None`` if cached)."""
    from tests.store_fixtures import create_db, populate_benchmark

    path = CACHE / f"store-{runs}x{steps}-{revision()}.db"
    if path.exists():
        return path, None
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    start = time.perf_counter()
    engine = create_db(f"sqlite:///{partial}")
    try:
        populate_benchmark(engine, runs=runs, steps=steps)
    finally:
        engine.dispose()
    partial.rename(path)
    return path, time.perf_counter() - start


def section_big_store(reps: int, runs: int = 1000, steps: int = 1000, warmup: bool = True) -> dict[str, Any]:
    """Section 6: ``expsvc compare`` and ``expsvc runs`` on the big store (fresh subprocess each)."""
    path, built = big_store(runs, steps)
    url = f"sqlite:///{path}"
    with tempfile.TemporaryDirectory(prefix="expsvc-bench-") as name:
        cwd = Path(name)
        cases = {
            "expsvc compare": lambda: run_cli(["compare", "--db", url], cwd),
            "expsvc runs": lambda: run_cli(["runs", "--db", url], cwd),
        }
        stats = interleaved(cases, reps, unit="s", warmup=warmup)
    return {"runs": runs, "steps": steps, "build_seconds": built, "stats": stats}
