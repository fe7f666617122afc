"""Copy experiments between stores (``expsvc db copy``), e.g. a laptop's SQLite file into the team's PostgreSQL.

Experiments are matched by name, runs by id (uuid4 hex, unique across stores), so a run already present in
the target is never copied twice and copying again adds nothing.  Runs are copied in batches, each batch
(runs, params, history, summaries, components, artifacts) in one target transaction, so an interrupted
copy leaves only whole runs behind.  Runs still queued or running are left for a later copy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc

from expsvc.store import bulk
from expsvc.store.engine import StoreError, as_utc, display_url, parse_url, sqlite_path
from expsvc.store.models import (
    Experiment,
    ExperimentNote,
    ExperimentTag,
    MetricChunk,
    MetricSummary,
    Run,
    RunArtifact,
    RunComponent,
    RunParam,
    Study,
)
from expsvc.store.store import UNFINISHED, RunStore, _chunks, _insert_ignoring_conflicts, storable

BATCH_RUNS = 100
ROWS_PER_READ = 10_000  # child rows read and written at a time
BLOBS_PER_READ = 200  # history chunks / artifacts (blobs) read and written at a time
CHILDREN: tuple[type, ...] = (RunParam, MetricChunk, MetricSummary, RunComponent, RunArtifact)
_FAST = (RunParam, MetricSummary, RunComponent)  # plain columns: the driver's bulk path


@dataclass
class CopyReport:
    """What a copy did: experiments touched, runs copied or skipped, rows written per table."""

    source: str
    target: str
    experiments: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    copied: int = 0
    present: int = 0
    unfinished: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    points: int = 0
    studies: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the command line."""
        history = self.points
        skipped = [f"{self.present} already there"] if self.present else []
        if self.unfinished:
            skipped.append(f"{self.unfinished} still queued/running, left for a later copy")
        more = f" ({'; '.join(skipped)})" if skipped else ""
        studies = f" and {len(self.studies)} study link(s) ({', '.join(self.studies)})" if self.studies else ""
        return (f"copied {self.copied} runs with {history:,} history points in {len(self.experiments)} experiment(s)"
                f"{studies} from {self.source} to {self.target}{more}")


def _columns(table: sa.Table) -> tuple[str, ...]:
    return tuple(column.name for column in table.columns)


def _utc(row: dict[str, Any]) -> dict[str, Any]:
    """Datetimes as aware UTC (SQLite returns naive UTC; a SQLite target stores the UTC wall time)."""
    return {k: as_utc(v) if isinstance(v, datetime) else v for k, v in row.items()}


def _check_storable(table: sa.Table, row: dict[str, Any]) -> None:
    """Refuse (StoreError naming the run and column) text the target may not store: the same rule on every backend.

    An older expsvc stored names with NUL in SQLite; PostgreSQL would fail the batch with a driver error.
    """
    from expsvc.store.store import _storable_json

    run = row.get("run_id") or row.get("id") or "?"
    for column, value in row.items():
        what = f"run {str(run)[:8]}: {table.name}.{column}"
        if isinstance(value, str):
            storable(value, what)
        elif isinstance(value, dict | list):
            _storable_json(value, what)


def _target_experiment(conn: sa.Connection, source: Experiment) -> tuple[int, bool]:
    """The id of the target's experiment with ``source``'s name, created (with its date) if missing."""
    table = Experiment.__table__
    query = sa.select(table.c.id).where(table.c.name == source.name)
    found = conn.execute(query).scalar()
    if found is not None:
        return int(found), False
    values = {"name": source.name, "description": source.description, "created_at": as_utc(source.created_at)}
    conn.execute(_insert_ignoring_conflicts(conn, table, ["name"]).values(**values))
    return int(conn.execute(query).scalar_one()), True


