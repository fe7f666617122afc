"""Section 3: the wide net — 784-256-256-10 relu, cross-entropy, batch 128, AdamW — float32 and float64 on
random data, expsvc against torch CPU eager, at 1 and 2 threads.

BLAS threads are fixed per process, so every (contender, thread count) runs in its own worker subprocess
(``python -m benchmarks.widenet --worker ...``) with ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` /
``MKL_NUM_THREADS`` set to ``N`` before numpy loads (threadpoolctl, when installed, only reports what runs)
and ``torch.set_num_threads(N)``.  Separate processes also keep one library's spinning idle threads from
stealing the cores of the other.  The parent alternates the workers repetition by repetition.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

SIZES = (784, 256, 256, 10)
BATCH = 128
LR = 1e-3
DTYPES = ("float32", "float64")


def random_data(n: int, dtype: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``x (n, 784)`` standard normal in ``dtype``, ``y (n,)`` int64 class indices in ``[0, 10)``."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, SIZES[0])).astype(dtype), rng.integers(0, SIZES[-1], size=n)


def run_expsvc(dtype: str, x: np.ndarray, y: np.ndarray, epochs: int) -> tuple[float, int]:
    """Seconds of ``Trainer.run`` (R = 1, AdamW, in-order batches) and steps done."""
    from expsvc.builtins.activations import ReLU
    from expsvc.builtins.layers import Linear
    from expsvc.builtins.losses import CrossEntropy
    from expsvc.builtins.optimizers import AdamW
    from expsvc.core import DataSplit, Sequential, Trainer, replica_streams

    init, order = replica_streams([0])
    model = Sequential([Linear(SIZES[1]), ReLU(), Linear(SIZES[2]), ReLU(), Linear(SIZES[3])])
    model.build(SIZES[0], init, dtype=np.dtype(dtype))
    split = DataSplit(x, y, x, y, task="multiclass", classes=SIZES[-1])
    trainer = Trainer(model, CrossEntropy(), AdamW(lr=LR), split, order, epochs=epochs, batch_size=BATCH)
    start = time.perf_counter()
    result = trainer.run()
    return time.perf_counter() - start, int(result.updates[0])


def run_torch(dtype: str, x: np.ndarray, y: np.ndarray, epochs: int) -> tuple[float, int]:
    """Seconds of the same training in torch eager (``foreach=False``) and steps done."""
    import torch

    torch.manual_seed(0)
    tdtype = getattr(torch, dtype)
    net = torch.nn.Sequential(
        torch.nn.Linear(SIZES[0], SIZES[1]), torch.nn.ReLU(), torch.nn.Linear(SIZES[1], SIZES[2]), torch.nn.ReLU(),
        torch.nn.Linear(SIZES[2], SIZES[3]),
    ).to(tdtype)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return torch_steps(net, [(xt[s : s + BATCH], yt[s : s + BATCH]) for s in range(0, len(x), BATCH)], epochs)


def torch_steps(net: Any, batches: list[tuple[Any, Any]], epochs: int, loss_fn: Any = None,
                opt: Any = None) -> tuple[float, int]:
    """Seconds of ``epochs`` passes of torch eager training over ``batches`` and steps done: ``loss.item()``
    every step, as the engine records every loss.  The one torch training loop of the benchmarks; by
    default cross-entropy and AdamW at ``LR`` with ``foreach=False``."""
    import torch

    loss_fn = loss_fn if loss_fn is not None else torch.nn.CrossEntropyLoss()
    opt = opt if opt is not None else torch.optim.AdamW(net.parameters(), lr=LR, foreach=False)
    losses = [0.0] * (epochs * len(batches))
    t = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in batches:
            opt.zero_grad()
            loss = loss_fn(net(xb), yb)
            loss.backward()
            opt.step()
            losses[t] = loss.item()
            t += 1
    return time.perf_counter() - start, t


def blas_info() -> list[dict[str, Any]]:
    """threadpoolctl's view of the loaded BLAS/OpenMP libraries (empty when threadpoolctl is absent)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keys = ("internal_api", "version", "num_threads", "threading_layer", "architecture", "prefix")
    return [{k: lib.get(k) for k in keys} for lib in threadpool_info()]


