"""Execute one group (grid points x seeds of one structure) and record it in the store.

This is what an executor runs, in-process or in a worker: build the components, train the replicas as one
vectorised computation, flush the loss history in batches while training, then write metrics, final
parameters and an honest status per run.  An exception marks the group's unfinished runs ``failed`` with
the traceback; Ctrl-C marks them ``interrupted``.  Flushed history is never lost either way.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from expsvc.core import SplitEvaluator, Trainer, TrainHooks
from expsvc.core.train import Evaluation
from expsvc.errors import ExpsvcError
from expsvc.plugins import PluginSystem, get_system
from expsvc.registry import Part, blame, describe_exception
from expsvc.runner.build import Components, build
from expsvc.runner.spec import RunConfig
from expsvc.store import history as _history  # noqa: F401  (loaded here, before workers fork, not in each)
from expsvc.store.vocab import LOSS_KEY, SECONDS_KEY, eval_key

Progress = Callable[[int, int, int], None]
"""``progress(group_index, epochs_done, active_replicas)``."""


@dataclass(frozen=True)
class GroupTask:
    """One unit of work for an executor: rows (replicas) of one structure, their seeds and run ids.

    ``configs`` holds each row's configuration when the rows are grid points (they differ only in numeric
    optimizer and schedule arguments); empty, every row is ``config``."""

    index: int
    url: str
    config: RunConfig
    seeds: tuple[int, ...]
    run_ids: tuple[str, ...]
    plugins_dir: str | None = None
    configs: tuple[RunConfig, ...] = ()

    def row_configs(self) -> tuple[RunConfig, ...]:
        return self.configs or (self.config,) * len(self.seeds)


@dataclass
class RunOutcome:
    """What one run of a group ended with; ``final_loss`` is the full-training-set loss with the final
    parameters (the ``train_loss`` summary, compare's "final loss"), not the last minibatch's."""

    run_id: str
    seed: int
    status: str
    updates: int | None = None
    final_loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None


@dataclass
class GroupOutcome:
    index: int
    runs: list[RunOutcome]


@contextlib.contextmanager
def held_interrupts() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the enclosed store writes are done; it is raised right after.

    A KeyboardInterrupt in the middle of a write can leave a connection checked out with its transaction
    (and SQLite's write lock) open; the clean-up that follows would then wait on that lock, which nobody
    releases.  Only the main thread receives signals, so elsewhere (Dask worker threads) this is a no-op.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@dataclass
class _Evaluations:
    """Evaluations (``--eval-every``) waiting to be written: per evaluation, each row's epoch and seconds, the
    rows it holds (a mask) and the values by stored key.  Rows of one evaluation may carry different epochs
    (the final evaluation: each replica at the epoch it stopped)."""

    epochs: list[np.ndarray] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)
    values: list[dict[str, np.ndarray]] = field(default_factory=list)
    done: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Per row, the last epoch evaluated (0: none yet)."""

    def add(self, epochs: np.ndarray, rows: np.ndarray, seconds: np.ndarray, values: Evaluation) -> None:
        keyed = {eval_key(split, name): np.asarray(v, dtype=np.float64)
                 for split, metrics in values.items() for name, v in metrics.items()}
        keyed[SECONDS_KEY] = np.asarray(seconds, dtype=np.float64)
        self.epochs.append(np.asarray(epochs, dtype=np.int64))
        self.rows.append(np.asarray(rows, dtype=bool))
        self.values.append(keyed)
        self.done = np.where(rows, epochs, self.done)

    def chunks(self, run_ids: Sequence[str]) -> dict[str, list[tuple[str, int, np.ndarray]]]:
        """The pending points as history chunks by key (a chunk per run of consecutive epochs), then empty."""
        if not self.epochs:
            return {}
        epochs, rows = np.stack(self.epochs), np.stack(self.rows)  # (E, R)
        out: dict[str, list[tuple[str, int, np.ndarray]]] = {}
        for key in self.values[0]:
            values = np.stack([v[key] for v in self.values])
            for r, run_id in enumerate(run_ids):
                eps, vals = epochs[rows[:, r], r], values[rows[:, r], r]
                if not eps.size:
                    continue
                breaks = np.flatnonzero(np.diff(eps) != 1) + 1
                for part_eps, part_vals in zip(np.split(eps, breaks), np.split(vals, breaks), strict=True):
                    out.setdefault(key, []).append((run_id, int(part_eps[0]), part_vals))
        self.epochs, self.rows, self.values = [], [], []
        return out


class StoreHooks(TrainHooks):
    """Flush each replica's new loss values, and its evaluations, to the store; report progress per epoch."""

    def __init__(self, store: Any, task: GroupTask, progress: Progress | None) -> None:
        self.store, self.task, self.progress = store, task, progress
        self.written = np.zeros(len(task.run_ids), dtype=np.int64)
        self.pending = _Evaluations(done=np.zeros(len(task.run_ids), dtype=np.int64))

    def evaluated(self, epoch: int, values: Evaluation, rows: np.ndarray, seconds: float) -> None:
        r = len(self.task.run_ids)
        self.pending.add(np.full(r, epoch), rows, np.full(r, seconds), values)

    def final_evaluation(self, epochs: np.ndarray, values: Evaluation, seconds: np.ndarray) -> None:
        """The end-of-training evaluation as the last point of each run's evaluation histories, at the epoch the
        run stopped (the trainer leaves that epoch to it), so each summary's ``last`` is the final value."""
        self.pending.add(epochs, epochs > self.pending.done, seconds, values)
        self.flush_evaluations()

    def flush_evaluations(self) -> None:
        by_key = self.pending.chunks(self.task.run_ids)
        if by_key:
            with held_interrupts():
                self.store.append_histories(by_key)

    def flush(self, history: np.ndarray, counts: np.ndarray) -> None:
        chunks = [
            (run_id, int(self.written[r]), history[r, self.written[r] : counts[r]])
            for r, run_id in enumerate(self.task.run_ids)
            if counts[r] > self.written[r]
        ]
        if chunks:
            with held_interrupts():
                self.store.append_history(LOSS_KEY, chunks)
            self.written[:] = np.maximum(self.written, counts)
        self.flush_evaluations()

    def epoch_end(self, epoch: int, counts: np.ndarray, active: np.ndarray) -> None:
        if self.progress is not None:
            self.progress(self.task.index, epoch + 1, int(active.sum()))


def _component_records(system: PluginSystem, comps: Components, config: RunConfig) -> list[Any]:
    """The components of one run (its own optimizer and schedule arguments, in a grid group), each spec with
    every argument named and defaults filled in (:func:`expsvc.registry.resolved`)."""
    from expsvc.registry import resolved
    from expsvc.store import ComponentRecord

    own = {"optimizer": config.optimizer.with_defaults(lr=config.lr), "scheduler": config.schedule}
    records = []
    for reg, spec in comps.provenance:
        info = system.provenance(reg)
        records.append(ComponentRecord(
            kind=reg.kind, name=reg.name, spec=str(resolved(reg, own.get(reg.kind, spec))), plugin=info.name,
            package=info.package, version=info.version,
        ))
    return records


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def execute_group(task: GroupTask, progress: Progress | None = None, store: Any = None) -> GroupOutcome:
    """Train ``task``'s seeds together and record everything; returns a short outcome per run."""
    from expsvc import __version__
    from expsvc.store import RunStore

    own_store = store is None
    store = store or RunStore.open(task.url, create=False, upgrade=False, mark_stale=False)
    trainer: Trainer | None = None
    hooks: StoreHooks | None = None
    parts: list[Part] = []
    try:
        system = get_system(task.plugins_dir)
        rows = task.row_configs()
        comps = build(system, task.config, task.seeds, configs=rows)
        live = [*comps.model.layers, comps.loss, comps.optimizer, comps.scheduler, *comps.metrics.values()]
        parts = [(obj, reg, spec) for obj, (reg, spec) in zip(live, comps.provenance[1:], strict=False)]
        cfg = task.config
        evaluator = SplitEvaluator(comps.model, comps.loss, comps.data, comps.metrics)
        trainer = Trainer(
            comps.model, comps.loss, comps.optimizer, comps.data, comps.order_rngs,
            epochs=cfg.epochs, batch_size=cfg.batch_size, tol=cfg.tol, shuffle=cfg.shuffle,
            scheduler=comps.scheduler, eval_every=cfg.eval_every, evaluator=evaluator,
        )
        records = {c: _component_records(system, comps, c) for c in dict.fromkeys(rows)}
        with held_interrupts(), store.batch():  # one transaction for the group's start records
            store.start_runs(
                task.run_ids, host=socket.gethostname(), pid=os.getpid(), expsvc_version=__version__,
                numpy_version=np.__version__, steps_per_epoch=trainer.per_epoch,
            )
            for run_id, row in zip(task.run_ids, rows, strict=True):
                store.set_components(run_id, records[row])
        hooks = StoreHooks(store, task, progress)
        result = trainer.run(hooks)
        end = evaluator()  # every split, with each replica's final parameters (restored by the trainer)
        outcomes = []
        with held_interrupts(), store.batch():  # one transaction for every run's results
            if cfg.eval_every:  # the final values end the evaluation histories (their summaries' "last")
                hooks.final_evaluation(result.epochs, end, result.seconds)
            for r, (run_id, seed) in enumerate(zip(task.run_ids, task.seeds, strict=True)):
                values = {eval_key(split, k): float(v[r]) for split, metrics in end.items() for k, v in metrics.items()}
                if not cfg.eval_every:
                    store.log_values(run_id, values)
                store.save_params(run_id, {p.name: p.value[r] for p in comps.model.tensors()})
                status = result.status[r]
                count = int(result.counts[r])
                final = float(result.history[r, count - 1]) if count else float("nan")
                store.finish_run(
                    run_id, status, updates=int(result.updates[r]), epochs=int(result.epochs[r]),
                    converged=bool(result.converged[r]), duration=float(result.seconds[r]),
                    error=f"loss became non-finite ({final}) at step {count - 1}" if status == "diverged" else None,
                )
                outcomes.append(RunOutcome(run_id, seed, status, int(result.updates[r]),
                                           _finite(values.get("train_loss", math.nan)), values))
        return GroupOutcome(task.index, outcomes)
    except KeyboardInterrupt as err:  # Ctrl-C, or (with a reason) the executor's parent died
        with held_interrupts():
            _salvage(store, trainer, hooks)
            store.mark_unfinished(task.run_ids, "interrupted", str(err) or "interrupted by the user (Ctrl-C)")
        raise
    except Exception as err:  # run-time boundary: plugin code trains here; the runs fail, the reason is kept
        reason = failure_reason(err, parts)
        with held_interrupts():
            _salvage(store, trainer, hooks)
            text = "".join(traceback.format_exception(err))
            try:
                store.mark_unfinished(task.run_ids, "failed", text)
            except (ExpsvcError, SQLAlchemyError, OSError) as also:  # e.g. the disk is full
                reason += f"; recording the failure failed too: {describe_exception(also)}"
        return GroupOutcome(task.index, [
            RunOutcome(run_id, seed, "failed", error=reason)
            for run_id, seed in zip(task.run_ids, task.seeds, strict=True)
        ])
    finally:
        if own_store:
            store.close()


def failure_reason(err: BaseException, parts: Sequence[Part]) -> str:
    """One line on why a group failed: the exception, and the component whose code raised it if any."""
    culprit = blame(err, parts)
    if culprit is None:
        return str(err) if isinstance(err, ExpsvcError) else describe_exception(err)
    reg, spec = culprit
    return f"{reg.kind} {str(spec)!r} (plugin {reg.plugin!r}) raised {describe_exception(err)}"


def _salvage(store: Any, trainer: Trainer | None, hooks: StoreHooks | None) -> None:
    """Flush what the trainer logged since the last flush (best effort: the original error wins)."""
    if trainer is None or hooks is None:
        return
    with contextlib.suppress(ExpsvcError, SQLAlchemyError, OSError):  # a store failure: the original error wins
        trainer.score_pending(hooks)  # evaluations buffered since the last flush
        hooks.flush(trainer.history, trainer.counts)
