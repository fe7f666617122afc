"""Executors spread group tasks over processes.  Results never depend on the executor or ``jobs``.

:class:`LocalExecutor` runs tasks in-process (``jobs = 1`` or a single task) or in a pool of forked worker
processes.  Ctrl-C reaches every worker: each flushes its history and marks its runs ``interrupted``; no
queued group starts after it (the pool is fed one task per idle worker, and a stop flag is checked before a
task starts).  A worker whose parent dies (SIGKILL, the out-of-memory killer) notices within a second,
stops its group as Ctrl-C would and exits.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import threading
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
_STOP: Any = None  # a multiprocessing Event the parent sets at Ctrl-C: queued tasks must not start
_PARENT = 0
_ORPHANED = False
PARENT_POLL_SECONDS = 0.5  # how often a worker checks that the process that started it is still there
ORPHAN_GRACE_SECONDS = 30.0  # an orphaned worker's clean-up (flush, mark interrupted) gets this long
_LAST_REPORT = 0.0
REPORT_SECONDS = 0.1  # a worker's progress reports at most this often: a bar needs no more, and a pipe
# that nobody drains any longer (after Ctrl-C) must never fill up with reports


def _on_sigint(signum: int, frame: Any) -> None:
    """In a worker: interrupt the running task once; ignore Ctrl-C while idle or while cleaning up."""
    global _BUSY
    if _BUSY:
        _BUSY = False
        if _ORPHANED:
            raise KeyboardInterrupt(f"interrupted: the expsvc process that started this run (pid {_PARENT}) died")
        raise KeyboardInterrupt


def _worker_init(progress_queue: Any, stop: Any = None) -> None:
    global _QUEUE, _STOP, _PARENT
    _QUEUE, _STOP, _PARENT = progress_queue, stop, os.getppid()
    signal.signal(signal.SIGINT, _on_sigint)
    threading.Thread(target=_watch_parent, name="expsvc-parent-watch", daemon=True).start()


def _watch_parent() -> None:
    """In a worker: once the parent is gone (re-parented), stop the running group like Ctrl-C and exit."""
    global _ORPHANED
    while os.getppid() == _PARENT:
        time.sleep(PARENT_POLL_SECONDS)
    _ORPHANED = True
    if not _BUSY:
        os._exit(0)  # idle: nothing to clean up
    os.kill(os.getpid(), signal.SIGINT)  # the group flushes its history, marks its runs, then _worker_run exits
    time.sleep(ORPHAN_GRACE_SECONDS)
    os._exit(1)  # pragma: no cover - a clean-up that hangs must not keep an orphan alive


def _report(index: int, epochs: int, active: int) -> None:
    global _LAST_REPORT
    now = time.monotonic()
    if _QUEUE is not None and now - _LAST_REPORT >= REPORT_SECONDS:
        _LAST_REPORT = now
        with held_interrupts():  # a Ctrl-C inside put() would leave the queue's feeder thread waiting forever
            _QUEUE.put_nowait((index, epochs, active))


def _worker_run(task: GroupTask) -> GroupOutcome:
    global _BUSY
    _BUSY = True  # before the stop check: a Ctrl-C from here on interrupts this task
    try:
        if _STOP is not None and _STOP.is_set():
            raise KeyboardInterrupt  # Ctrl-C came while this task was queued: it never starts
        return execute_group(task, _report)
    except KeyboardInterrupt:
        if _ORPHANED:
            os._exit(1)  # nobody is left to take the outcome; the runs are marked interrupted
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
        stop = ctx.Event()
        outcomes: dict[int, GroupOutcome] = {}
        workers = min(self.jobs, len(tasks))
        pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=_worker_init, initargs=(progress_queue, stop),
        )
        queued = list(reversed(tasks))
        try:
            pending: set[Future[GroupOutcome]] = set()
            while pending or queued:
                while queued and len(pending) < workers:  # one task per worker: nothing waits inside the pool
                    pending.add(pool.submit(_worker_run, queued.pop()))
                done, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                for fut in done:
                    outcome = fut.result()
                    outcomes[outcome.index] = outcome
                _drain(progress_queue, progress)
            _drain(progress_queue, progress)
        except KeyboardInterrupt:
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                stop.set()  # before the signals: a task a worker has not started yet never starts
                queued.clear()
                procs = list(getattr(pool, "_processes", {}).values())
                for proc in procs:
                    if proc.is_alive() and proc.pid is not None:
                        os.kill(proc.pid, signal.SIGINT)
                pool.shutdown(wait=False, cancel_futures=True)
                while any(proc.is_alive() for proc in procs):  # a worker exits only once its reports are out
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
