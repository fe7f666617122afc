"""Parameter keys and labels shared by ``runs`` (:mod:`expsvc.analysis.listing`) and ``compare``.

Kept apart from :mod:`expsvc.analysis.compare` so that listing runs never imports the statistics (numpy,
scipy.special): ``expsvc runs`` is mostly start-up time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: parameters that never label a group (they vary within one)
NOT_LABELS = ("seed",)
LABEL_ORDER = ("optimizer", "lr", "model", "loss", "dataset", "batch_size", "schedule", "epochs")


def fmt_value(v: Any) -> str:
    """A parameter value for a label: ``0.01``, ``32``, ``adamw``."""
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def label_keys(params: Sequence[dict[str, Any]]) -> list[str]:
    """The fewest parameter keys (preferred ones first) that tell the given configurations apart."""
    keys = sorted({k for p in params for k in p} - set(NOT_LABELS))
    keys.sort(key=lambda k: (LABEL_ORDER.index(k) if k in LABEL_ORDER else len(LABEL_ORDER),
                             k == "optimizer_spec", k))
    chosen: list[str] = []
    distinct = 1
    for k in keys:
        n = len({tuple(repr(p.get(c)) for c in [*chosen, k]) for p in params})
        if n > distinct:
            chosen.append(k)
            distinct = n
    return chosen
