"""``expsvc runs`` and ``expsvc show``: which parameters deserve a column.

The rows themselves come from the read API (:func:`expsvc.store.read.runs`, :func:`expsvc.store.read.details`);
``RunRow`` and ``RunDetails`` are re-exported here for the renderers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from expsvc.analysis.keys import label_keys
from expsvc.store.read import RunDetails, RunRow

__all__ = ["RunDetails", "RunRow", "identifying_params", "varying_params"]


def varying_params(rows: Sequence[RunRow]) -> list[str]:
    """The parameters worth a column: the fewest that tell the listed configurations apart."""
    configs = {r.group_key: r.params for r in rows}
    return label_keys(list(configs.values()))


def identifying_params(rows: Sequence[RunRow], configs: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """The columns that identify the listed runs: the optimizer, the parameters that tell the configurations
    of each listed run's experiment apart -- all of the experiment's configurations (``configs``, from
    :func:`expsvc.store.read.experiment_configs`), not only the printed ones, so that three printed adamw
    runs of an adamw-vs-lion experiment still say adamw -- and those that vary among the listed runs.
    """
    names = sorted({r.experiment for r in rows})
    configs = dict(configs)
    for r in rows:  # runs without stored parameters still count as a configuration
        configs.setdefault((r.experiment, r.group_key), r.params)
    keys: list[str] = ["optimizer"] if any("optimizer" in r.params for r in rows) else []
    for name in names:
        keys += [k for k in label_keys([c for (n, _), c in configs.items() if n == name]) if k not in keys]
    return keys + [k for k in varying_params(rows) if k not in keys]  # and what varies among the rows