RUNNERS = {"expsvc": run_expsvc, "torch eager": run_torch}


def worker(contender: str, threads: int, n: int) -> None:
    """A worker process for one contender at a fixed thread count: reads ``<dtype> <epochs>`` lines on stdin,
    trains, answers one JSON line ``{"steps_per_s": ...}``; an empty line ends it."""
    if contender == "torch eager":
        import torch

        torch.set_num_threads(threads)
    data = {dtype: random_data(n, dtype) for dtype in DTYPES}
    print(json.dumps({"ready": True, "blas": blas_info()}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        dtype, epochs = line.split()
        seconds, steps = RUNNERS[contender](dtype, *data[dtype], int(epochs))
        print(json.dumps({"steps_per_s": steps / seconds}), flush=True)


class WorkerProcess:
    """A worker subprocess ``python -m MODULE ARGS`` with ``threads`` BLAS/OpenMP threads, spoken to in lines:
    one JSON line of greeting (``hello``), then one JSON answer per request line; an empty line ends it."""

    def __init__(self, module: str, args: list[str], threads: int) -> None:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
               "MKL_NUM_THREADS": str(threads)}
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.module = module
        self.proc = subprocess.Popen([sys.executable, "-m", module, *args], env=env, cwd=root,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.hello = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.module} worker exited with {self.proc.wait()}")
        return json.loads(line)

    def ask(self, request: str) -> dict[str, Any]:
        """Send one request line; return the worker's JSON answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(request + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        """End the worker (empty line, then wait)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


class Worker(WorkerProcess):
    """A running :func:`worker` subprocess."""

    def __init__(self, contender: str, threads: int, n: int) -> None:
        super().__init__("benchmarks.widenet", ["--worker", contender, "--threads", str(threads), "--n", str(n)],
                         threads)

    def run(self, dtype: str, epochs: int) -> float:
        """Steps per second of one training run in the worker."""
        return float(self.ask(f"{dtype} {epochs}")["steps_per_s"])


def section_wide_net(
    reps: int, n: int, epochs: int, with_torch: bool, threads: tuple[int, ...] = (1, 2), settle: float = 0.2
) -> dict[str, Any]:
    """Section 3: per thread count, one worker process per contender (so neither library's idle BLAS/OpenMP
    threads spin against the other's), alternating repetition by repetition; ``settle`` seconds of pause
    between runs let the previous worker's threads go idle.  Returns steps/s by thread count, dtype and
    contender."""
    from benchmarks.machine import parallel_capacity
    from benchmarks.timing import interleaved

    contenders = ["expsvc"] + (["torch eager"] if with_torch else [])
    out: dict[str, Any] = {"n": n, "epochs": epochs, "steps_per_epoch": -(-n // BATCH), "threads": {},
                           "free_cpus_before": parallel_capacity()}
    for k in threads:
        workers = {name: Worker(name, k, n) for name in contenders}
        try:
            per_dtype: dict[str, Any] = {}
            for dtype in DTYPES:
                def case(w: Worker, dtype: str = dtype) -> float:
                    time.sleep(settle)
                    return w.run(dtype, epochs)

                cases = {name: (lambda w=w: case(w)) for name, w in workers.items()}
                per_dtype[dtype] = interleaved(cases, reps, unit="steps/s", higher=True)
            out["threads"][str(k)] = {"blas": workers["expsvc"].hello.get("blas", []), "results": per_dtype}
        finally:
            for w in workers.values():
                w.close()
    out["free_cpus_after"] = parallel_capacity()
    return out


def main() -> None:
    """Worker entry point (``--worker CONTENDER --threads N --n N``)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", required=True, choices=sorted(RUNNERS))
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--n", type=int, default=1280)
    args = parser.parse_args()
    worker(args.worker, args.threads, args.n)


if __name__ == "__main__":
    main()
