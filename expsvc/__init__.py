"""expsvc: a plugin-based experiment service with tracked runs.

``from expsvc import hookimpl, Layer, Loss, Optimizer, ...`` is the public plugin API.  Importing this
package loads no plugin and no heavy module; names are resolved on first access.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "hookimpl": "expsvc.hookspecs",
    "Layer": "expsvc.core",
    "Loss": "expsvc.core",
    "Optimizer": "expsvc.core",
    "Scheduler": "expsvc.core",
    "Dataset": "expsvc.core",
    "DataSplit": "expsvc.core",
    "Metric": "expsvc.core",
    "Parameter": "expsvc.core",
    "Sequential": "expsvc.core",
    "gradcheck": "expsvc.core",
    "ExpsvcError": "expsvc.errors",
    "run": "expsvc.runner.api",
    "Experiment": "expsvc.runner.api",
    "load_model": "expsvc.runner.api",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'expsvc' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
