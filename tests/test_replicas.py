"""Replicas are independent: an R = 5 vectorised run equals five R = 1 runs, member by member, for every
built-in optimizer; a diverging or perturbed member never changes another member's numbers (conformance
doc C11 — no operation reduces across the replica axis).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pytest

from expsvc.builtins.losses import MSE, CrossEntropy
from expsvc.builtins.schedulers import Cosine
from expsvc.core import Optimizer, Sequential, TrainHooks, replica_streams
from expsvc.core.train import DIVERGED, FINISHED, TrainResult
from tests._numerics import OPTIMIZER_CONFIGS, blobs, net_2531, record_steps, train

SEEDS = [3, 14, 15, 92, 65]
EPOCHS, BATCH = 12, 16
DATA = blobs(90, seed=7)  # 90 points: 6 steps per epoch, the last batch of each epoch has 10
TOL = 1e-12
CONFIG_IDS = [c[0] for c in OPTIMIZER_CONFIGS]
CONFIGS = {c[0]: c for c in OPTIMIZER_CONFIGS}


def make_optimizer(config_id: str) -> Optimizer:
    """A fresh optimizer of one configuration."""
    _, cls, kwargs = CONFIGS[config_id]
    return cls(**kwargs)


def run(
    config_id: str,
    seeds: list[int],
    *,
    perturb: Any = None,
    hooks: TrainHooks | None = None,
    order_rngs: list[Any] | None = None,
) -> tuple[TrainResult, np.ndarray]:
    """Train the 2-5-3-1 net for ``seeds`` (one replica each, shuffled per replica): the result and the buffer
    after every step ``(steps, R, P)``.  ``perturb(model)`` may edit the initial parameters."""
    init_rngs, default_order = replica_streams(seeds)
    model = net_2531().build(2, init_rngs)
    if perturb is not None:
        perturb(model)
    opt = make_optimizer(config_id)
    steps: list[np.ndarray] = []
    record_steps(opt, steps)
    result = train(
        model,
        opt,
        DATA,
        order_rngs or default_order,
        epochs=EPOCHS,
        batch_size=BATCH,
        scheduler=Cosine(t_max=5),
        hooks=hooks,
    )
    return result, np.stack(steps)


@cache
def vectorised(config_id: str) -> tuple[TrainResult, np.ndarray]:
    """The unperturbed R = 5 run (cached: several tests compare against it)."""
    return run(config_id, SEEDS)


def deviation(a: np.ndarray, b: np.ndarray) -> float:
    """max |a − b| (both finite)."""
    assert a.shape == b.shape and np.isfinite(a).all() and np.isfinite(b).all()
    return float(np.max(np.abs(a - b), initial=0.0))


@pytest.mark.parametrize("config_id", CONFIG_IDS)
def test_vectorised_equals_separate_runs(config_id: str) -> None:
    """Member k of the R = 5 run equals the R = 1 run with seed k: every step's parameters and losses."""
    result, steps = vectorised(config_id)
    assert result.status == [FINISHED] * 5 and steps.shape[:2] == (EPOCHS * 6, 5)
    for k, seed in enumerate(SEEDS):
        alone, alone_steps = run(config_id, [seed])
        assert deviation(steps[:, k], alone_steps[:, 0]) <= TOL, f"{config_id} member {k}"
        assert deviation(result.history[k], alone.history[0]) <= TOL
    # The members really differ (different seeds), so the comparison is not vacuous.
    assert deviation(steps[-1, 0], steps[-1, 1]) > 1e-3


def poison_member(j: int, value: float) -> Any:
    """An initial-parameter edit setting member ``j``'s output bias to ``value`` (a non-finite weight deeper
    in can be hidden by tanh saturation; the output bias makes every logit, hence the loss, non-finite)."""

    def perturb(model: Sequential) -> None:
        model.parameters()[-1].value[j, 0] = value

    return perturb


@pytest.mark.parametrize("config_id", CONFIG_IDS)
@pytest.mark.parametrize("value", [np.inf, np.nan])
def test_diverging_member_leaves_the_others_untouched(config_id: str, value: float) -> None:
    """Member 2 starts with a non-finite output bias: it is stopped as diverged at its first step; every other
    member's parameters and losses are bitwise those of the clean run."""
    clean, clean_steps = vectorised(config_id)
    result, steps = run(config_id, SEEDS, perturb=poison_member(2, value))
    assert result.status[2] == DIVERGED and result.updates[2] == 0 and result.counts[2] == 1
    assert not np.isfinite(result.history[2, 0])
    assert not np.isfinite(steps[:, 2]).all()  # it really went non-finite while computed alongside
    for k in (0, 1, 3, 4):
        assert result.status[k] == FINISHED
        np.testing.assert_array_equal(steps[:, k], clean_steps[:, k])
        np.testing.assert_array_equal(result.history[k], clean.history[k])
    # the history holds the steps that ran, NaN after each member stopped
    assert result.history.shape == (len(SEEDS), result.counts.max())
    assert np.isnan(result.history[2, 1:]).all()
    for k in (0, 1, 3, 4):
        assert np.isfinite(result.history[k, : result.counts[k]]).all()


