"""Section 7: the digits CNN — conv(8,3,p1)-relu-maxpool-conv(16,3,p1)-relu-maxpool-flatten-linear(10),
cross-entropy, AdamW, batch 64, the 1,438 ``digits`` training images (1×8×8) — at 1 thread.

* steps/s of expsvc (``Trainer``, R = 1) against torch CPU eager (``nn.Sequential``, ``CrossEntropyLoss``,
  ``AdamW(foreach=False)``, ``loss.item()`` every step), float32 and float64, in-order batches;
* wall time (build + train) of 5 seeds vectorised (R = 5) against one seed, float32.

Each contender runs in its own worker process started with ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` /
``MKL_NUM_THREADS`` = 1 (and ``torch.set_num_threads(1)``); the parent alternates them repetition by
repetition (see :mod:`benchmarks.widenet`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

from benchmarks.widenet import WorkerProcess

BATCH = 64
LR = 1e-3
DTYPES = ("float32", "float64")


def digits() -> tuple[np.ndarray, np.ndarray]:
    """The ``digits`` training images ``(1438, 1, 8, 8)`` and labels."""
    from expsvc.builtins.datasets import Digits

    split = Digits().load()
    return split.x_train, split.y_train


def expsvc_trainer(dtype: str, seeds: list[int], x: np.ndarray, y: np.ndarray, epochs: int) -> Any:
    """A ready :class:`~expsvc.core.Trainer` for the CNN (AdamW, in-order batches, no early stop)."""
    from expsvc.builtins.activations import ReLU
    from expsvc.builtins.layers import Conv2d, Flatten, Linear, MaxPool2d
    from expsvc.builtins.losses import CrossEntropy
    from expsvc.builtins.optimizers import AdamW
    from expsvc.core import DataSplit, Sequential, Trainer, component_roots, replica_streams

    init, order = replica_streams(seeds)
    model = Sequential([Conv2d(8, 3, padding=1), ReLU(), MaxPool2d(2), Conv2d(16, 3, padding=1), ReLU(),
                        MaxPool2d(2), Flatten(), Linear(10)])
    model.build(x.shape[1:], init, dtype=np.dtype(dtype), random_roots=component_roots(seeds))
    split = DataSplit(x, y, x, y, task="multiclass", classes=10)
    return Trainer(model, CrossEntropy(), AdamW(lr=LR), split, order, epochs=epochs, batch_size=BATCH)


def run_expsvc(dtype: str, x: np.ndarray, y: np.ndarray, epochs: int) -> tuple[float, int]:
    """Seconds of ``Trainer.run`` (R = 1) and steps done."""
    trainer = expsvc_trainer(dtype, [0], x, y, epochs)
    start = time.perf_counter()
    result = trainer.run()
    return time.perf_counter() - start, int(result.updates[0])


def run_seeds(seeds: int, dtype: str, x: np.ndarray, y: np.ndarray, epochs: int) -> tuple[float, int]:
    """Seconds of build + train of ``seeds`` seeds as one vectorised group, and steps done."""
    start = time.perf_counter()
    result = expsvc_trainer(dtype, list(range(seeds)), x, y, epochs).run()
    return time.perf_counter() - start, int(result.updates[0])


def run_torch(dtype: str, x: np.ndarray, y: np.ndarray, epochs: int) -> tuple[float, int]:
    """Seconds of the same training in torch eager and steps done."""
    import torch
    from torch import nn

    from benchmarks.widenet import torch_steps

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                        nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10)).to(getattr(torch, dtype))
    xt, yt = torch.from_numpy(x.astype(dtype)), torch.from_numpy(y)
    return torch_steps(net, [(xt[s : s + BATCH], yt[s : s + BATCH]) for s in range(0, len(x), BATCH)], epochs)


def worker(contender: str) -> None:
    """A worker at 1 thread: reads ``<job> <dtype> <epochs>`` lines (job ``train``, ``seeds5`` or ``seeds1``),
    answers ``{"seconds": ..., "steps": ...}``; an empty line ends it."""
    if contender == "torch eager":
        import torch

        torch.set_num_threads(1)
    x, y = digits()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        job, dtype, epochs = line.split()
        if job == "train":
            seconds, steps = (run_torch if contender == "torch eager" else run_expsvc)(dtype, x, y, int(epochs))
        else:
            seconds, steps = run_seeds(int(job[-1]), dtype, x, y, int(epochs))
        print(json.dumps({"seconds": seconds, "steps": steps}), flush=True)


class Worker(WorkerProcess):
    """A running :func:`worker` subprocess at 1 BLAS/OpenMP thread."""

    def __init__(self, contender: str) -> None:
        super().__init__("benchmarks.digitscnn", ["--worker", contender], threads=1)

    def run(self, job: str, dtype: str, epochs: int) -> dict[str, Any]:
        """``{"seconds", "steps"}`` of one job in the worker."""
        return self.ask(f"{job} {dtype} {epochs}")


def section_digits_cnn(reps: int, epochs: int, with_torch: bool, seed_epochs: int | None = None) -> dict[str, Any]:
    """Section 7: steps/s per dtype and contender, and the 5-seeds-vs-one wall times (float32)."""
    from benchmarks.timing import interleaved

    contenders = ["expsvc"] + (["torch eager"] if with_torch else [])
    workers = {name: Worker(name) for name in contenders}
    out: dict[str, Any] = {"epochs": epochs, "steps_per_epoch": -(-1438 // BATCH), "results": {}}
    try:
        def rate(w: Worker, dtype: str) -> float:
            got = w.run("train", dtype, epochs)
            return got["steps"] / got["seconds"]

        for dtype in DTYPES:
            cases = {name: (lambda w=w, dtype=dtype: rate(w, dtype)) for name, w in workers.items()}
            out["results"][dtype] = interleaved(cases, reps, unit="steps/s", higher=True)
        w = workers["expsvc"]
        n = seed_epochs or epochs
        out["seeds"] = interleaved({"5 seeds vectorised (R=5)": lambda: w.run("seeds5", "float32", n)["seconds"],
                                    "1 seed (R=1)": lambda: w.run("seeds1", "float32", n)["seconds"]},
                                   reps, unit="s")
    finally:
        for w in workers.values():
            w.close()
    return out


def main() -> None:
    """Worker entry point (``--worker CONTENDER``)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", required=True, choices=("expsvc", "torch eager"))
    worker(parser.parse_args().worker)


if __name__ == "__main__":
    main()
