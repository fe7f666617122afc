"""``expsvc runs`` and ``expsvc show``: which parameters deserve a column.

The rows themselves come from the read API (:func:`expsvc.store.read.runs`, :func:`expsvc.store.read.details`);
``RunRow`` and ``RunDetails`` are re-exported here for the renderers.
"""

from __future__ import annotations

from collections.abc import Sequence

from expsvc.analysis.keys import label_keys
from expsvc.store.read import RunDetails, RunRow

__all__ = ["RunDetails", "RunRow", "varying_params"]


def varying_params(rows: Sequence[RunRow]) -> list[str]:
    """The parameters worth a column: the fewest that tell the listed configurations apart."""
    configs = {r.group_key: r.params for r in rows}
    return label_keys(list(configs.values()))
