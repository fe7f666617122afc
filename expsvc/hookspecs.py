"""Hook specifications: the contract between expsvc and its plugins.

A plugin is a module (or object) with functions named after these hooks and marked ``@hookimpl``.  Each
``register_*`` hook receives ``register(cls, *, name=None, aliases=(), override=False)``; the name defaults
to ``cls.name``.  Built-in components use exactly these hooks.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("expsvc")
hookimpl = pluggy.HookimplMarker("expsvc")


@hookspec
def register_layers(register: Any) -> None:
    """Register :class:`expsvc.Layer` subclasses that have parameters (``linear``...)."""


@hookspec
def register_activations(register: Any) -> None:
    """Register parameter-free :class:`expsvc.Layer` subclasses (``tanh``, ``relu``...)."""


@hookspec
def register_losses(register: Any) -> None:
    """Register :class:`expsvc.Loss` subclasses."""


@hookspec
def register_optimizers(register: Any) -> None:
    """Register :class:`expsvc.Optimizer` subclasses."""


@hookspec
def register_schedulers(register: Any) -> None:
    """Register :class:`expsvc.Scheduler` subclasses (learning-rate schedules)."""


@hookspec
def register_datasets(register: Any) -> None:
    """Register :class:`expsvc.Dataset` subclasses."""


@hookspec
def register_metrics(register: Any) -> None:
    """Register :class:`expsvc.Metric` subclasses."""


@hookspec
def register_commands(app: Any) -> None:
    """Add commands to the ``expsvc`` Typer application (``@app.command()``)."""
