"""Section 10: what per-epoch evaluation costs — the default job with ``--eval-every 1 --val-split 0.2``.

Three contenders, side by side (interleaved rounds):

* **no evaluation** — the default job as it is (``expsvc run --opt mini_bgd --opt adamw --seeds 5``).
* **--val-split 0.2** — the same with a fifth of the training rows held out (less training work; evaluated
  once at the end on train, validation and test).
* **--eval-every 1 --val-split 0.2** — evaluated after every epoch on the three splits (loss and the four
  binary metrics each, all replicas at once), the points stored as histories by epoch.

Measured twice: as a user meets it, ``expsvc run ... -q`` in a fresh subprocess and empty directory (wall time
including start-up: the figure of target E1), and in-process through ``expsvc.run`` into a fresh copy of a
migrated store (training, evaluation and store writes without the start-up: E2, the stricter ratio).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from benchmarks.cli import default_job_subprocess
from benchmarks.timing import interleaved
from benchmarks.tracking import default_job, fresh_stores

FLAGS: dict[str, tuple[str, ...]] = {
    "no evaluation": (),
    "--val-split 0.2": ("--val-split", "0.2"),
    "--eval-every 1 --val-split 0.2": ("--eval-every", "1", "--val-split", "0.2"),
}
VALUES: dict[str, dict[str, Any]] = {
    "no evaluation": {}, "--val-split 0.2": {"val_split": 0.2},
    "--eval-every 1 --val-split 0.2": {"eval_every": 1, "val_split": 0.2},
}


def section_evaluation(reps: int, warmup: bool = True) -> dict[str, Any]:
    """Wall seconds of the default job with and without per-epoch evaluation, by subprocess and in-process."""
    with tempfile.TemporaryDirectory(prefix="expsvc-bench-") as name:
        tmp = Path(name)
        fresh = fresh_stores(tmp)
        counter = iter(range(10**6))

        def command(flags: tuple[str, ...]) -> float:
            return default_job_subprocess(tmp / f"cli-{next(counter)}", flags)["seconds"]

        cli = interleaved({k: lambda f=f: command(f) for k, f in FLAGS.items()}, reps, unit="s", warmup=warmup)
        inproc = interleaved({k: lambda v=v: default_job(fresh(), 1, **v) for k, v in VALUES.items()}, reps,
                             unit="s")
    return {"subprocess": cli, "in-process": inproc}
