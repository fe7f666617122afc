"""Built-in components, each module a plugin registered exactly like a third-party one."""

DEFAULT_PLUGINS = (
    "expsvc.builtins.layers",
    "expsvc.builtins.features",
    "expsvc.builtins.activations",
    "expsvc.builtins.losses",
    "expsvc.builtins.optimizers",
    "expsvc.builtins.schedulers",
    "expsvc.builtins.datasets",
    "expsvc.builtins.metrics",
)