def _copy_labels(src_store: RunStore, dst_store: RunStore, source_id: int, target_id: int) -> None:
    """The experiment's tags and notes, added to the target's (a tag or note it has already is not repeated)."""
    tags, notes = ExperimentTag.__table__, ExperimentNote.__table__
    with src_store._tx(write=False) as src:
        tag_rows = list(src.execute(sa.select(tags.c.tag).where(tags.c.experiment_id == source_id)).scalars())
        note_rows = src.execute(sa.select(notes.c.created_at, notes.c.text).where(
            notes.c.experiment_id == source_id)).all()
    with dst_store._tx() as dst:
        have = set(dst.execute(sa.select(tags.c.tag).where(tags.c.experiment_id == target_id)).scalars())
        new_tags = [{"experiment_id": target_id, "tag": t} for t in tag_rows if t not in have]
        if new_tags:
            dst.execute(tags.insert(), new_tags)
        seen = {(as_utc(c), t) for c, t in dst.execute(
            sa.select(notes.c.created_at, notes.c.text).where(notes.c.experiment_id == target_id))}
        new_notes = [{"experiment_id": target_id, "created_at": as_utc(c), "text": t} for c, t in note_rows
                     if (as_utc(c), t) not in seen]
        if new_notes:
            dst.execute(notes.insert(), new_notes)


def _present(conn: sa.Connection, run_ids: Sequence[str]) -> set[str]:
    runs = Run.__table__
    found: set[str] = set()
    for ids in _chunks(list(run_ids)):
        found.update(conn.execute(sa.select(runs.c.id).where(runs.c.id.in_(ids))).scalars())
    return found


def _rows(conn: sa.Connection, table: sa.Table, run_ids: Sequence[str]) -> Iterator[list[tuple]]:
    """The rows of ``table`` belonging to ``run_ids``, in chunks (streamed from the source)."""
    order = [table.c[name] for name in ("run_id", "key", "first_step") if name in table.c] or [table.c.run_id]
    query = sa.select(*table.columns).where(table.c.run_id.in_(list(run_ids))).order_by(*order)
    size = ROWS_PER_READ if table.name in {model.__tablename__ for model in _FAST} else BLOBS_PER_READ
    result = conn.execution_options(yield_per=size).execute(query)
    for partition in result.partitions(size):
        yield [tuple(row) for row in partition]


def _copy_batch(src: sa.Connection, dst: sa.Connection, run_ids: Sequence[str], experiment_id: int,
                rows: dict[str, int]) -> int:
    """Copy whole runs (the run rows first, then everything that belongs to them) inside ``dst``'s transaction.

    Counts the rows written per table into ``rows``; returns the number of history points copied.
    """
    runs = Run.__table__
    copied = [
        {**_utc(dict(row._mapping)), "experiment_id": experiment_id}
        for row in src.execute(sa.select(runs).where(runs.c.id.in_(list(run_ids))).order_by(runs.c.created_at))
    ]
    for row in copied:
        _check_storable(runs, row)
    dst.execute(runs.insert(), copied)
    rows[runs.name] = rows.get(runs.name, 0) + len(copied)
    points = 0
    for model in CHILDREN:
        table = model.__table__
        for chunk in _rows(src, table, run_ids):
            for values in chunk:
                _check_storable(table, dict(zip(_columns(table), values, strict=True)))
            if model in _FAST:
                bulk.insert_rows(dst, table, _columns(table), chunk)
            else:
                dst.execute(table.insert(), [dict(zip(_columns(table), row, strict=True)) for row in chunk])
            rows[table.name] = rows.get(table.name, 0) + len(chunk)
            if model is MetricChunk:
                count = _columns(table).index("count")
                points += sum(row[count] for row in chunk)
    return points


def copy_experiments(
    source: str,
    target: str,
    names: Sequence[str] | None = None,
    *,
    batch_runs: int = BATCH_RUNS,
    echo: Callable[[str], None] | None = None,
) -> CopyReport:
    """Copy experiments (all, or those named) with every finished run and its records from ``source`` to ``target``."""
    paths = (sqlite_path(source), sqlite_path(target))
    same_file = None not in paths and paths[0].resolve() == paths[1].resolve()  # type: ignore[union-attr]
    if same_file or display_url(parse_url(source)) == display_url(parse_url(target)):
        raise StoreError("the source and the target are the same database; nothing to copy")
    report = CopyReport(display_url(source), display_url(target))
    with RunStore.open(source, create=False, upgrade=False, mark_stale=False) as src_store:
        experiments = (
            [src_store.resolve_experiment(name) for name in dict.fromkeys(names)]
            if names
            else _all_experiments(src_store)
        )
        for experiment in experiments:  # before anything is written to the target
            storable(experiment.name, "experiment name")
            if experiment.description is not None:
                storable(experiment.description, f"description of experiment {experiment.name!r}")
        with RunStore.open(target, create=True, mark_stale=False) as dst_store:
            ids = _copy_experiments(src_store, dst_store, experiments, batch_runs, echo, report)
            _copy_studies(src_store, dst_store, ids, report)
    return report


