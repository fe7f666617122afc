"""``expsvc runs`` and ``expsvc show``: the run listing (never touching histories) and one run's details."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from expsvc.analysis.keys import SUMMARY_COLS as _SUMMARY_COLS
from expsvc.analysis.keys import label_keys, param_keys, param_value, summary_keys
from expsvc.errors import ExpsvcError, did_you_mean
from expsvc.store.models import Experiment, MetricChunk, MetricSummary, Run, RunComponent, RunParam

STATUSES = ("queued", "running", "finished", "diverged", "failed", "interrupted", "stale")
# The listing reads plain table columns: a Core query skips the ORM's statement compilation and mapper
# configuration, a good part of ``expsvc runs``'s time after start-up (the SQL is the same).
_RUNS = Run.__table__.c
_PARAMS = RunParam.__table__.c
TIME_FIELDS = {"started": _RUNS.started_at, "created": _RUNS.created_at, "ended": _RUNS.ended_at}


class ListingError(ExpsvcError):
    """A bad listing request (unknown status, sort key, limit...)."""


@dataclass
class RunRow:
    """One line of ``expsvc runs``."""

    id: str
    experiment: str
    seed: int
    status: str
    error: str | None
    final_loss: float | None
    test_accuracy: float | None
    updates: int | None
    duration: float | None
    started_at: datetime | None
    created_at: datetime | None
    group_key: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def display_status(self) -> str:
        """``failed (stale)`` for runs failed by the stale-run sweep."""
        if self.status == "failed" and (self.error or "").startswith("stale:"):
            return "failed (stale)"
        return self.status

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready row (full id, all params, ISO times)."""
        return {
            "id": self.id, "experiment": self.experiment, "group": self.group_key, "seed": self.seed,
            "status": self.display_status, "params": self.params,
            "final_loss": _finite(self.final_loss), "test_accuracy": _finite(self.test_accuracy),
            "updates": self.updates, "duration": self.duration,
            "started": self.started_at.isoformat() if self.started_at else None,
            "created": self.created_at.isoformat() if self.created_at else None,
        }


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def build_filter(
    session: Session, *, where: str | None = None, experiment_id: int | None = None, status: str | None = None,
    check: bool = True,
) -> list[ColumnElement[bool]]:
    """The WHERE clauses of ``--where``, ``--experiment`` and ``--status`` (keys checked against the store)."""
    clauses: list[ColumnElement[bool]] = []
    if experiment_id is not None:
        clauses.append(_RUNS.experiment_id == experiment_id)
    if status is not None:
        s = status.strip().lower()
        if s not in STATUSES:
            raise ListingError(f"unknown status {status!r}{did_you_mean(s, STATUSES)}; allowed: {', '.join(STATUSES)}")
        if s == "stale":
            clauses.append(and_(_RUNS.status == "failed", _RUNS.error.like("stale:%")))
        else:
            clauses.append(_RUNS.status == s)
    if where is not None:
        from expsvc.analysis.grammar import check_keys, compile_node, parse  # only for --where (import cost)

        node = parse(where)
        if check:
            check_keys(node, where, param_keys(session), summary_keys(session))
        clauses.append(compile_node(node))
    return clauses


def _sort_clauses(sort: str) -> list[Any]:
    """ORDER BY for ``--sort [-|+]KEY`` (``-`` descending); missing values last."""
    text = sort.strip()
    desc = text.startswith("-")
    key = text.lstrip("+-").strip()
    if key in TIME_FIELDS:
        exprs = [TIME_FIELDS[key]]
    else:
        from expsvc.analysis.grammar import RUN_FIELDS, Field, GrammarError, parse_field  # only for --sort

        try:
            f: Field = parse_field(key)
        except GrammarError as err:
            choices = [*TIME_FIELDS, *RUN_FIELDS, "params.<key>", "metrics.<key>", "min(<key>)"]
            raise ListingError(f"bad --sort {sort!r}: {err.message}; allowed: {', '.join(choices)} "
                               f"(prefix '-' for descending)") from err
        if f.kind == "param":
            exprs = [
                select(_PARAMS[c]).where(_PARAMS.run_id == _RUNS.id, _PARAMS.key == f.key)
                .scalar_subquery() for c in ("value_num", "value_text")
            ]
        elif f.kind == "summary":
            sums = MetricSummary.__table__.c
            exprs = [select(sums[f.stat]).where(sums.run_id == _RUNS.id, sums.key == f.key).scalar_subquery()]
        else:
            exprs = [RUN_FIELDS[f.key][0]]
    return [(e.desc() if desc else e.asc()).nulls_last() for e in exprs]


def listing_query(clauses: Sequence[ColumnElement[bool]], sort: str | None, limit: int | None) -> Select[Any]:
    """The single query of ``expsvc runs``: runs ⋈ experiments ⟕ the two summaries shown."""
    r = _RUNS
    exp = Experiment.__table__
    loss = MetricSummary.__table__.alias()
    acc = MetricSummary.__table__.alias()
    q = (
        select(r.id, exp.c.name, r.seed, r.status, r.error, loss.c.last, acc.c.last, r.updates, r.duration,
               r.started_at, r.created_at, r.group_key)
        .join(exp, exp.c.id == r.experiment_id)
        .outerjoin(loss, and_(loss.c.run_id == r.id, loss.c.key == "loss"))
        .outerjoin(acc, and_(acc.c.run_id == r.id, acc.c.key == "test_accuracy"))
        .where(*clauses)
    )
    order = _sort_clauses(sort) if sort else []
    q = q.order_by(*order, r.created_at.desc(), r.id)
    if limit is not None:
        if limit < 1:
            raise ListingError(f"--limit {limit}: must be a positive number of runs")
        if limit < 2**63:  # larger than any table, and than SQL's 64-bit LIMIT: no limit at all
            q = q.limit(limit)
    return q


