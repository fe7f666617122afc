"""Parameter and summary keys shared by ``runs`` (:mod:`expsvc.analysis.listing`) and ``compare``.

Kept apart from :mod:`expsvc.analysis.compare` so that listing runs never imports the statistics (numpy,
scipy.special): ``expsvc runs`` is mostly start-up time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from expsvc.store.models import MetricSummary, Run, RunParam

#: the columns of a metric summary, in the order ``show`` and ``load_records`` read them
SUMMARY_COLS = ("first", "last", "last_step", "min", "min_step", "max", "max_step", "mean", "count", "nan_count")
#: parameters that never label a group (they vary within one)
NOT_LABELS = ("seed",)
LABEL_ORDER = ("optimizer", "lr", "model", "loss", "dataset", "batch_size", "schedule", "epochs")


def param_value(text: str | None, num: float | None) -> Any:
    """A parameter's Python value from its two columns (as the store writes them): bool, int, float or text."""
    if num is None:
        return text
    if text in ("true", "false"):
        return text == "true"
    if text is not None and text.lstrip("-").isdigit():
        return int(text)
    return float(num)


def summary_keys(session: Session, experiment_id: int | None = None) -> list[str]:
    """The distinct summary keys (of one experiment, or all)."""
    q = select(MetricSummary.key).distinct()
    if experiment_id is not None:
        q = q.join(Run, Run.id == MetricSummary.run_id).where(Run.experiment_id == experiment_id)
    return sorted(session.scalars(q))


def param_keys(session: Session) -> list[str]:
    """The distinct parameter keys in the store."""
    return sorted(session.scalars(select(RunParam.key).distinct()))


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
