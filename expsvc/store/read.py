"""The read API: every read command (``runs``, ``show``, ``compare``, ``plot``, ``export``, the report and
the UI) gets its data from these functions, as plain dataclasses, dicts and tuples — never a session or an
ORM object.  Each function opens one read transaction of the given :class:`~expsvc.store.RunStore`.

The SQL lives in :mod:`expsvc.store.query`; the stored vocabulary (statuses, parameter encoding, summary
columns) in :mod:`expsvc.store.vocab`.  Light on purpose: listing runs imports neither numpy nor the
``--where`` grammar (histories and filters load them on first use).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from expsvc.errors import ExpsvcError, did_you_mean
from expsvc.store.engine import as_utc
from expsvc.store.models import Experiment, MetricChunk, MetricSummary, Run, RunComponent, RunParam
from expsvc.store.query import EXPERIMENTS, PARAMS, RUNS, SUMMARIES, TIME_COLUMNS, listing_query
from expsvc.store.vocab import FILTER_STATUSES, STALE_PREFIX, SUMMARY_FIELDS, decode_param, display_status

if TYPE_CHECKING:
    import numpy as np

    from expsvc.store.store import RunStore

    Series = tuple[np.ndarray, np.ndarray]

IDS_PER_QUERY = 500
_COMPONENTS = RunComponent.__table__.c


class ReadError(ExpsvcError):
    """A bad read request (unknown status, sort key, limit, run...)."""


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), IDS_PER_QUERY):
        yield items[start : start + IDS_PER_QUERY]


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


# ---------------------------------------------------------------------------------------------- results
@dataclass
class RunRow:
    """One line of ``expsvc runs``: the run's columns, its final loss (the ``train_loss`` summary: the full
    training set with the final parameters) and test accuracy, its parameters."""

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
        return display_status(self.status, self.error)

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


@dataclass
class RunRecord:
    """What the analysis needs of one run: its columns, parameters and summaries (never its history).

    ``versions`` (read when asked) maps what produced the run to its version: ``expsvc``, ``numpy`` and
    each component's package (``package expsvc-lion``), so a comparison can see mixed versions.
    """

    id: str
    experiment_id: int
    experiment: str
    seed: int
    status: str
    group_key: str
    created_at: datetime | None = None
    started_at: datetime | None = None
    error: str | None = None
    updates: int | None = None
    epochs: int | None = None
    duration: float | None = None
    converged: bool | None = None
    steps_per_epoch: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def display_status(self) -> str:
        """``failed (stale)`` for runs failed by the stale-run sweep, the status otherwise."""
        return display_status(self.status, self.error)


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


# ------------------------------------------------------------------------------------------------ keys
def summary_keys(store: RunStore, experiment_ids: Iterable[int] | None = None) -> list[str]:
    """The distinct summary keys (of these experiments, or of all)."""
    q = sa.select(SUMMARIES.key).distinct()
    if experiment_ids is not None:
        q = q.join(Run.__table__, RUNS.id == SUMMARIES.run_id).where(RUNS.experiment_id.in_(list(experiment_ids)))
    with store.reading() as conn:
        return sorted(conn.scalars(q))


def param_keys(store: RunStore) -> list[str]:
    """The distinct parameter keys in the store."""
    with store.reading() as conn:
        return sorted(conn.scalars(sa.select(PARAMS.key).distinct()))


def experiment_names(store: RunStore) -> dict[int, str]:
    """experiment id → name."""
    with store.reading() as conn:
        return {int(i): name for i, name in conn.execute(sa.select(EXPERIMENTS.id, EXPERIMENTS.name))}


# -------------------------------------------------------------------------------------------- filtering
def _filter(
    conn: sa.Connection, *, where: str | None, experiment_ids: Sequence[int] | None, status: str | None,
    check: bool = True,
) -> list[sa.ColumnElement[bool]]:
    """The WHERE clauses of ``--where``, ``--experiment`` and ``--status`` (with ``check``, the parameter
    and metric keys ``--where`` names must exist in the store: a typo is an error, not an empty result)."""
    clauses: list[sa.ColumnElement[bool]] = []
    if experiment_ids is not None:
        clauses.append(RUNS.experiment_id.in_(list(experiment_ids)))
    if status is not None:
        s = status.strip().lower()
        if s not in FILTER_STATUSES:
            raise ReadError(f"unknown status {status!r}{did_you_mean(s, FILTER_STATUSES)}; "
                            f"allowed: {', '.join(FILTER_STATUSES)}")
        if s == "stale":
            clauses.append(sa.and_(RUNS.status == "failed", RUNS.error.like(f"{STALE_PREFIX}%")))
        else:
            clauses.append(RUNS.status == s)
    if where is not None:
        from expsvc.analysis.grammar import check_keys, parse  # only for --where (import cost)
        from expsvc.store.query import compile_node

        node = parse(where)
        if check:
            params = conn.scalars(sa.select(PARAMS.key).distinct())
            metrics = conn.scalars(sa.select(SUMMARIES.key).distinct())
            check_keys(node, where, list(params), list(metrics))
        clauses.append(compile_node(node))
    return clauses


def _order(sort: str) -> list[Any]:
    """ORDER BY for ``--sort [-|+]KEY`` (``-`` descending); missing values last."""
    text = sort.strip()
    desc = text.startswith("-")
    key = text.lstrip("+-").strip()
    if key in TIME_COLUMNS:
        exprs = [TIME_COLUMNS[key]]
    else:
        from expsvc.analysis.grammar import RUN_FIELDS, Field, GrammarError, parse_field  # only for --sort
        from expsvc.store.query import sort_field_clauses

        try:
            f: Field = parse_field(key)
        except GrammarError as err:
            choices = [*TIME_COLUMNS, *RUN_FIELDS, "params.<key>", "metrics.<key>", "min(<key>)"]
            raise ReadError(f"bad --sort {sort!r}: {err.message}; allowed: {', '.join(choices)} "
                            f"(prefix '-' for descending)") from err
        exprs = sort_field_clauses(f)
    return [(e.desc() if desc else e.asc()).nulls_last() for e in exprs]


def _params(conn: sa.Connection, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {run_id: {} for run_id in ids}
    for chunk in _chunks(list(ids)):
        q = sa.select(PARAMS.run_id, PARAMS.key, PARAMS.value_text, PARAMS.value_num).where(PARAMS.run_id.in_(chunk))
        for run_id, key, text, num in conn.execute(q):
            out[run_id][key] = decode_param(text, num)
    return out


def experiment_configs(store: RunStore, names: Iterable[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """Every configuration of the named experiments: ``(experiment, group_key) -> parameters`` (what tells
    an experiment's configurations apart, whichever of its runs are listed)."""
    wanted = sorted(set(names))
    configs: dict[tuple[str, str], dict[str, Any]] = {}
    with store.reading() as conn:
        for chunk in _chunks(wanted):
            q = (sa.select(EXPERIMENTS.name, RUNS.group_key, PARAMS.key, PARAMS.value_text, PARAMS.value_num)
                 .distinct().select_from(RunParam.__table__)
                 .join(Run.__table__, RUNS.id == PARAMS.run_id)
                 .join(Experiment.__table__, EXPERIMENTS.id == RUNS.experiment_id)
                 .where(EXPERIMENTS.name.in_(chunk)))
            for name, group, key, text, num in conn.execute(q):
                configs.setdefault((name, group), {})[key] = decode_param(text, num)
    return configs


# ------------------------------------------------------------------------------------------------ runs
def runs(
    store: RunStore, *, where: str | None = None, experiment_ids: Sequence[int] | None = None,
    status: str | None = None, sort: str | None = None, limit: int | None = None, check: bool = True,
) -> list[RunRow]:
    """Runs matching the filters, newest first (or by ``sort``), with their parameters; no histories."""
    if limit is not None and limit < 1:
        raise ReadError(f"--limit {limit}: must be a positive number of runs")
    with store.reading() as conn:
        clauses = _filter(conn, where=where, experiment_ids=experiment_ids, status=status, check=check)
        order = _order(sort) if sort else []
        rows = [RunRow(*r) for r in conn.execute(listing_query(clauses, order, limit))]
        params = _params(conn, [r.id for r in rows])
    for row in rows:
        row.params = params[row.id]
        row.started_at, row.created_at = as_utc(row.started_at), as_utc(row.created_at)
    return rows


def run_ids(
    store: RunStore, *, where: str | None = None, experiment_ids: Sequence[int] | None = None,
    status: str | None = None, check: bool = True,
) -> list[str]:
    """Ids of the runs matching the filters (oldest first)."""
    with store.reading() as conn:
        clauses = _filter(conn, where=where, experiment_ids=experiment_ids, status=status, check=check)
        return list(conn.scalars(sa.select(RUNS.id).where(*clauses).order_by(RUNS.created_at, RUNS.id)))


def records(
    store: RunStore, *, experiment_ids: Sequence[int] | None = None, run_ids: Sequence[str] | None = None,
    summary_keys: Iterable[str] | None = None, versions: bool = False,
) -> list[RunRecord]:
    """Runs of some experiments (or the given ids) with params and summaries (only ``summary_keys`` if
    given) and, with ``versions``, what produced them; oldest first."""
    exp = Experiment.__table__
    cols = [RUNS.id, RUNS.experiment_id, exp.c.name, RUNS.seed, RUNS.status, RUNS.group_key, RUNS.created_at,
            RUNS.started_at, RUNS.error, RUNS.updates, RUNS.epochs, RUNS.duration, RUNS.converged,
            RUNS.steps_per_epoch, RUNS.config, RUNS.expsvc_version, RUNS.numpy_version]
    q = sa.select(*cols).join(exp, exp.c.id == RUNS.experiment_id).order_by(RUNS.created_at, RUNS.id)
    if experiment_ids is not None:
        q = q.where(RUNS.experiment_id.in_(list(experiment_ids)))
    keys = None if summary_keys is None else sorted(set(summary_keys))
    with store.reading() as conn:
        if run_ids is None:
            rows = list(conn.execute(q))
        else:
            wanted = list(dict.fromkeys(run_ids))
            rows = [r for chunk in _chunks(wanted) for r in conn.execute(q.where(RUNS.id.in_(chunk)))]
            rows.sort(key=lambda r: (r.created_at, r.id))
        out = {
            r.id: RunRecord(
                id=r.id, experiment_id=r.experiment_id, experiment=r.name, seed=r.seed, status=r.status,
                group_key=r.group_key, created_at=as_utc(r.created_at), started_at=as_utc(r.started_at),
                error=r.error, updates=r.updates, epochs=r.epochs, duration=r.duration, converged=r.converged,
                steps_per_epoch=r.steps_per_epoch, config=dict(r.config or {}),
                versions={k: v for k, v in (("expsvc", r.expsvc_version), ("numpy", r.numpy_version)) if v},
            )
            for r in rows
        }
        ids = list(out)
        for run_id, params in _params(conn, ids).items():
            out[run_id].params = params
        for chunk in _chunks(ids):
            if keys is not None and not keys:
                break
            sq = sa.select(SUMMARIES.run_id, SUMMARIES.key, *(SUMMARIES[c] for c in SUMMARY_FIELDS)).where(
                SUMMARIES.run_id.in_(chunk))
            if keys is not None:
                sq = sq.where(SUMMARIES.key.in_(keys))
            for row in conn.execute(sq):
                out[row[0]].summaries[row[1]] = dict(zip(SUMMARY_FIELDS, row[2:], strict=True))
        if versions:
            for chunk in _chunks(ids):
                cq = sa.select(_COMPONENTS.run_id, _COMPONENTS.package, _COMPONENTS.plugin, _COMPONENTS.version
                               ).where(_COMPONENTS.run_id.in_(chunk))
                for run_id, package, plugin, version in conn.execute(cq):
                    if version:
                        out[run_id].versions[f"package {package or plugin}"] = version
    return list(out.values())


def details(store: RunStore, run_id: str) -> RunDetails:
    """One run (full id) with its components, summaries and loss history."""
    cols = ("created_at", "started_at", "ended_at", "duration", "updates", "epochs", "converged",
            "steps_per_epoch", "host", "pid", "expsvc_version", "numpy_version")
    with store.reading() as conn:
        run = conn.execute(sa.select(Run.__table__, EXPERIMENTS.name.label("experiment_name"))
                           .outerjoin(Experiment.__table__, EXPERIMENTS.id == RUNS.experiment_id)
                           .where(RUNS.id == run_id)).first()
        if run is None:
            raise ReadError(f"no run {run_id!r}")
        comps = conn.execute(sa.select(RunComponent.__table__)
                             .where(_COMPONENTS.run_id == run_id).order_by(_COMPONENTS.position)).all()
        sums = conn.execute(sa.select(SUMMARIES.key, *(SUMMARIES[c] for c in SUMMARY_FIELDS))
                            .where(SUMMARIES.run_id == run_id).order_by(SUMMARIES.key)).all()
        from expsvc.store import history

        loss = history.read(conn, history.chunks.c.run_id == run_id, history.chunks.c.key == "loss")
    series = loss.get(run_id, {}).get("loss")
    columns = {c: (as_utc(getattr(run, c)) if c.endswith("_at") else getattr(run, c)) for c in cols}
    return RunDetails(
        id=run.id, experiment=run.experiment_name or "?", status=display_status(run.status, run.error),
        error=run.error, seed=run.seed, group_key=run.group_key, config=dict(run.config or {}), columns=columns,
        components=[{"kind": c.kind, "name": c.name, "spec": c.spec, "plugin": c.plugin, "package": c.package,
                     "version": c.version} for c in comps],
        summaries={row[0]: dict(zip(SUMMARY_FIELDS, row[1:], strict=True)) for row in sums},
        loss=[] if series is None else series[1].tolist(),
    )


# ------------------------------------------------------------------------------------------- histories
def histories(store: RunStore, run_ids: Sequence[str], key: str | None = None) -> dict[str, dict[str, Series]]:
    """``{run_id: {metric: (steps int64, values float64 with NaN)}}`` of the given runs (every metric, or
    only ``key``); runs without history are left out."""
    from expsvc.store import history

    with store.reading() as conn:
        return history.read_runs(conn, run_ids, key)


def row_counts(store: RunStore) -> dict[str, int]:
    """Row counts of every table (the tests use them to prove that reads never change the database)."""
    with store.reading() as conn:
        return {model.__tablename__: int(conn.scalar(sa.select(sa.func.count()).select_from(model.__table__)) or 0)
                for model in (Experiment, Run, RunParam, MetricSummary, MetricChunk, RunComponent)}