def list_runs(
    session: Session, *, where: str | None = None, experiment_id: int | None = None, status: str | None = None,
    sort: str | None = None, limit: int | None = None,
) -> list[RunRow]:
    """Runs matching the filters, newest first (or by ``sort``), with their parameters; no histories."""
    clauses = build_filter(session, where=where, experiment_id=experiment_id, status=status)
    rows = [RunRow(*r) for r in session.execute(listing_query(clauses, sort, limit))]
    by_id = {r.id: r for r in rows}
    ids = list(by_id)
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        q = select(_PARAMS.run_id, _PARAMS.key, _PARAMS.value_num, _PARAMS.value_text).where(
            _PARAMS.run_id.in_(chunk))
        for run_id, key, num, text in session.execute(q):
            by_id[run_id].params[key] = param_value(text, num)
    return rows


def select_run_ids(
    session: Session, *, where: str | None = None, experiment_id: int | None = None, status: str | None = None,
) -> list[str]:
    """Ids of the runs matching the filters (oldest first)."""
    clauses = build_filter(session, where=where, experiment_id=experiment_id, status=status)
    return list(session.scalars(select(Run.id).where(*clauses).order_by(Run.created_at, Run.id)))


def varying_params(rows: Sequence[RunRow]) -> list[str]:
    """The parameters worth a column: the fewest that tell the listed configurations apart."""
    configs = {r.group_key: r.params for r in rows}
    return label_keys(list(configs.values()))


def identifying_params(session: Session, rows: Sequence[RunRow]) -> list[str]:
    """The columns that identify the listed runs: the optimizer, the parameters that tell the configurations
    of each listed run's experiment apart -- all of the experiment's configurations, not only the printed
    ones, so that three printed adamw runs of an adamw-vs-lion experiment still say adamw -- and those that
    vary among the listed runs.
    """
    names = sorted({r.experiment for r in rows})
    exp = Experiment.__table__.c
    configs: dict[tuple[str, str], dict[str, Any]] = {}
    for i in range(0, len(names), 500):
        q = (select(exp.name, _RUNS.group_key, _PARAMS.key, _PARAMS.value_text, _PARAMS.value_num).distinct()
             .join(Run.__table__, _RUNS.id == _PARAMS.run_id).join(Experiment.__table__, exp.id == _RUNS.experiment_id)
             .where(exp.name.in_(names[i : i + 500])))
        for name, group, key, text, num in session.execute(q):
            configs.setdefault((name, group), {})[key] = param_value(text, num)
    for r in rows:  # runs without stored parameters still count as a configuration
        configs.setdefault((r.experiment, r.group_key), r.params)
    keys: list[str] = ["optimizer"] if any("optimizer" in r.params for r in rows) else []
    for name in names:
        keys += [k for k in label_keys([c for (n, _), c in configs.items() if n == name]) if k not in keys]
    return keys + [k for k in varying_params(rows) if k not in keys]  # and what varies among the rows


@dataclass
class RunDetails:
    """Everything ``expsvc show`` prints about one run."""

    id: str
    experiment: str
    status: str
    error: str | None
    seed: int
    group_key: str
    config: dict[str, Any]
    columns: dict[str, Any]
    components: list[dict[str, Any]]
    summaries: dict[str, dict[str, Any]]
    loss: list[float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "id": self.id, "experiment": self.experiment, "status": self.status, "error": self.error,
            "seed": self.seed, "group": self.group_key, "config": self.config,
            "run": {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.columns.items()},
            "components": self.components, "summaries": self.summaries,
        }


def run_details(session: Session, run_id: str) -> RunDetails:
    """Load one run (full id) with its components, summaries and loss history."""
    run = session.get(Run, run_id)
    if run is None:
        raise ListingError(f"no run {run_id!r}")
    exp = session.get(Experiment, run.experiment_id)
    comps = session.scalars(select(RunComponent).where(RunComponent.run_id == run_id)
                            .order_by(RunComponent.position))
    sums = session.execute(select(MetricSummary.key, *[getattr(MetricSummary, c) for c in _SUMMARY_COLS])
                           .where(MetricSummary.run_id == run_id).order_by(MetricSummary.key))
    from expsvc.store import history

    loss = history.read(session, MetricChunk.run_id == run_id, MetricChunk.key == "loss").get(run_id, {}).get("loss")
    status = run.status
    if status == "failed" and (run.error or "").startswith("stale:"):
        status = "failed (stale)"
    cols = {c: getattr(run, c) for c in ("created_at", "started_at", "ended_at", "duration", "updates", "epochs",
                                         "converged", "steps_per_epoch", "host", "pid", "expsvc_version",
                                         "numpy_version")}
    return RunDetails(
        id=run.id, experiment=exp.name if exp else "?", status=status, error=run.error, seed=run.seed,
        group_key=run.group_key, config=dict(run.config or {}), columns=cols,
        components=[{"kind": c.kind, "name": c.name, "spec": c.spec, "plugin": c.plugin, "package": c.package,
                     "version": c.version} for c in comps],
        summaries={row[0]: dict(zip(_SUMMARY_COLS, row[1:], strict=True)) for row in sums},
        loss=[] if loss is None else loss[1].tolist(),
    )


def count_rows(session: Session) -> dict[str, int]:
    """Row counts of every table (used to prove that filters never change the database)."""
    out = {}
    for model in (Experiment, Run, RunParam, MetricSummary, MetricChunk, RunComponent):
        out[model.__tablename__] = int(session.scalar(select(func.count()).select_from(model)) or 0)
    return out
