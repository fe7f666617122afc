"""History write throughput of a store: ``bench_history_writes(url)`` for the benchmark suite.

``python -m expsvc.store.bench URL [URL ...]`` prints one line per store, e.g. a SQLite file next to a
PostgreSQL database.  The benchmark writes into its own experiment and deletes it afterwards.
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from typing import Any

import numpy as np

from expsvc.store.engine import display_url, parse_url
from expsvc.store.models import Experiment
from expsvc.store.store import NewRun, RunStore


def bench_history_writes(url: str, runs: int = 10, points: int = 1000, repeats: int = 5) -> dict[str, Any]:
    """Time ``append_history`` of ``runs`` x ``points`` values per call (``repeats`` calls); points/s best and median
    (the ``rows_*`` keys count history points: each call stores one chunk row per run)."""
    rng = np.random.default_rng(0)
    name = f"bench-history-{uuid.uuid4().hex[:12]}"
    timings: list[float] = []
    with RunStore.open(url) as store:
        experiment_id = store.get_or_create_experiment(name, "bench_history_writes (deleted afterwards)")
        ids: list[str] = []
        try:
            ids = store.create_runs(experiment_id, [
                NewRun(seed=i, group_key="bench", config={"bench": True}, params={}) for i in range(runs)
            ])
            for rep in range(repeats):
                chunks = [(run_id, rep * points, rng.normal(size=points)) for run_id in ids]
                start = time.perf_counter()
                store.append_history("loss", chunks)
                timings.append(time.perf_counter() - start)
        finally:
            store.delete_runs(ids)  # and their history and summaries (ON DELETE CASCADE)
            with store.session(write=True) as session:
                experiment = session.get(Experiment, experiment_id)
                if experiment is not None:
                    session.delete(experiment)
    rows = runs * points
    best, median = min(timings), statistics.median(timings)
    return {
        "backend": parse_url(url).get_backend_name(),
        "url": display_url(url),
        "runs": runs,
        "points": points,
        "repeats": repeats,
        "rows_per_call": rows,
        "best_seconds": best,
        "median_seconds": median,
        "rows_per_s": rows / best,
        "median_rows_per_s": rows / median,
    }


def main(argv: list[str] | None = None) -> int:
    """Print the history write rate of each store URL given."""
    urls = list(sys.argv[1:] if argv is None else argv)
    if not urls:
        print("usage: python -m expsvc.store.bench URL [URL ...]", file=sys.stderr)
        return 2
    for url in urls:
        r = bench_history_writes(url)
        print(f"{r['backend']:<12} {r['rows_per_call']:>6} points/call  best {r['rows_per_s']:>10,.0f} points/s  "
              f"median {r['median_rows_per_s']:>10,.0f} points/s  ({r['url']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
