"""A run records every argument of every component that ran, defaults included (issue 14, item 5): ``show``
lists ``sgd(lr=0.001, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False)``, not ``sgd``."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import expsvc
from expsvc.plugins import get_system
from expsvc.registry import resolved
from expsvc.specs import parse
from expsvc.store import RunStore, read
from tests.test_testing_kit import EXAMPLES, _builtins


def _named(cls: type) -> set[str]:
    return {n for n, p in inspect.signature(cls).parameters.items()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


@pytest.mark.parametrize(("kind", "name"), _builtins(), ids=[f"{k}-{n}" for k, n in _builtins()])
def test_every_builtin_spec_resolves_to_every_argument(kind: str, name: str) -> None:
    """Generated from the registry: a new component is covered without touching this file."""
    reg = get_system().registry.resolve(kind, name)
    spec = parse(EXAMPLES.get(name, name))
    full = resolved(reg, spec)
    assert set(full.kwargs) == _named(reg.cls) and not full.args
    assert parse(str(full)) == full  # the stored text reads back as the same spec
    assert all(full.kwargs[k] == v for k, v in spec.kwargs.items())  # what the user gave is kept


def test_a_run_stores_every_resolved_argument(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    expsvc.run(optimizer=["sgd(momentum=0.9)"], lr=[0.01], seeds=1, epochs=2, db=url, jobs=1)
    with RunStore.open(url) as store:
        (row,) = read.runs(store)
        comps = read.details(store, row.id).components
    system = get_system()
    for c in comps:
        spec = parse(c["spec"])
        assert set(spec.kwargs) == _named(system.registry.resolve(c["kind"], c["name"]).cls), c
    optimizer = next(parse(c["spec"]) for c in comps if c["kind"] == "optimizer")
    assert optimizer.kwargs["lr"] == 0.01 and optimizer.kwargs["momentum"] == 0.9
    assert optimizer.kwargs["nesterov"] is False  # a default, spelled out
