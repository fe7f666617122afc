"""The vectorised training loop: R replicas (one per seed) of one configuration, stepped together.

Per epoch each replica draws its own batch order; every step runs forward, the per-replica loss, backward
of the summed loss, and one optimizer step.  Replicas stop on their own: ``diverged`` at the step whose loss
is not finite, ``finished`` when the last update's loss of an epoch differs from the previous epoch's by less
than ``tol`` (``tol = 0`` disables this), or when the epochs run out.  A stopped replica's parameters are
snapshotted at its stop; it keeps being computed with the others (no operation mixes replicas, so that
cannot change their numbers) and is restored from the snapshot at the end.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from expsvc.core.data import DataSplit, epoch_order, steps_per_epoch
from expsvc.core.layer import Sequential
from expsvc.core.loss import Loss
from expsvc.core.optim import Optimizer, PointSchedules, Scheduler

HISTORY_START = 4096
"""Steps the per-step loss history holds at first (it grows as epochs start)."""

Evaluation = dict[str, dict[str, np.ndarray]]
"""Split (``train``, ``val``, ``test``) → metric (``loss``, ``accuracy``...) → one value per replica."""

EVAL_BUFFER_BYTES = 32 * 2**20
"""Outputs of per-epoch evaluations buffered before they are scored as one batch (see :meth:`Trainer.score_pending`)."""

FINISHED = "finished"
DIVERGED = "diverged"


class TrainHooks:
    """Callbacks of :class:`Trainer`; the runner subclasses this to log and show progress.

    ``flush(history, counts)`` is called every ``flush_seconds`` seconds (or ``flush_every`` steps, if that
    comes first) and at the end: ``history[r, :counts[r]]`` are replica ``r``'s per-step losses so far.
    Flushing by time bounds both what a crash can lose and what logging costs (a fixed number of writes per
    second, however fast the steps are).
    """

    flush_every: int = 65_536
    flush_seconds: float = 1.0

    def flush(self, history: np.ndarray, counts: np.ndarray) -> None:
        """Persist new history (the slice past what was persisted before)."""

    def epoch_end(self, epoch: int, counts: np.ndarray, active: np.ndarray) -> None:
        """Called after every epoch (progress reporting)."""

    def evaluated(self, epoch: int, values: Evaluation, rows: np.ndarray, seconds: float) -> None:
        """Called for each ``eval_every``-th epoch but the last (in batches, before a flush):
        ``values[split][metric][r]`` for the replicas ``rows`` (a boolean mask: those still training after
        this epoch); ``epoch`` counts epochs done (1 after the first); ``seconds`` since the start of training,
        before evaluating.  The end-of-training evaluation is the caller's (``SplitEvaluator()``)."""


@dataclass
class TrainResult:
    """Outcome per replica: ``status`` (finished | diverged), ``updates`` (optimizer steps applied),
    ``counts`` (losses recorded), ``converged`` (stopped by ``tol``), ``epochs`` (epochs started),
    ``seconds`` (wall time from the start of training until the replica stopped), ``history``
    ``(R, counts.max())``: replica ``r``'s per-step losses in ``history[r, :counts[r]]``, NaN after."""

    status: list[str]
    updates: np.ndarray
    counts: np.ndarray
    converged: np.ndarray
    epochs: np.ndarray
    history: np.ndarray
    steps_per_epoch: int
    seconds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    metrics: dict[str, np.ndarray] = field(default_factory=dict)


