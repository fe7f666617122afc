"""The Dask executor: each group task (one configuration, all its seeds vectorised) is one Dask task.

Workers write to the shared store themselves (each task opens its own :class:`RunStore`), so the store
must be reachable from every worker: PostgreSQL for a cluster, a SQLite file only on one machine.  Without
a scheduler address a ``LocalCluster`` of worker processes is started and closed at the end.  A task whose
worker dies is not retried (``distributed.scheduler.allowed-failures: 0``; its partial history is already
written): its runs are marked ``failed`` with the reason, and ``expsvc run --resume`` runs them again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from expsvc.errors import ExpsvcError
from expsvc.runner.execute import GroupOutcome, GroupTask, Progress, RunOutcome, execute_group

DASK_HINT = "pip install 'expsvc[dask]'"
PROGRESS_TOPIC = "expsvc-progress"
PROGRESS_INTERVAL = 0.25  # seconds between progress events of one task
LOST = "dask worker lost"
SCHEDULER_CONFIG = {"distributed.scheduler.allowed-failures": 0}
"""A task whose worker died is not run again by the scheduler: it already wrote part of its history."""


class DaskError(ExpsvcError):
    """A one-line error about the Dask executor (not installed, scheduler unreachable...)."""


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise DaskError(f"--executor dask needs dask.distributed, which is not installed; {DASK_HINT}") from None
    return distributed


def absolute_task(task: GroupTask) -> GroupTask:
    """``task`` with a SQLite path and the plugins folder made absolute (workers may run in another directory)."""
    from expsvc.plugins import default_plugins_dir
    from expsvc.store.engine import parse_url, sqlite_path

    url = task.url
    path = sqlite_path(url)
    if path is not None and not path.is_absolute():
        url = parse_url(url).set(database=str(path.resolve())).render_as_string(hide_password=False)
    folder = Path(task.plugins_dir) if task.plugins_dir is not None else default_plugins_dir()
    return dataclasses.replace(task, url=url, plugins_dir=str(folder.resolve()))


def _failed(task: GroupTask, reason: str) -> GroupOutcome:
    return GroupOutcome(task.index, [
        RunOutcome(run_id, seed, "failed", error=reason) for run_id, seed in zip(task.run_ids, task.seeds, strict=True)
    ])


def run_group_task(task: GroupTask, report: bool = False) -> GroupOutcome:
    """Run one group task on a Dask worker; a second attempt at the same runs (after a lost worker) fails them."""
    from expsvc.store import RunStore

    store = RunStore.open(task.url, create=False, upgrade=False, mark_stale=False)
    try:
        statuses = store.statuses(task.run_ids)
        if any(statuses.get(run_id) != "queued" for run_id in task.run_ids):
            reason = f"{LOST}: the scheduler started this group again after its worker died (history kept)"
            store.mark_unfinished(task.run_ids, "failed", reason)
            return _failed(task, reason)
        return execute_group(task, _progress_events() if report else None, store)
    finally:
        store.close()


def _progress_events() -> Progress:
    """A progress callback that sends (at most every 0.25 s, and at the end) events to the client."""
    from distributed import get_worker

    worker = get_worker()
    last = [0.0]

    def progress(index: int, epochs: int, active: int) -> None:
        now = time.monotonic()
        if active == 0 or now - last[0] >= PROGRESS_INTERVAL:
            last[0] = now
            worker.log_event(PROGRESS_TOPIC, (index, epochs, active))

    return progress


def _probe(address: str, timeout: float) -> None:
    """Check ``[tcp|tls://]host:port`` up front: one line for a malformed address or a refused connection."""
    scheme, _, hostport = address.rpartition("://")
    if scheme not in ("", "tcp", "tls"):
        return  # another transport (ucx, inproc...): let distributed connect
    host, _, port = hostport.rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise DaskError(f"--scheduler: {address!r} is not a scheduler address; expected tcp://host:8786")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise DaskError(f"cannot reach the Dask scheduler at {address}: {err.strerror or err}") from None


class DaskExecutor:
    """Run group tasks on a Dask cluster: the scheduler at ``scheduler``, or a LocalCluster started for the run."""

    def __init__(
        self,
        scheduler: str | None = None,
        *,
        n_workers: int | None = None,
        threads_per_worker: int = 1,
        timeout: float = 10.0,
    ) -> None:
        """Remember where to run; nothing is started until :meth:`start` (or :meth:`run`)."""
        self.scheduler = scheduler
        self.n_workers = n_workers or default_workers()
        self.threads_per_worker = threads_per_worker
        self.timeout = timeout
        self.client: Any = None
        self.cluster: Any = None

    def __enter__(self) -> DaskExecutor:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Connect to the scheduler, or start a LocalCluster of worker processes (one-line DaskError on failure)."""
        if self.client is not None:
            return
        distributed = _import_distributed()
        import dask

        if self.scheduler:
            _probe(self.scheduler, self.timeout)
        with dask.config.set(SCHEDULER_CONFIG):
            try:
                if self.scheduler:
                    self.client = distributed.Client(self.scheduler, timeout=self.timeout, set_as_default=False)
                else:
                    self.cluster = distributed.LocalCluster(
                        n_workers=self.n_workers, threads_per_worker=self.threads_per_worker, processes=True,
                        dashboard_address=None, silence_logs=logging.CRITICAL,
                    )
                    self.client = distributed.Client(self.cluster, set_as_default=False)
            except (OSError, TimeoutError, ValueError) as err:
                self.close()
                where = self.scheduler or "a LocalCluster"
                raise DaskError(f"cannot reach the Dask scheduler at {where}: {_first_line(err)}") from None

    def close(self) -> None:
        """Disconnect, and shut down the LocalCluster if this executor started it."""
        client, cluster = self.client, self.cluster
        self.client = self.cluster = None
        if client is not None:
            with contextlib.suppress(Exception):  # already gone
                client.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()

    def run(self, tasks: Sequence[GroupTask], progress: Progress | None = None) -> list[GroupOutcome]:
        """Submit every task, collect outcomes in task order; a lost worker fails its task's runs."""
        if not tasks:
            return []
        started_here = self.client is None
        self.start()
        try:
            return self._run(tasks, progress)
        finally:
            if started_here:
                self.close()

    def _run(self, tasks: Sequence[GroupTask], progress: Progress | None) -> list[GroupOutcome]:
        distributed = _import_distributed()
        client = self.client
        prepared = [absolute_task(task) for task in tasks]
        if progress is not None:
            client.subscribe_topic(PROGRESS_TOPIC, lambda event: progress(*event[1]))
        token = uuid.uuid4().hex[:8]
        futures = {
            client.submit(run_group_task, task, progress is not None, key=f"expsvc-group-{token}-{task.index}",
                          pure=False, retries=0): task
            for task in prepared
        }
        outcomes: dict[int, GroupOutcome] = {}
        try:
            for future in distributed.as_completed(list(futures), loop=client.loop):
                task = futures[future]
                try:
                    outcome = future.result()
                except Exception as err:  # the worker died, or the task could not even start
                    outcome = self._lost(task, err)
                outcomes[task.index] = outcome
        except KeyboardInterrupt:
            self._never_start([task for task in prepared if task.index not in outcomes])
            client.cancel(list(futures), force=True)
            if self.cluster is not None:
                self.close()  # stop our own workers before the caller marks their runs interrupted
            raise
        finally:
            if progress is not None:
                with contextlib.suppress(Exception):
                    client.unsubscribe_topic(PROGRESS_TOPIC)
        return [outcomes[task.index] for task in tasks]

    @staticmethod
    def _never_start(tasks: Sequence[GroupTask]) -> None:
        """At Ctrl-C: mark the still-queued runs interrupted first, so a task a worker picks up late finds them
        no longer queued and never trains (cancelling is asynchronous)."""
        from expsvc.store import RunStore

        if not tasks:
            return
        store = RunStore.open(tasks[0].url, create=False, upgrade=False, mark_stale=False)
        try:
            store.mark_unfinished([run_id for task in tasks for run_id in task.run_ids], "interrupted",
                                  "interrupted by the user (Ctrl-C) before it started", only=("queued",))
        finally:
            store.close()

    def _lost(self, task: GroupTask, err: BaseException) -> GroupOutcome:
        """Mark a task's unfinished runs failed with the reason (its flushed history is kept)."""
        from expsvc.store import RunStore

        killed = type(err).__name__ == "KilledWorker"
        if killed:
            worker = getattr(getattr(err, "last_worker", None), "address", None) or "unknown"
            reason = f"{LOST}: worker {worker} died while training this group; its history up to then is kept"
        else:
            reason = f"dask task failed: {type(err).__name__}: {_first_line(err)}"
        store = RunStore.open(task.url, create=False, upgrade=False, mark_stale=False)
        try:
            store.mark_unfinished(task.run_ids, "failed", reason)
        finally:
            store.close()
        return _failed(task, reason)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def default_workers() -> int:
    """LocalCluster workers: the number of cores (at least 1)."""
    return max(1, os.cpu_count() or 1)
