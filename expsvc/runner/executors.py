"""Executors spread group tasks over processes.  Results never depend on the executor or ``jobs``.

:class:`LocalExecutor` runs tasks in-process (``jobs = 1`` or a single task) or in a pool of forked worker
processes.  Ctrl-C reaches every worker: each flushes its history and marks its runs ``interrupted``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Protocol

from expsvc.errors import ExpsvcError, did_you_mean
from expsvc.runner.execute import GroupOutcome, GroupTask, Progress, RunOutcome, execute_group, held_interrupts

EXECUTORS = ("local", "dask")


class Executor(Protocol):
    """Runs group tasks and returns their outcomes in task order."""

    def run(self, tasks: Sequence[GroupTask], progress: Progress | None = None) -> list[GroupOutcome]: ...


_BUSY = False
_QUEUE: Any = None
_LAST_REPORT = 0.0
REPORT_SECONDS = 0.1  # a worker's progress reports at most this often: a bar needs no more, and a pipe
# that nobody drains any longer (after Ctrl-C) must never fill up with reports


def _on_sigint(signum: int, frame: Any) -> None:
    """In a worker: interrupt the running task once; ignore Ctrl-C while idle or while cleaning up."""
    global _BUSY
    if _BUSY:
        _BUSY = False
        raise KeyboardInterrupt


def _worker_init(progress_queue: Any) -> None:
    global _QUEUE
    _QUEUE = progress_queue
    signal.signal(signal.SIGINT, _on_sigint)


def _report(index: int, epochs: int, active: int) -> None:
    global _LAST_REPORT
    now = time.monotonic()
    if _QUEUE is not None and now - _LAST_REPORT >= REPORT_SECONDS:
        _LAST_REPORT = now
        with held_interrupts():  # a Ctrl-C inside put() would leave the queue's feeder thread waiting forever
            _QUEUE.put_nowait((index, epochs, active))


def _worker_run(task: GroupTask) -> GroupOutcome:
    global _BUSY
    _BUSY = True
    try:
        return execute_group(task, _report)
    except KeyboardInterrupt:
        return GroupOutcome(task.index, [
            RunOutcome(run_id, seed, "interrupted") for run_id, seed in zip(task.run_ids, task.seeds, strict=True)
        ])
    finally:
        _BUSY = False


class LocalExecutor:
    """Run tasks on this machine with up to ``jobs`` worker processes (default: the number of cores)."""

    def __init__(self, jobs: int | None = None) -> None:
        self.jobs = max(1, jobs or os.cpu_count() or 1)

    def run(self, tasks: Sequence[GroupTask], progress: Progress | None = None) -> list[GroupOutcome]:
        if not tasks:
            return []
        if self.jobs == 1 or len(tasks) <= 1:
            from expsvc.store import RunStore

            with RunStore.open(tasks[0].url, create=False, upgrade=False, mark_stale=False) as store:
                return [execute_group(t, progress, store) for t in tasks]  # one engine for all the groups
        ctx = mp.get_context("fork")
        progress_queue = ctx.Queue()
        outcomes: dict[int, GroupOutcome] = {}
        pool = ProcessPoolExecutor(
            max_workers=min(self.jobs, len(tasks)), mp_context=ctx, initializer=_worker_init,
            initargs=(progress_queue,),
        )
        try:
            pending: set[Future[GroupOutcome]] = {pool.submit(_worker_run, t) for t in tasks}
            while pending:
                done, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                for fut in done:
                    outcome = fut.result()
                    outcomes[outcome.index] = outcome
                _drain(progress_queue, progress)
            _drain(progress_queue, progress)
        except KeyboardInterrupt:
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                workers = list(getattr(pool, "_processes", {}).values())
                for proc in workers:
                    if proc.is_alive() and proc.pid is not None:
                        os.kill(proc.pid, signal.SIGINT)
                pool.shutdown(wait=False, cancel_futures=True)
                while any(proc.is_alive() for proc in workers):  # a worker exits only once its reports are out
                    _drain(progress_queue, None)
                    time.sleep(0.02)
                pool.shutdown(wait=True)
            finally:
                signal.signal(signal.SIGINT, previous)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return [outcomes[t.index] for t in tasks]


def _drain(progress_queue: Any, progress: Progress | None) -> None:
    while True:
        try:
            item = progress_queue.get_nowait()
        except queue.Empty:
            return
        if progress is not None:
            progress(*item)


def make_executor(name: str = "local", *, jobs: int | None = None, scheduler: str | None = None) -> Executor:
    """The executor called ``name``: ``local`` (``jobs`` processes) or ``dask`` (``scheduler``, else a LocalCluster)."""
    if name not in EXECUTORS:
        raise ExpsvcError(f"unknown executor {name!r}{did_you_mean(name, EXECUTORS)}; allowed: {', '.join(EXECUTORS)}")
    if name == "local":
        if scheduler:
            raise ExpsvcError("a scheduler address needs the dask executor (--executor dask --scheduler ADDRESS)")
        return LocalExecutor(jobs)
    from expsvc.runner.dask import DaskExecutor

    return DaskExecutor(scheduler, n_workers=jobs)
