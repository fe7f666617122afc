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
    """Register :class:`expsvc.Layer` subclasses that have parameters (``linear``...).

    A layer creates its parameters in the model's shared buffer when the model is built, with a leading
    replica axis, and writes its own ``forward``/``backward`` (``backward`` returns the input's gradient and
    gives its parameters theirs).
    """


@hookspec
def register_activations(register: Any) -> None:
    """Register parameter-free :class:`expsvc.Layer` subclasses (``tanh``, ``relu``...): element-wise
    functions with their derivative in ``backward``."""


@hookspec
def register_losses(register: Any) -> None:
    """Register :class:`expsvc.Loss` subclasses: ``forward`` gives one loss per replica ``(R,)``,
    ``backward`` the gradient of their sum, ``predict`` the predictions the metrics compare, and ``task``
    the kind of target the loss expects (``binary``, ``multiclass`` or ``regression``).
    """


@hookspec
def register_optimizers(register: Any) -> None:
    """Register :class:`expsvc.Optimizer` subclasses.  ``bind`` allocates state next to the model's
    parameter buffer; ``step`` updates it in place, element-wise or within a replica's row only; noise comes
    from ``self.random`` (one stream per replica)."""


@hookspec
def register_schedulers(register: Any) -> None:
    """Register :class:`expsvc.Scheduler` subclasses (learning-rate schedules): ``lr(base_lr, epoch)``."""


@hookspec
def register_datasets(register: Any) -> None:
    """Register :class:`expsvc.Dataset` subclasses.

    ``load()`` returns a :class:`expsvc.core.data.DataSplit` (training and test arrays) and ``task`` says
    which losses and metrics apply.  A dataset draws its randomness from its own ``seed`` argument only
    (``self.rng()``).
    """


@hookspec
def register_metrics(register: Any) -> None:
    """Register :class:`expsvc.Metric` subclasses: ``metric(pred, target)`` returns one value per replica,
    for the dataset tasks listed in ``tasks``."""


@hookspec
def register_commands(app: Any) -> None:
    """Add commands to the ``expsvc`` Typer application (``@app.command()``)."""