def _copy_experiments(src_store: RunStore, dst_store: RunStore, experiments: list[Experiment], batch_runs: int,
                      echo: Callable[[str], None] | None, report: CopyReport) -> dict[int, int]:
    """Copy each experiment's finished runs the target lacks, in batches; return source id → target id."""
    runs = Run.__table__
    ids: dict[int, int] = {}
    for experiment in experiments:
        report.experiments.append(experiment.name)
        with src_store._tx(write=False) as src:
            listed = src.execute(
                sa.select(runs.c.id, runs.c.status)
                .where(runs.c.experiment_id == experiment.id)
                .order_by(runs.c.created_at, runs.c.id)
            ).all()
        wanted = [run_id for run_id, status in listed if status not in UNFINISHED]
        report.unfinished += len(listed) - len(wanted)
        with dst_store._tx() as dst:
            target_id, created = _target_experiment(dst, experiment)
        ids[experiment.id] = target_id
        _copy_labels(src_store, dst_store, experiment.id, target_id)
        if created:
            report.created.append(experiment.name)
        copied = 0
        for batch in _chunks(wanted, max(1, batch_runs)):
            copied += _copy_runs(src_store, dst_store, list(batch), target_id, report)
        report.copied += copied
        if echo is not None:
            echo(f"{experiment.name}: {copied} of {len(wanted)} finished runs copied")
    return ids


def _copy_studies(src_store: RunStore, dst_store: RunStore, ids: dict[int, int], report: CopyReport) -> None:
    """The studies (``expsvc tune``) whose experiments were copied, linked to the target's experiments; a study
    the target has already (same name) is left as it is.  A study's experiment that was not copied stays
    unlinked (NULL), as when it is deleted."""
    studies = Study.__table__
    with src_store._tx(write=False) as src:
        rows = [dict(r._mapping) for r in src.execute(sa.select(studies).where(
            studies.c.tuning_experiment_id.in_(list(ids)) | studies.c.confirmation_experiment_id.in_(list(ids))
        ).order_by(studies.c.created_at, studies.c.id))]
    for row in rows:
        storable(row["name"], "study name")
        with dst_store._tx() as dst:
            if dst.execute(sa.select(studies.c.id).where(studies.c.name == row["name"])).first() is not None:
                continue
            row = _utc(row)
            del row["id"]
            for key in ("tuning_experiment_id", "confirmation_experiment_id"):
                row[key] = ids.get(row[key]) if row[key] is not None else None
            dst.execute(studies.insert(), [row])
        report.studies.append(row["name"])


def _copy_runs(src_store: RunStore, dst_store: RunStore, batch: list[str], experiment_id: int,
               report: CopyReport) -> int:
    """Copy the runs of ``batch`` the target lacks; retried when a concurrent copy wrote some of them first."""
    for _attempt in range(3):
        with dst_store._tx(write=False) as dst:
            present = _present(dst, batch)
        todo = [run_id for run_id in batch if run_id not in present]
        if not todo:
            report.present += len(batch)
            return 0
        rows: dict[str, int] = {}
        try:
            with src_store._tx(write=False) as src, dst_store._tx() as dst:
                points = _copy_batch(src, dst, todo, experiment_id, rows)
        except exc.IntegrityError:
            continue  # another copy inserted some of these runs meanwhile: look again
        report.present += len(present)
        report.points += points
        for name, n in rows.items():
            report.rows[name] = report.rows.get(name, 0) + n
        return len(todo)
    raise StoreError(f"could not copy runs {batch[0][:8]}...: the target kept changing under a concurrent copy")


def _all_experiments(store: RunStore) -> list[Experiment]:
    with store.session() as session:
        return list(session.scalars(sa.select(Experiment).order_by(Experiment.created_at, Experiment.id)))