class Trainer:
    """Train a built :class:`Sequential` on a :class:`DataSplit` with one order generator per replica."""

    def __init__(
        self,
        model: Sequential,
        loss: Loss,
        optimizer: Optimizer,
        data: DataSplit,
        order_rngs: Sequence[np.random.Generator],
        *,
        epochs: int,
        batch_size: int,
        tol: float = 0.0,
        shuffle: bool = False,
        scheduler: Scheduler | None = None,
        eval_every: int = 0,
        evaluator: SplitEvaluator | None = None,
    ) -> None:
        assert model.buffer is not None, "build the model first"
        self.eval_every = int(eval_every) if evaluator is not None else 0
        self.evaluator = evaluator
        self._evaluations: list[tuple[int, np.ndarray, np.ndarray, float]] = []  # outputs not scored yet
        self._evaluation_bytes = 0
        self.model, self.loss, self.optimizer, self.scheduler = model, loss, optimizer, scheduler
        self.data = data
        self.order_rngs = list(order_rngs)
        self.epochs, self.batch_size, self.tol, self.shuffle = int(epochs), int(batch_size), float(tol), shuffle
        dtype = model.buffer.dtype
        self.x = np.ascontiguousarray(data.x_train, dtype=dtype)
        self.y = data.y_train if data.y_train.dtype.kind in "iu" else np.ascontiguousarray(data.y_train, dtype)
        self.n = int(self.x.shape[0])
        self.per_epoch = steps_per_epoch(self.n, self.batch_size)
        r = model.replicas
        # Grown as epochs start (doubling, so copies cost O(1) per step): memory follows the steps run,
        # never --epochs, which may be anything up to 2**63 - 1.
        self.total_steps = self.epochs * self.per_epoch
        self.history = np.empty((r, min(self.total_steps, HISTORY_START)), dtype=np.float64)
        self.step = 0
        self.stop_counts = np.zeros(r, dtype=np.int64)
        self.stop_updates = np.zeros(r, dtype=np.int64)
        self.active = np.ones(r, dtype=bool)
        self.status = [FINISHED] * r
        self.converged = np.zeros(r, dtype=bool)
        self.epochs_run = np.zeros(r, dtype=np.int64)
        self.seconds = np.zeros(r, dtype=np.float64)
        self._started = time.perf_counter()
        self.final = np.empty_like(model.buffer.value)
        self.final_state = np.empty_like(model.buffer.state)  # running statistics, snapshotted alike
        optimizer.bind(model.buffer)
        self.base_lr = optimizer.lr
        self._bounds = [(s, min(s + self.batch_size, self.n)) for s in range(0, self.n, self.batch_size)]
        self._fixed: list[tuple[np.ndarray, np.ndarray]] | None = None

    @property
    def counts(self) -> np.ndarray:
        """Losses recorded so far per replica (stopped replicas keep their count)."""
        return np.where(self.active, self._recorded, self.stop_counts)

    @property
    def updates(self) -> np.ndarray:
        """Optimizer steps applied so far per replica."""
        return np.where(self.active, self.step, self.stop_updates)

    _recorded = 0  # losses recorded by active replicas (the step in progress included)

    _epoch = -1  # the epoch in progress (-1 before the first)
    _n_active = 0  # replicas still training: a Python int, so the loop never reduces ``active`` to test it

    def _stop(self, r: int, status: str, count: int, updates: int) -> None:
        self.active[r] = False
        self._n_active -= 1
        self.epochs_run[r] = self._epoch + 1
        self.status[r] = status
        self.stop_counts[r] = count
        self.stop_updates[r] = updates
        self.seconds[r] = time.perf_counter() - self._started
        self.final[r] = self.model.buffer.value[r]  # type: ignore[union-attr]
        self.final_state[r] = self.model.buffer.state[r]  # type: ignore[union-attr]

    def _evaluate(self, hooks: TrainHooks, done: int) -> None:
        """Evaluate every replica at once (eval mode), for the rows still training after this epoch.  A row
        that stopped in it, and every row at the last epoch, is left to the end-of-training evaluation (with
        its final parameters, exactly a one-off evaluation's numbers: the runner records it as the last point
        of each history).  Only the forward pass runs now; the outputs are scored in batches
        (:meth:`score_pending`), before each flush or when they hold :data:`EVAL_BUFFER_BYTES`."""
        rows = self.active
        if done < self.epochs and rows.any():
            seconds = time.perf_counter() - self._started
            assert self.evaluator is not None
            out = self.evaluator.outputs()
            self._evaluations.append((done, out, rows.copy(), seconds))  # (a copy: ``active`` changes)
            self._evaluation_bytes += out.nbytes
            if self._evaluation_bytes >= EVAL_BUFFER_BYTES:
                self.score_pending(hooks)

    def score_pending(self, hooks: TrainHooks) -> None:
        """Score the buffered evaluations in one batch and hand each to ``hooks.evaluated``, in epoch order."""
        if not self._evaluations:
            return
        assert self.evaluator is not None
        pending, self._evaluations, self._evaluation_bytes = self._evaluations, [], 0
        values = self.evaluator.score([out for _, out, _, _ in pending])
        r = self.model.replicas
        for i, (done, _, rows, seconds) in enumerate(pending):
            one = {split: {k: v[i * r : (i + 1) * r] for k, v in metrics.items()} for split, metrics in values.items()}
            hooks.evaluated(done, one, rows, seconds)

    def _grow(self, needed: int) -> np.ndarray:
        """Enlarge the history to hold ``needed`` steps (at least doubling, at most every step of the run)."""
        size = min(self.total_steps, max(needed, 2 * self.history.shape[1]))
        grown = np.empty((self.history.shape[0], size), dtype=np.float64)
        grown[:, : self.history.shape[1]] = self.history
        self.history = grown
        return grown

    def _epoch_batches(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """This epoch's ``(x, y)`` batches, ``(R, b, ...)`` each: one gather per epoch, then views.

        Without shuffling every replica sees the same order, so the batches are computed once and
        repeated over the replica axis.
        """
        if not self.shuffle:
            if self._fixed is None:
                r = self.model.replicas
                self._fixed = [
                    (np.repeat(self.x[None, s:e], r, axis=0), np.repeat(self.y[None, s:e], r, axis=0))
                    for s, e in self._bounds
                ]
            return self._fixed
        order = epoch_order(self.n, self.order_rngs)
        xs, ys = self.x[order], self.y[order]
        return [(xs[:, s:e], ys[:, s:e]) for s, e in self._bounds]

    def run(self, hooks: TrainHooks | None = None) -> TrainResult:
        """Train until every replica has stopped; flush the history through ``hooks`` on the way.

        The step loop is the hot path (~50 µs per step for the seed net): per step it makes only the
        component calls plus one history write and one finiteness test; per-epoch bookkeeping is skipped
        when it cannot matter (no ``tol``, a hook without ``epoch_end``).
        """
        hooks = hooks or TrainHooks()
        model, loss, opt, buf = self.model, self.loss, self.optimizer, self.model.buffer
        assert buf is not None
        hist, active = self.history, self.active
        step, last_flush, flush_every = 0, time.monotonic(), max(1, hooks.flush_every)
        self._started = time.perf_counter()
        self._n_active = int(active.sum())
        prev_last: np.ndarray | None = None
        isfinite = math.isfinite
        forward, loss_forward, loss_backward = model.forward, loss.forward, loss.backward
        zero_grad, backward, opt_step = buf.zero_grad, model.backward_params, opt.step
        epoch_end = type(hooks).epoch_end is not TrainHooks.epoch_end
        tol = self.tol
        with np.errstate(all="ignore"):
            for epoch in range(self.epochs):
                self._epoch = epoch
                if step + self.per_epoch > hist.shape[1]:
                    hist = self._grow(step + self.per_epoch)
                if isinstance(self.scheduler, PointSchedules):  # a grid: one learning rate per replica
                    opt.lr = self.scheduler.lrs(epoch)
                elif self.scheduler is not None:  # a Python float: numpy's float64 would run float32 in float64
                    opt.lr = float(self.scheduler.lr(self.base_lr, epoch))
                for xb, yb in self._epoch_batches():
                    values = loss_forward(forward(xb), yb)
                    hist[:, step] = values
                    self._recorded = step + 1
                    # One Python sum over R floats: the sum of finite values is finite (or overflows, which
                    # only sends us to the exact per-replica test below).
                    if not isfinite(sum(values.tolist())):
                        for r in np.flatnonzero(active & ~np.isfinite(values)):
                            self._stop(int(r), DIVERGED, step + 1, step)
                        if not self._n_active:
                            break
                    zero_grad()
                    backward(loss_backward())
                    opt_step()
                    step += 1
                    self.step = step
                    if step % 64 == 0 and (
                        step % flush_every == 0 or time.monotonic() - last_flush >= hooks.flush_seconds
                    ):
                        self.score_pending(hooks)
                        hooks.flush(hist, self.counts)
                        last_flush = time.monotonic()
                if not self._n_active:
                    break
                if tol > 0:
                    last = hist[:, step - 1]
                    if prev_last is not None:
                        for r in np.flatnonzero(active & (np.abs(last - prev_last) < tol)):
                            self.converged[r] = True
                            self._stop(int(r), FINISHED, step, step)
                    prev_last = last.copy()
                if self.eval_every and (epoch + 1) % self.eval_every == 0:
                    self._evaluate(hooks, epoch + 1)
                if epoch_end:
                    hooks.epoch_end(epoch, self.counts, active)
                if not self._n_active:
                    break
        for r in np.flatnonzero(active):
            self._stop(int(r), FINISHED, step, step)
        buf.value[...] = self.final
        buf.state[...] = self.final_state
        counts = self.counts
        self.score_pending(hooks)
        hooks.flush(hist, counts)
        hist = hist[:, : int(counts.max(initial=0))]
        for r, count in enumerate(counts.tolist()):
            hist[r, count:] = np.nan  # after a replica stopped: nothing
        return TrainResult(
            status=list(self.status),
            updates=self.updates.copy(),
            counts=counts,
            converged=self.converged.copy(),
            epochs=self.epochs_run.copy(),
            history=hist,
            steps_per_epoch=self.per_epoch,
            seconds=self.seconds.copy(),
        )


PREDICT_CHUNK = 2048
"""Samples per forward pass in :func:`predict` (a convolution's gathered windows grow with the batch)."""


def forward_eval(model: Sequential, x: np.ndarray) -> np.ndarray:
    """Outputs ``(R, N, O)`` of every replica for shared inputs ``x`` of shape ``(N, *in_shape)``, in eval mode
    (``train=False``: dropout off, batch norm on its running statistics)."""
    assert model.buffer is not None
    x = np.asarray(x, dtype=model.buffer.dtype)
    with np.errstate(all="ignore"):
        if len(x) <= PREDICT_CHUNK:
            return model.forward(np.broadcast_to(x, (model.replicas, *x.shape)), train=False)
        # eval mode treats samples independently: chunks bound the memory of image layers' windows
        chunks = [x[s : s + PREDICT_CHUNK] for s in range(0, len(x), PREDICT_CHUNK)]
        return np.concatenate(
            [model.forward(np.broadcast_to(c, (model.replicas, *c.shape)), train=False) for c in chunks], axis=1)


def predict(model: Sequential, loss: Loss, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Outputs ``(R, N, O)`` and predictions of every replica for shared inputs ``x`` of shape
    ``(N, *in_shape)``, in eval mode (``train=False``: dropout off, batch norm on its running statistics)."""
    out = forward_eval(model, x)
    with np.errstate(all="ignore"):
        return out, loss.predict(out)


class SplitEvaluator:
    """Loss and each metric on every split of a dataset (train, validation when there is one, test) for all
    replicas at once: calling it gives ``{"train": {"loss": (R,), "accuracy": (R,)}, "val": ..., "test": ...}``.

    Evaluation may run every epoch, so it is built for that; the inputs are cast once, here (joined on first use).
    Calling it — the end-of-training evaluation — forwards each split on its own (:meth:`exact_outputs`: the
    same calls as :func:`evaluate`, so the final values are bit for bit a one-off evaluation's).  The per-epoch
    evaluations take :meth:`outputs`, one forward pass over the joined splits (eval mode treats samples
    independently; a layer whose kernels round differently for another batch size, such as a convolution,
    may differ in the last bit).  :meth:`score` turns the outputs of *several* evaluations into their losses
    and metrics with one call of the loss and of each metric per split: the evaluations are stacked on the
    replica axis, along which nothing mixes, so each row's numbers are those of evaluating it alone (the
    trainer buffers the outputs of the epochs between two flushes and scores them together)."""

    def __init__(self, model: Sequential, loss: Loss, data: DataSplit, metrics: dict[str, object]) -> None:
        assert model.buffer is not None
        self.model, self.loss, self.metrics = model, loss, metrics
        splits = data.splits()
        self.xs = [np.asarray(x, dtype=model.buffer.dtype) for x, _ in splits.values()]
        bounds = np.cumsum([0, *(len(x) for x in self.xs)]).tolist()
        self.sets = [(split, bounds[i], bounds[i + 1], y) for i, (split, (_, y)) in enumerate(splits.items())]

    @functools.cached_property
    def x(self) -> np.ndarray:
        """Every split's inputs joined (made on the first per-epoch evaluation: a run without ``eval_every``
        never copies its data)."""
        return np.concatenate(self.xs)

    def outputs(self) -> np.ndarray:
        """The model's outputs on every split's inputs, joined on the sample axis: ``(R, N_total, ...)``, from
        one forward pass (fast: the per-epoch evaluations)."""
        return forward_eval(self.model, self.x)

    def exact_outputs(self) -> np.ndarray:
        """:meth:`outputs` from a forward pass per split: exactly a one-off evaluation's numbers."""
        return np.concatenate([forward_eval(self.model, x) for x in self.xs], axis=1)

    def score(self, outputs: Sequence[np.ndarray]) -> Evaluation:
        """The losses and metrics of evaluations ``outputs`` (each from :meth:`outputs`): every value array
        holds the rows of the first evaluation, then of the second...: ``(len(outputs) × R,)``."""
        out = outputs[0] if len(outputs) == 1 else np.concatenate(outputs)
        with np.errstate(all="ignore"):
            pred = self.loss.predict(out)
        return {split: scores(self.loss, out[:, a:b], pred[:, a:b], y, self.metrics) for split, a, b, y in self.sets}

    def __call__(self) -> Evaluation:
        return self.score([self.exact_outputs()])


def evaluate(
    model: Sequential, loss: Loss, x: np.ndarray, y: np.ndarray, metrics: dict[str, object]
) -> dict[str, np.ndarray]:
    """Loss and each metric on ``(x, y)``, one value per replica."""
    out, pred = predict(model, loss, x)
    return scores(loss, out, pred, y, metrics)


def scores(loss: Loss, out: np.ndarray, pred: np.ndarray, y: np.ndarray,
           metrics: dict[str, object]) -> dict[str, np.ndarray]:
    """Loss and each metric from a forward pass's outputs ``(R, N, ...)`` and predictions, one per row."""
    r = out.shape[0]
    target = y if y.dtype.kind in "iu" else np.asarray(y, dtype=out.dtype)
    with np.errstate(all="ignore"):
        result = {"loss": np.asarray(loss.forward(out, np.broadcast_to(target, (r, *target.shape))), float)}
        for name, metric in metrics.items():
            result[name] = np.asarray(metric(pred, y), dtype=float)  # type: ignore[operator]
    return result
