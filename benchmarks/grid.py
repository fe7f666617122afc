"""Section 8: a hyper-parameter grid on the replica axis — 9 learning rates × 5 seeds of the seed net.

AdamW, the 2-5-3-1 tanh net on ``points``, 200 epochs (1,200 steps), no early stopping (``tol = 0``), in-order
batches.  Contenders, each timed from the call to the result (build, train, and for expsvc its store writes):

* **expsvc grid** — ``expsvc.run(optimizer="adamw", lr=<9 values>, seeds=5, tol=0, jobs=1 | 2)`` into a fresh
  copy of a migrated SQLite store: the 45 runs are one structure (R = 45; at ``jobs=2`` split into two tasks).
* **expsvc --group-by-config** — the older grouping: one group per learning rate (9 groups of R = 5), jobs=1.
* **one run** — the same call with one learning rate and one seed (the unit of the ratios).
* **torch eager, sequential** — one run (``nn.Sequential``, ``BCEWithLogitsLoss``, ``AdamW(foreach=False)``,
  ``loss.item()`` every step) timed, times 45 (an estimate: 45 identical runs cost 45 times one).
* **torch eager, stacked** — HFTA-style: the 45 replicas' weights stacked ``(45, out, in)``, the layers as
  ``baddbmm``, the per-replica mean BCE summed, one backward, and one fused AdamW update (torch's op order) over
  a flat ``(45, P)`` parameter tensor with the learning rates as a ``(45, 1)`` tensor; losses kept as a tensor.

The torch contenders run in a fresh ``python`` process per repetition with one thread (torch is never imported
into the benchmark process, whose workers fork); the child times itself, so start-up is not counted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from benchmarks.timing import Stats, interleaved

LRS = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2]
SEEDS = 5
EPOCHS = 200
RUNS = len(LRS) * SEEDS

TORCH_CHILD = textwrap.dedent('''
    import json, sys, time
    import numpy as np
    import torch
    from benchmarks.widenet import torch_steps
    from expsvc.builtins.datasets import Points

    torch.set_num_threads(1)
    mode, epochs, lrs = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    split = Points().load()
    x = torch.from_numpy(np.ascontiguousarray(split.x_train, np.float64))
    y = torch.from_numpy(np.ascontiguousarray(split.y_train, np.float64))
    batches = [(x[s:s + 50], y[s:s + 50]) for s in range(0, len(x), 50)]
    torch.manual_seed(0)
    b1, b2, eps, wd = 0.9, 0.999, 1e-8, 1e-2
    if mode == "sequential":
        net = torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3), torch.nn.Tanh(),
                                  torch.nn.Linear(3, 1)).double()
        opt = torch.optim.AdamW(net.parameters(), lr=lrs[0], weight_decay=wd, foreach=False)
        print(torch_steps(net, batches, epochs, torch.nn.BCEWithLogitsLoss(), opt)[0])
        sys.exit(0)
    r = len(lrs)
    shapes = [(5, 2), (5,), (3, 5), (3,), (1, 3), (1,)]
    sizes = [int(np.prod(s)) for s in shapes]
    flat = torch.empty(r, sum(sizes), dtype=torch.float64)
    with torch.no_grad():
        flat.uniform_(-0.5, 0.5)
    flat.requires_grad_(True)
    m, v = torch.zeros_like(flat), torch.zeros_like(flat)
    lr = torch.tensor(lrs, dtype=torch.float64).reshape(r, 1)
    decay = 1 - lr * wd
    losses = torch.empty(epochs * len(batches), r, dtype=torch.float64)
    xs = [(xb.expand(r, *xb.shape), yb.expand(r, *yb.shape)) for xb, yb in batches]
    t = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in xs:
            parts = torch.split(flat, sizes, dim=1)
            w1, c1, w2, c2, w3, c3 = (p.reshape(r, *s) for p, s in zip(parts, shapes))
            h = torch.tanh(torch.baddbmm(c1.unsqueeze(1), xb, w1.transpose(1, 2)))
            h = torch.tanh(torch.baddbmm(c2.unsqueeze(1), h, w2.transpose(1, 2)))
            z = torch.baddbmm(c3.unsqueeze(1), h, w3.transpose(1, 2))
            per = torch.nn.functional.binary_cross_entropy_with_logits(z, yb, reduction="none").mean(dim=(1, 2))
            if flat.grad is not None:
                flat.grad = None
            per.sum().backward()
            t += 1
            with torch.no_grad():
                g = flat.grad
                flat.mul_(decay)
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v.sqrt() / (1 - b2 ** t) ** 0.5).add_(eps)
                flat.add_((-lr / (1 - b1 ** t)) * m / denom)
                losses[t - 1] = per.detach()
    print(time.perf_counter() - start)
''')


def _torch(mode: str, lrs: list[float]) -> float:
    """Seconds the torch child reports for ``mode`` (``sequential``: one run; ``stacked``: all ``lrs``)."""
    proc = subprocess.run([sys.executable, "-c", TORCH_CHILD, mode, str(EPOCHS), json.dumps(lrs)],
                          capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1],
                          env={**_env(), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    return float(proc.stdout.strip().splitlines()[-1])


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def section_grid(reps: int, with_torch: bool) -> dict[str, Any]:
    """Wall seconds of every contender, interleaved, and the grid's shape."""
    import expsvc
    from expsvc.store import RunStore

    with tempfile.TemporaryDirectory(prefix="expsvc-bench-grid-") as name:
        tmp = Path(name)
        template = tmp / "template.db"
        RunStore.open(f"sqlite:///{template}", create=True).close()
        counter = iter(range(10**6))

        def job(lrs: list[float], seeds: int, **options: Any) -> float:
            path = tmp / f"job-{next(counter)}.db"
            shutil.copyfile(template, path)
            start = time.perf_counter()
            result = expsvc.run(optimizer="adamw", lr=lrs, seeds=seeds, epochs=EPOCHS, tol=0, db=f"sqlite:///{path}",
                                **options)
            seconds = time.perf_counter() - start
            if result.statuses() != {"finished": len(lrs) * seeds}:
                raise RuntimeError(f"grid job did not finish: {result.statuses()}")
            path.unlink()
            return seconds

        cases = {
            "expsvc grid, jobs=1 (R=45)": lambda: job(LRS, SEEDS, jobs=1),
            "expsvc grid, jobs=2 (2 tasks)": lambda: job(LRS, SEEDS, jobs=2),
            "expsvc --group-by-config, jobs=1 (9 × R=5)": lambda: job(LRS, SEEDS, jobs=1, group_by_config=True),
            "one run (R=1)": lambda: job([1e-3], 1, jobs=1),
        }
        if with_torch:
            cases["torch eager sequential (45 × one run, est.)"] = lambda: RUNS * _torch("sequential", [1e-3])
            cases["torch eager stacked (bmm, fused AdamW, lr tensor)"] = lambda: _torch(
                "stacked", [lr for lr in LRS for _ in range(SEEDS)])
        stats: dict[str, Stats] = interleaved(cases, reps, unit="s")
    return {"runs": RUNS, "lrs": LRS, "seeds": SEEDS, "epochs": EPOCHS, "stats": stats}