class PoisonAtEpoch(TrainHooks):
    """Sets one of member ``j``'s weights to NaN at the end of epoch ``epoch`` (a mid-run blow-up)."""

    def __init__(self, model: Sequential, j: int, epoch: int) -> None:
        self.model, self.j, self.epoch = model, j, epoch

    def epoch_end(self, epoch: int, counts: np.ndarray, active: np.ndarray) -> None:
        """Poison member j once."""
        if epoch == self.epoch:
            assert self.model.buffer is not None
            self.model.buffer.value[self.j, 3] = np.nan


@pytest.mark.parametrize("config_id", ["sgd_nesterov_wd", "adamw_amsgrad"])
def test_member_diverging_mid_run_leaves_the_others_untouched(config_id: str) -> None:
    """A member that goes non-finite after some epochs is stopped as diverged at that step; the others
    finish exactly as in the clean run."""
    clean, clean_steps = vectorised(config_id)
    init_rngs, order_rngs = replica_streams(SEEDS)
    model = net_2531().build(2, init_rngs)
    opt = make_optimizer(config_id)
    result = train(
        model,
        opt,
        DATA,
        order_rngs,
        epochs=EPOCHS,
        batch_size=BATCH,
        scheduler=Cosine(t_max=5),
        hooks=PoisonAtEpoch(model, j=1, epoch=4),
    )
    assert result.status[1] == DIVERGED and result.counts[1] == 5 * 6 + 1 and result.updates[1] == 5 * 6
    np.testing.assert_array_equal(result.history[1, :30], clean.history[1, :30])
    assert model.buffer is not None
    for k in (0, 2, 3, 4):
        np.testing.assert_array_equal(model.buffer.value[k], clean_steps[-1, k])
        np.testing.assert_array_equal(result.history[k], clean.history[k])


@pytest.mark.parametrize("config_id", CONFIG_IDS)
def test_perturbing_one_member_changes_only_that_member(config_id: str) -> None:
    """Nudging member j's initial parameters changes member j's trajectory and no other member's."""
    j = 3
    _, clean_steps = vectorised(config_id)

    def nudge(model: Sequential) -> None:
        assert model.buffer is not None
        model.buffer.value[j] += 1e-3

    _, steps = run(config_id, SEEDS, perturb=nudge)
    assert deviation(steps[:, j], clean_steps[:, j]) > 1e-4
    for k in range(5):
        if k != j:
            np.testing.assert_array_equal(steps[:, k], clean_steps[:, k])


def test_changing_one_members_batch_order_changes_only_that_member() -> None:
    """Member j's data order comes from its own generator only: replacing it leaves the others unchanged."""
    _, clean_steps = vectorised("adam")
    _, order_rngs = replica_streams(SEEDS)
    order_rngs[0] = np.random.default_rng(12345)
    _, steps = run("adam", SEEDS, order_rngs=order_rngs)
    assert deviation(steps[:, 0], clean_steps[:, 0]) > 1e-4
    np.testing.assert_array_equal(steps[:, 1:], clean_steps[:, 1:])


def test_losses_never_mix_replicas() -> None:
    """Each replica's loss value and gradient equal its standalone ones (MSE, cross-entropy)."""
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(4, 6, 3))
    for loss_cls, target in (
        (MSE, rng.normal(size=(4, 6, 3))),
        (CrossEntropy, rng.integers(0, 3, size=(4, 6))),
    ):
        stacked = loss_cls()
        values, grad = stacked.forward(pred, target), stacked.backward()
        for r in range(4):
            alone = loss_cls()
            assert alone.forward(pred[r : r + 1], target[r : r + 1])[0] == values[r]
            np.testing.assert_array_equal(alone.backward()[0], grad[r])


def test_replica_streams_depend_on_own_seed_only() -> None:
    """replica_streams: member k's generators are the same whatever the other seeds are."""
    init_a, order_a = replica_streams([1, 2, 3])
    init_b, order_b = replica_streams([9, 2])
    assert init_a[1].random() == init_b[1].random()
    assert order_a[1].permutation(10).tolist() == order_b[1].permutation(10).tolist()
