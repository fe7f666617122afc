"""The run store: writes runs, parameters, metric history and summaries; reads them back for analysis.

Every training worker process opens its own :class:`RunStore`.  Write methods run in one short transaction
each (on SQLite ``BEGIN IMMEDIATE``, so concurrent writers queue on the 30 s busy timeout instead of
failing).  History is stored in chunks (:mod:`expsvc.store.history`); NaN is stored as NULL in summaries and
read back as NaN.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import socket
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from expsvc import files
from expsvc.errors import did_you_mean
from expsvc.store import migrate
from expsvc.store.engine import (
    StoreError,
    StoreFullError,
    as_utc,
    default_url,
    display_url,
    first_line,
    make_engine,
    parse_url,
    sqlite_path,
    translate_errors,
    utcnow,
    write_engine,
)
from expsvc.store.models import Base, Experiment, MetricChunk, MetricSummary, Run, RunArtifact, RunComponent, RunParam
from expsvc.store.vocab import (  # noqa: F401 (STATUSES: re-exported)
    FINISHED_STATUSES,
    RESUMABLE,
    STATUSES,
    SUMMARY_FIELDS,
    UNFINISHED,
    decode_param,
    encode_param,
)

DEFAULT_STALE_SECONDS = 600.0
if TYPE_CHECKING:  # numpy and the history module load on first use: read-only commands never need them
    import numpy as np

    from expsvc.store import history

_IN_CHUNK = 500  # ids per IN (...) list; far below SQLite's variable limit
_HEX = re.compile(r"[0-9a-f]+")

_chunk_table = MetricChunk.__table__
_summaries = MetricSummary.__table__
_runs = Run.__table__
_params = RunParam.__table__


@dataclass
class NewRun:
    """A run to create: its seed, configuration group, full config and flattened scalar params."""

    seed: int
    group_key: str
    config: dict
    params: dict[str, object]


@dataclass
class ComponentRecord:
    """A component a run used, with the plugin/package/version that provided it."""

    kind: str
    name: str
    spec: str
    plugin: str
    package: str | None
    version: str | None


# --------------------------------------------------------------------------------------------- helpers


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterator[Sequence[Any]]:
    """Consecutive slices of at most ``size`` items (for IN lists)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _num(value: Any) -> float | None:
    """A float for a FLOAT column: NaN (and None) become NULL."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
"""Characters some backend cannot store: NUL (PostgreSQL text) and unpaired surrogates (not UTF-8 at all)."""


def storable(text: str, what: str) -> str:
    """``text`` if every backend can store it, else a StoreError naming it: the same rule on SQLite and PostgreSQL."""
    bad = _UNSTORABLE.search(text)
    if bad is None:
        return text
    char = "a NUL character" if bad.group() == "\x00" else "an unpaired surrogate"
    shown = text if len(text) <= 60 else text[:57] + "..."
    raise StoreError(f"{what} {shown!r} cannot be stored: it contains {char} at position {bad.start()}; remove it")


def _storable_json(value: Any, what: str) -> None:
    """:func:`storable` for every string (and key) inside a JSON value."""
    if isinstance(value, str):
        storable(value, what)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                storable(key, f"{what} key")
            _storable_json(item, f"{what} {key!r}" if isinstance(key, str) else what)
    elif isinstance(value, list | tuple):
        for item in value:
            _storable_json(item, what)


def _safe_text(text: str | None) -> str | None:
    """Text written by expsvc itself (error messages, host names) with unstorable characters escaped."""
    if text is None or _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub(lambda m: m.group().encode("unicode_escape", "backslashreplace").decode(), text)


def _insert_ignoring_conflicts(conn: sa.Connection, table: sa.Table, keys: list[str]) -> Any:
    """``INSERT ... ON CONFLICT (keys) DO NOTHING`` on PostgreSQL and SQLite, a plain INSERT elsewhere."""
    name = conn.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing(index_elements=keys)
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing(index_elements=keys)
    return table.insert()


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:  # pragma: no cover
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _stale_seconds() -> float:
    raw = os.environ.get("EXPSVC_STALE_SECONDS")
    if not raw:
        return DEFAULT_STALE_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        raise StoreError(f"EXPSVC_STALE_SECONDS must be a number of seconds, not {raw!r}") from None
    if not seconds > 0:
        raise StoreError(f"EXPSVC_STALE_SECONDS must be positive, not {raw!r}")
    return seconds


def heartbeat_seconds() -> float:
    """How often a running run's heartbeat is written: a quarter of the stale limit, between 0.2 s and 60 s."""
    return min(60.0, max(0.2, _stale_seconds() / 4))


class _Heartbeat:
    """A daemon thread writing ``heartbeat_at`` for the runs a store started, by time (not by steps).

    Steps can take minutes (a large model, a slow plugin); the heartbeat must not wait for them, or a
    reader on another host would call a live run stale.  The thread only ever holds the write lock for
    one short UPDATE.
    """

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.run_ids: set[str] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.interval = heartbeat_seconds()
        self.thread = threading.Thread(target=self._loop, name="expsvc-heartbeat", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.wait(self.interval):
            with self.lock:
                ids = sorted(self.run_ids)
            if ids:  # a busy or vanished store: the next beat tries again; training goes on
                with contextlib.suppress(StoreError, exc.SQLAlchemyError):
                    self.store.heartbeat(ids)

    def close(self) -> None:
        self.stop.set()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=5)


def _aware_datetimes(target: Any, _context: Any) -> None:
    """Give ORM-loaded datetimes a UTC tzinfo (SQLite returns naive UTC datetimes)."""
    for attr in sa.inspect(type(target)).column_attrs:
        value = target.__dict__.get(attr.key)
        if isinstance(value, datetime) and value.tzinfo is None:
            set_committed_value(target, attr.key, as_utc(value))


event.listen(Base, "load", _aware_datetimes, propagate=True)
event.listen(Base, "refresh", lambda target, context, _attrs: _aware_datetimes(target, context), propagate=True)


# ------------------------------------------------------------------------------------------- the store


class RunStore:
    """Tracked runs in SQL (SQLite file or PostgreSQL), created and migrated on open."""

    def __init__(self, url: str, engine: sa.Engine, *, verified: bool = True, read_only: str | None = None) -> None:
        """Wrap an engine whose database is already at head; use :meth:`open` instead.

        ``verified=False``: the SQLite file has not been integrity-checked whole yet, so the first write
        transaction checks it first (a corrupt file is never written).  ``read_only``: why the SQLite file
        cannot be written (read-only mount or folder); reads work, writes raise a one-line StoreError.
        """
        self.url = url
        self.engine = engine
        self._verified = verified or sqlite_path(url) is None
        self.read_only = read_only
        self._heartbeat: _Heartbeat | None = None
        self._batch: tuple[int, sa.Connection] | None = None  # (thread id, connection) of an open batch()
        self._writer = write_engine(engine)
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(self._writer, expire_on_commit=False)
        path = sqlite_path(url)
        self._where = str(path) if path is not None else display_url(url)
        if path is not None:
            files.protect(path)  # no output of this process may replace it

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(
        cls, url: str | None = None, *, create: bool = True, upgrade: bool = True, mark_stale: bool = True,
        verify: bool | None = None,
    ) -> RunStore:
        """Open (creating and/or upgrading as allowed) the store at ``url`` (default: :func:`default_url`).

        ``verify`` (default: ``upgrade``): integrity-check a SQLite file of any size before this store's first
        write.  Worker processes open with ``upgrade=False``: their parent prepared and checked the store.
        """
        url = url or default_url()
        parse_url(url)
        prepared = migrate.prepare(url, create=create, upgrade=upgrade)
        verify = upgrade if verify is None else verify
        path = sqlite_path(url)
        read_only = None
        if path is not None:
            from expsvc.store import sqlite as sqlite_files

            read_only = sqlite_files.read_only_reason(path)
        params = sqlite_files.read_only_params(path) if read_only is not None and path is not None else None
        engine = make_engine(url, read_only=params)
        store = cls(url, engine, verified=not verify or prepared.checked, read_only=read_only)
        if mark_stale and read_only is None:  # stale runs cannot be marked in a store nobody may write
            try:
                store.mark_stale()
            except StoreFullError:
                pass  # a full disk must not stop reading; the stale runs are marked by a later open
            except BaseException:
                store.close()
                raise
        return store

    def close(self) -> None:
        """Stop the heartbeat thread (if any) and close all pooled connections."""
        if self._heartbeat is not None:
            self._heartbeat.close()
            self._heartbeat = None
        self.engine.dispose()

    def _beat(self, run_ids: Sequence[str], alive: bool) -> None:
        """Start (``alive``) or stop writing heartbeats for ``run_ids`` from this process."""
        if not alive and self._heartbeat is None:
            return
        if self._heartbeat is None:
            self._heartbeat = _Heartbeat(self)
        with self._heartbeat.lock:
            if alive:
                self._heartbeat.run_ids.update(run_ids)
            else:
                self._heartbeat.run_ids.difference_update(run_ids)

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunStore({display_url(self.url)!r})"

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        """An ORM session: commit on success, rollback on error (``write=True``: take the write lock first)."""
        factory = self._write_sessions if write else self._sessions
        if write:
            self._writable()
        with translate_errors(self._where), factory() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Make this thread's writes inside one transaction (one commit for a group's per-run records instead of
        one per run and table); nested calls join the outer batch, other threads are not affected."""
        if self._batch is not None and self._batch[0] == threading.get_ident():
            yield
            return
        self._writable()
        with translate_errors(self._where), self._writer.begin() as conn:
            self._batch = (threading.get_ident(), conn)
            try:
                yield
            finally:
                self._batch = None

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[sa.Connection]:
        """A Core connection in one transaction (write lock taken at BEGIN when ``write``), or this thread's
        :meth:`batch` transaction."""
        if write and self._batch is not None and self._batch[0] == threading.get_ident():
            yield self._batch[1]
            return
        engine = self._writer if write else self.engine
        if write:
            self._writable()
        with translate_errors(self._where), engine.begin() as conn:
            yield conn

    def _writable(self) -> None:
        """Raise a one-line StoreError before a write that must not happen (read-only or corrupt file)."""
        if self.read_only is not None:
            raise StoreError(f"{self._where} is read-only ({self.read_only}); nothing was written")
        if not self._verified:
            self._verify()

    def _verify(self) -> None:
        """``PRAGMA quick_check`` the whole SQLite file (read-only) before the first write; StoreError if corrupt."""
        from expsvc.store import sqlite as sqlite_files

        path = sqlite_path(self.url)
        if path is not None:
            try:
                sqlite_files.inspect_file(path, quick_check=True)
            except StoreError as err:
                raise StoreError(f"{err}; nothing was written") from None
        self._verified = True
    @contextmanager
    def reading(self) -> Iterator[sa.Connection]:
        """A Core connection in one read transaction: what :mod:`expsvc.store.read` queries through."""
        with self._tx(write=False) as conn:
            yield conn

    def current_revision(self) -> str | None:
        """The schema revision of the database (head after a successful open)."""
        with self._tx(write=False) as conn:
            return migrate._revision_of(conn)

    # ------------------------------------------------------------------ writing

    @staticmethod
    def _check_experiment(name: str, description: str | None) -> None:
        if not name or not name.strip():
            raise StoreError("an experiment name must not be empty")
        if len(name) > 200:
            raise StoreError(f"experiment name is too long ({len(name)} characters, at most 200)")
        storable(name, "experiment name")
        if description is not None:
            storable(description, "experiment description")

    @staticmethod
    def _experiment_in(conn: sa.Connection, name: str, description: str | None) -> int | None:
        """The id of experiment ``name`` inside ``conn``'s transaction, inserted if missing (None: lost a race)."""
        table = Experiment.__table__
        found = conn.execute(sa.select(table.c.id).where(table.c.name == name)).scalar()
        if found is not None:
            return int(found)
        values = {"name": name, "description": description, "created_at": utcnow()}
        insert = _insert_ignoring_conflicts(conn, table, ["name"]).values(**values)
        if conn.dialect.insert_returning:
            created = conn.execute(insert.returning(table.c.id)).scalar()
        else:
            created = conn.execute(insert).inserted_primary_key[0]
        return None if created is None else int(created)

    def get_or_create_experiment(self, name: str, description: str | None = None) -> int:
        """The id of the experiment ``name``, created if needed (safe when several processes race)."""
        return self.create_experiment_runs(name, description, [])[0]

    def create_experiment_runs(
        self, name: str, description: str | None, groups: Sequence[Sequence[NewRun]]
    ) -> tuple[int, list[list[str]]]:
        """The experiment ``name`` (created if needed) and its new queued runs, per group, in ONE transaction.

        Either the experiment row and every run are committed, or nothing is: a store that fails half-way
        (corrupt, full disk, a value it cannot hold) is left as it was.
        """
        self._check_experiment(name, description)
        prepared = [self._run_rows(list(group)) for group in groups]
        for _attempt in range(5):
            try:
                with self._tx() as conn:
                    experiment_id = self._experiment_in(conn, name, description)
                    if experiment_id is None:
                        continue  # another process committed the same name meanwhile: read it next time
                    for run_rows, param_rows in prepared:
                        self._insert_runs(conn, experiment_id, run_rows, param_rows)
                    return experiment_id, [[row["id"] for row in run_rows] for run_rows, _ in prepared]
            except exc.IntegrityError as err:
                if any(rows for rows, _ in prepared) and "name" not in str(err.orig).lower():
                    raise StoreError(f"cannot create runs in experiment {name!r}: {first_line(err)}") from None
                continue  # a backend without ON CONFLICT: the unique constraint caught the race
            except exc.StatementError as err:
                if isinstance(err.orig, TypeError | ValueError):
                    raise StoreError(f"run config is not JSON-serialisable: {err.orig}") from None
                raise
        raise StoreError(f"could not create experiment {name!r} (concurrent creation kept failing)")

    def _run_rows(self, runs: Sequence[NewRun]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The ``runs`` and ``run_params`` rows of new queued runs (ids: uuid4 hex), every value checked first.

        A queued run records the host and pid of the process that queued it, so a run whose queuing process
        died before it started shows as stale (see :meth:`mark_stale`).
        """
        now = utcnow()
        host, pid = _safe_text(socket.gethostname()), os.getpid()
        run_rows: list[dict[str, Any]] = []
        param_rows: list[dict[str, Any]] = []
        for new in runs:
            run_id = uuid.uuid4().hex
            try:
                json.dumps(new.config)  # the same check on every driver (psycopg would raise a bare TypeError)
            except (TypeError, ValueError) as err:
                raise StoreError(f"run config is not JSON-serialisable: {err}") from None
            _storable_json(new.config, "run config")
            storable(new.group_key, "run group key")
            run_rows.append({
                "id": run_id, "experiment_id": None, "group_key": new.group_key, "seed": int(new.seed),
                "status": "queued", "config": new.config, "created_at": now, "host": host, "pid": pid,
            })
            for key, value in new.params.items():
                storable(key, "parameter name")
                text, num = encode_param(value)
                if text is not None:
                    storable(text, f"parameter {key!r}")
                param_rows.append({"run_id": run_id, "key": key, "value_text": text, "value_num": num})
        return run_rows, param_rows

    @staticmethod
    def _insert_runs(conn: sa.Connection, experiment_id: int, run_rows: list[dict[str, Any]],
                     param_rows: list[dict[str, Any]]) -> None:
        if not run_rows:
            return
        conn.execute(_runs.insert(), [{**row, "experiment_id": experiment_id} for row in run_rows])
        if param_rows:
            conn.execute(_params.insert(), param_rows)

    def create_runs(self, experiment_id: int, runs: Sequence[NewRun]) -> list[str]:
        """Create queued runs with their typed params; return their ids (uuid4 hex)."""
        run_rows, param_rows = self._run_rows(runs)
        if not run_rows:
            return []
        try:
            with self._tx() as conn:
                self._insert_runs(conn, experiment_id, run_rows, param_rows)
        except exc.IntegrityError as err:
            raise StoreError(f"cannot create runs in experiment {experiment_id}: {err.orig}") from None
        except exc.StatementError as err:
            if isinstance(err.orig, TypeError | ValueError):
                raise StoreError(f"run config is not JSON-serialisable: {err.orig}") from None
            raise
        return [row["id"] for row in run_rows]

    def start_runs(
        self,
        run_ids: Sequence[str],
        *,
        host: str,
        pid: int,
        expsvc_version: str,
        numpy_version: str,
        steps_per_epoch: int | None = None,
    ) -> None:
        """Mark runs running on ``host``/``pid`` (started_at and heartbeat_at = now)."""
        now = utcnow()
        values = {
            "status": "running",
            "started_at": now,
            "heartbeat_at": now,
            "host": _safe_text(host),
            "pid": pid,
            "expsvc_version": expsvc_version,
            "numpy_version": numpy_version,
            "steps_per_epoch": steps_per_epoch,
            "error": None,
        }
        with self._tx() as conn:
            for ids in _chunks(list(run_ids)):
                conn.execute(_runs.update().where(_runs.c.id.in_(ids)).values(**values))
        self._beat(run_ids, alive=True)  # by time from now on, until the runs finish

    def append_history(self, key: str, chunks: Sequence[tuple[str, int, np.ndarray]]) -> None:
        """Append points to metric ``key`` and update its summaries and the runs' heartbeats, in one transaction.

        Each ``(run_id, first_step, values)`` becomes one chunk row (:mod:`expsvc.store.history`); steps that a
        run already has for ``key`` are refused.
        """
        self.append_histories({key: chunks})

    def append_histories(self, by_key: Mapping[str, Sequence[tuple[str, int, np.ndarray]]]) -> None:
        """:meth:`append_history` for several metrics in one transaction and a fixed number of statements
        (one summaries read, one chunk insert, one summaries write, one heartbeat), however many metrics:
        the per-epoch evaluation writes about fifteen at each flush."""
        import numpy as np

        from expsvc.store import history

        parsed_by_key: dict[str, list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]] = {}
        for key, chunks in by_key.items():
            storable(key, "metric name")
            parsed: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
            for run_id, first_step, raw in chunks:
                values = np.asarray(raw, dtype=np.float64)
                if values.ndim > 1:
                    raise StoreError(f"history values must be 1-D, got shape {values.shape} for run {run_id}")
                values = values.reshape(-1)
                if values.size == 0:
                    continue
                first = int(first_step)
                try:
                    history.check_steps(first, values.size)
                except ValueError as err:
                    raise StoreError(str(err)) from None
                steps = np.arange(first, first + values.size, dtype=np.int64)
                parsed.append((run_id, steps, values, np.isnan(values)))
            if parsed:
                parsed_by_key[key] = parsed
        if not parsed_by_key:
            return
        keys = list(parsed_by_key)
        run_ids = list(dict.fromkeys(run_id for parsed in parsed_by_key.values() for run_id, *_ in parsed))
        shown, what = ", ".join(run_id[:8] for run_id in run_ids), ", ".join(map(repr, keys))
        try:
            with self._tx() as conn:
                loaded = self._load_summaries(conn, run_ids, keys)
                states_by_key: dict[str, dict[str, history.SummaryState]] = {}
                for key, parsed in parsed_by_key.items():
                    states = {run_id: state for (run_id, k), state in loaded.items() if k == key}
                    clashing = self._clashing_steps(conn, key, parsed, states)
                    if clashing:
                        shown = ", ".join(run_id[:8] for run_id in clashing)
                        raise StoreError(f"history for metric {key!r} already has some of these steps (runs {shown})")
                    states_by_key[key] = states
                conn.execute(_chunk_table.insert(), [
                    {"run_id": run_id, "key": key, "first_step": int(steps[0]), "count": int(steps.size),
                     "data": history.encode(values)}
                    for key, parsed in parsed_by_key.items() for run_id, steps, values, _ in parsed
                ])  # fmt: skip
                for key, parsed in parsed_by_key.items():
                    states = states_by_key[key]
                    for run_id, steps, values, nan in parsed:
                        states.setdefault(run_id, history.SummaryState(None)).add(steps, values, nan)
                    for run_id, state in list(states.items()):
                        if state.recompute:  # out of order: from the stored history (the new chunks included)
                            steps, values = self._history_in(conn, run_id, key)
                            fresh = history.SummaryState(None)
                            fresh.exists = state.exists
                            fresh.add(steps, values, np.isnan(values))
                            states[run_id] = fresh
                self._write_summaries(conn, states_by_key)
                now = utcnow()
                for ids in _chunks(run_ids):
                    conn.execute(_runs.update().where(_runs.c.id.in_(ids)).values(heartbeat_at=now))
        except exc.IntegrityError as err:
            message = str(err.orig).lower()
            if "unique" in message or "duplicate" in message:
                raise StoreError(f"history for metric {what} already has some of these steps (runs {shown})") from None
            raise StoreError(f"cannot append history for metric {what}: unknown run among {shown}") from None

    def _clashing_steps(
        self,
        conn: sa.Connection,
        key: str,
        parsed: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
        states: dict[str, history.SummaryState],
    ) -> list[str]:
        """The runs whose new chunks overlap each other or steps already stored for ``key``.

        A summary's ``last_step`` is the run's largest stored step (out-of-order appends recompute it), so
        the usual append (every new step after it) needs no query; only runs appending earlier steps, or
        without a summary to tell, get their stored spans read.
        """
        from expsvc.store import history

        spans: dict[str, list[tuple[int, int]]] = {}
        for run_id, steps, _, _ in parsed:
            spans.setdefault(run_id, []).append((int(steps[0]), int(steps.size)))
        clashing = []
        for run_id, new in spans.items():
            state = states.get(run_id)
            after_all = state is None or (state.last_step is not None and min(f for f, _ in new) > state.last_step)
            if after_all:
                stored: list[tuple[int, int]] = []
            else:
                rows = conn.execute(
                    sa.select(_chunk_table.c.first_step, _chunk_table.c.count)
                    .where(_chunk_table.c.run_id == run_id, _chunk_table.c.key == key)
                ).all()
                stored = [(int(first), int(count)) for first, count in rows]
            if (len(new) > 1 or stored) and history.overlaps([*new, *stored]):
                clashing.append(run_id)
        return clashing

    def _load_summaries(self, conn: sa.Connection, run_ids: list[str],
                        keys: list[str]) -> dict[tuple[str, str], history.SummaryState]:
        """The stored summaries of ``keys`` for ``run_ids``, by (run id, key) (locked for update on servers)."""
        from expsvc.store import history

        states: dict[tuple[str, str], history.SummaryState] = {}
        for ids in _chunks(run_ids):
            query = sa.select(_summaries).where(_summaries.c.run_id.in_(ids), _summaries.c.key.in_(keys))
            if conn.dialect.name != "sqlite":
                query = query.with_for_update()
            for row in conn.execute(query):
                states[(row.run_id, row.key)] = history.SummaryState(row)
        return states

    def _write_summaries(self, conn: sa.Connection,
                         by_key: dict[str, dict[str, history.SummaryState]]) -> None:
        inserts = [{"run_id": run_id, "key": key, **state.row()}
                   for key, states in by_key.items() for run_id, state in states.items() if not state.exists]
        updates = [{"b_run_id": run_id, "b_key": key, **state.row()}
                   for key, states in by_key.items() for run_id, state in states.items() if state.exists]
        if inserts:
            conn.execute(_summaries.insert(), inserts)
        if updates:
            statement = (
                _summaries.update()
                .where(_summaries.c.run_id == sa.bindparam("b_run_id"), _summaries.c.key == sa.bindparam("b_key"))
                .values({name: sa.bindparam(name) for name in SUMMARY_FIELDS})
            )
            conn.execute(statement, updates)

    def heartbeat(self, run_ids: Sequence[str]) -> None:
        """Set heartbeat_at = now for these runs."""
        now = utcnow()
        with self._tx() as conn:
            for ids in _chunks(list(run_ids)):
                conn.execute(_runs.update().where(_runs.c.id.in_(ids)).values(heartbeat_at=now))

    def log_values(self, run_id: str, values: dict[str, float]) -> None:
        """Store single-valued metrics (test accuracy...) as summaries with count 1 (replacing earlier ones)."""
        if not values:
            return
        rows = []
        for key, raw in values.items():
            storable(key, "metric name")
            value = _num(raw)
            rows.append(
                {
                    "run_id": run_id,
                    "key": key,
                    "first": value,
                    "last": value,
                    "last_step": None,
                    "min": value,
                    "min_step": None,
                    "max": value,
                    "max_step": None,
                    "mean": value,
                    "count": 1,
                    "nan_count": 1 if value is None else 0,
                }
            )
        try:
            with self._tx() as conn:
                conn.execute(
                    _summaries.delete().where(_summaries.c.run_id == run_id, _summaries.c.key.in_(list(values)))
                )
                conn.execute(_summaries.insert(), rows)
        except exc.IntegrityError:
            raise StoreError(f"cannot log values: unknown run {run_id}") from None

    def set_components(self, run_id: str, components: Sequence[ComponentRecord]) -> None:
        """Record (replacing any earlier record) the components a run used, in order."""
        table = RunComponent.__table__
        for c in components:
            for label, text in (("name", c.name), ("spec", c.spec), ("plugin", c.plugin), ("package", c.package),
                                ("version", c.version), ("kind", c.kind)):
                if text is not None:
                    storable(text, f"component {label}")
        rows = [
            {
                "run_id": run_id,
                "position": position,
                "kind": c.kind,
                "name": c.name,
                "spec": c.spec,
                "plugin": c.plugin,
                "package": c.package,
                "version": c.version,
            }
            for position, c in enumerate(components)
        ]
        try:
            with self._tx() as conn:
                conn.execute(table.delete().where(table.c.run_id == run_id))
                if rows:
                    conn.execute(table.insert(), rows)
        except exc.IntegrityError:
            raise StoreError(f"cannot record components: unknown run {run_id}") from None

    def save_params(self, run_id: str, arrays: dict[str, np.ndarray]) -> None:
        """Store the final parameters as a compressed ``.npz`` blob (artifact kind ``params``)."""
        import numpy as np

        buffer = io.BytesIO()
        arrays = {name: np.asarray(value) for name, value in arrays.items()}
        np.savez_compressed(buffer, **arrays)
        data = buffer.getvalue()
        meta = {
            "format": "npz",
            "arrays": {name: {"shape": list(a.shape), "dtype": a.dtype.str} for name, a in arrays.items()},
        }
        table = RunArtifact.__table__
        try:
            with self._tx() as conn:
                conn.execute(table.delete().where(table.c.run_id == run_id, table.c.kind == "params"))
                conn.execute(table.insert().values(run_id=run_id, kind="params", data=data, meta=meta))
        except exc.IntegrityError:
            raise StoreError(f"cannot save parameters: unknown run {run_id}") from None

    def load_params(self, run_id: str) -> dict[str, np.ndarray]:
        """The parameters saved by :meth:`save_params` (StoreError if there are none)."""
        import numpy as np

        table = RunArtifact.__table__
        with self._tx(write=False) as conn:
            data = conn.execute(
                sa.select(table.c.data).where(table.c.run_id == run_id, table.c.kind == "params")
            ).scalar()
        if data is None:
            raise StoreError(f"run {run_id} has no saved parameters (it did not finish training?)")
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}

    def finish_run(
        self,
        run_id: str,
        status: str,
        *,
        error: str | None = None,
        updates: int | None = None,
        epochs: int | None = None,
        converged: bool | None = None,
        duration: float | None = None,
    ) -> None:
        """Record the end of a run (status, ended_at = now, and whatever counters are given)."""
        if status not in FINISHED_STATUSES:
            raise StoreError(f"cannot finish a run with status {status!r} (one of {', '.join(FINISHED_STATUSES)})")
        values: dict[str, Any] = {"status": status, "ended_at": utcnow(), "error": _safe_text(error)}
        for name, value in (("updates", updates), ("epochs", epochs), ("converged", converged), ("duration", duration)):
            if value is not None:
                values[name] = value
        self._beat([run_id], alive=False)
        with self._tx() as conn:
            result = conn.execute(_runs.update().where(_runs.c.id == run_id).values(**values))
            if result.rowcount == 0:
                raise StoreError(f"cannot finish run {run_id}: no such run")

    def mark_unfinished(self, run_ids: Sequence[str], status: str = "interrupted", error: str | None = None, *,
                        only: Sequence[str] = UNFINISHED) -> int:
        """Give runs still queued/running (or only those in ``only``) the final ``status``; return how many changed."""
        if status not in FINISHED_STATUSES:
            raise StoreError(f"cannot mark runs {status!r} (one of {', '.join(FINISHED_STATUSES)})")
        changed = 0
        now = utcnow()
        self._beat(run_ids, alive=False)
        with self._tx() as conn:
            for ids in _chunks(list(run_ids)):
                result = conn.execute(
                    _runs.update()
                    .where(_runs.c.id.in_(ids), _runs.c.status.in_([s for s in only if s in UNFINISHED]))
                    .values(status=status, error=_safe_text(error), ended_at=now)
                )
                changed += result.rowcount
        return changed

    def mark_stale(self) -> int:
        """Fail the runs that can no longer finish; return how many.

        On this host a ``queued`` or ``running`` run is stale exactly when the process that owns it (the one
        that queued it, then the one that runs it) is gone, and never while that process lives, however
        slow its steps.  On other hosts, whose processes cannot be asked, a ``running`` run is stale when
        its heartbeat (written by time while it trains) is older than ``EXPSVC_STALE_SECONDS``.
        """
        limit = _stale_seconds()
        host = socket.gethostname()
        now = utcnow()
        columns = (_runs.c.id, _runs.c.status, _runs.c.host, _runs.c.pid, _runs.c.heartbeat_at, _runs.c.started_at)
        with self._tx(write=False) as conn:
            found = conn.execute(sa.select(*columns).where(_runs.c.status.in_(UNFINISHED))).all()
        stale: list[tuple[str, str, datetime | None, str]] = []
        for run_id, status, run_host, pid, heartbeat_at, started_at in found:
            if run_host == host and pid is not None:
                if _pid_alive(pid):
                    continue
                when = "before the run started" if status == "queued" else "while it ran"
                stale.append((run_id, status, heartbeat_at, f"stale: its process {pid} on {host} is gone ({when})"))
            elif status == "running":
                last = as_utc(heartbeat_at) or as_utc(started_at)
                if last is None or (now - last).total_seconds() > limit:
                    since = "ever" if last is None else last.strftime("%Y-%m-%d %H:%M:%S UTC")
                    stale.append((run_id, status, heartbeat_at,
                                  f"stale: no heartbeat since {since} (limit {limit:g} s)"))
        if not stale:
            return 0
        changed = 0
        with self._tx() as conn:
            for run_id, status, heartbeat_at, reason in stale:
                beat = _runs.c.heartbeat_at.is_(None) if heartbeat_at is None else _runs.c.heartbeat_at == heartbeat_at
                result = conn.execute(
                    _runs.update()
                    .where(_runs.c.id == run_id, _runs.c.status == status, beat)
                    .values(status="failed", error=_safe_text(reason), ended_at=now)
                )
                changed += result.rowcount
        return changed

    def reset_runs(self, run_ids: Sequence[str]) -> list[str]:
        """Queue queued/failed/interrupted runs afresh (no history, summaries, components, artifacts); return them."""
        reset: list[str] = []
        cleared = {
            "status": "queued", "error": None, "started_at": None, "ended_at": None, "duration": None,
            "host": _safe_text(socket.gethostname()), "pid": os.getpid(),  # queued by this process (mark_stale)
            "heartbeat_at": None, "expsvc_version": None, "numpy_version": None,
            "updates": None, "epochs": None, "converged": None, "steps_per_epoch": None,
        }  # fmt: skip
        children = (_chunk_table, _summaries, RunComponent.__table__, RunArtifact.__table__)
        with self._tx() as conn:
            for ids in _chunks(list(dict.fromkeys(run_ids))):
                update = _runs.update().where(_runs.c.id.in_(ids), _runs.c.status.in_(RESUMABLE)).values(**cleared)
                if conn.dialect.update_returning:
                    done = list(conn.execute(update.returning(_runs.c.id)).scalars())
                else:  # pragma: no cover - backends without UPDATE ... RETURNING
                    query = sa.select(_runs.c.id).where(_runs.c.id.in_(ids), _runs.c.status.in_(RESUMABLE))
                    done = list(conn.execute(query.with_for_update()).scalars())
                    conn.execute(update)
                for table in children:
                    if done:
                        conn.execute(table.delete().where(table.c.run_id.in_(done)))
                reset.extend(done)
        return reset

    def resumable_runs(self, experiment_id: int) -> list[Run]:
        """The runs of an experiment that did not finish (queued, failed, interrupted), by group and seed."""
        with self._sessions() as session, translate_errors(self._where):
            query = (
                sa.select(Run)
                .where(Run.experiment_id == experiment_id, Run.status.in_(RESUMABLE))
                .order_by(Run.created_at, Run.group_key, Run.seed, Run.id)
            )
            return list(session.scalars(query))

    def status_counts(self, experiment_id: int) -> dict[str, int]:
        """How many runs of an experiment have each status."""
        with self._tx(write=False) as conn:
            rows = conn.execute(
                sa.select(_runs.c.status, sa.func.count())
                .where(_runs.c.experiment_id == experiment_id)
                .group_by(_runs.c.status)
            ).all()
        return {status: int(n) for status, n in rows}

    def statuses(self, run_ids: Sequence[str]) -> dict[str, str]:
        """run id → status (unknown ids are left out)."""
        result: dict[str, str] = {}
        with self._tx(write=False) as conn:
            for ids in _chunks(list(dict.fromkeys(run_ids))):
                query = sa.select(_runs.c.id, _runs.c.status).where(_runs.c.id.in_(ids))
                result.update({run_id: status for run_id, status in conn.execute(query)})
        return result

    # ------------------------------------------------------------------ reading

    def resolve_experiment(self, ref: str | None) -> Experiment:
        """The experiment named ``ref`` (or with that id); None means the latest created."""
        with self._sessions() as session, translate_errors(self._where):
            if ref is None:
                latest = session.scalars(
                    sa.select(Experiment).order_by(Experiment.created_at.desc(), Experiment.id.desc()).limit(1)
                ).first()
                if latest is None:
                    raise StoreError(f"there are no experiments in {self._where} yet; run `expsvc run` first")
                return latest
            found = session.scalars(sa.select(Experiment).where(Experiment.name == ref)).first()
            if found is None and ref.strip().isdigit():
                found = session.get(Experiment, int(ref))
            if found is not None:
                return found
            names = list(session.scalars(sa.select(Experiment.name)))
        if not names:
            raise StoreError(f"unknown experiment {ref!r}: there are no experiments in {self._where} yet")
        hint = did_you_mean(ref, names)
        if not hint and len(names) <= 10:
            hint = f" (known: {', '.join(sorted(names))})"
        raise StoreError(f"unknown experiment {ref!r}{hint}")

    def resolve_run(self, prefix: str) -> Run:
        """The run whose id starts with ``prefix`` (like git); StoreError if none or several match."""
        wanted = prefix.strip().lower()
        if not wanted or not _HEX.fullmatch(wanted) or len(wanted) > 32:
            raise StoreError(f"{prefix!r} is not a run id (run ids are hexadecimal, e.g. 3f2a9c1d)")
        with self._sessions() as session, translate_errors(self._where):
            query = sa.select(Run).where(Run.id >= wanted, Run.id < wanted + "g").order_by(Run.id).limit(11)
            matches = [run for run in session.scalars(query) if run.id.startswith(wanted)]
        if not matches:
            raise StoreError(f"no run id starts with {wanted!r}")
        if len(matches) > 1:
            shown = ", ".join(run.id[: max(len(wanted) + 4, 8)] for run in matches[:10])
            more = ", ..." if len(matches) > 10 else ""
            raise StoreError(f"run prefix {wanted!r} is ambiguous: {shown}{more}")
        return matches[0]

    def _history_in(self, conn: sa.Connection, run_id: str, key: str) -> tuple[np.ndarray, np.ndarray]:
        from expsvc.store import history

        found = history.read(conn, _chunk_table.c.run_id == run_id, _chunk_table.c.key == key)
        return found.get(run_id, {}).get(key) or history.empty()

    def history(self, run_id: str, key: str = "loss") -> tuple[np.ndarray, np.ndarray]:
        """(steps int64, values float64 with NaN) of one metric of one run, in step order."""
        with self._tx(write=False) as conn:
            return self._history_in(conn, run_id, key)

    def histories(self, run_ids: Sequence[str], key: str = "loss") -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """:meth:`history` for many runs at once (one query per 500 runs); every requested id is a key."""
        from expsvc.store import history

        with self._tx(write=False) as conn:
            found = history.read_runs(conn, run_ids, key)
        return {run_id: found.get(run_id, {}).get(key) or history.empty() for run_id in dict.fromkeys(run_ids)}

    def point_counts(self, run_ids: Sequence[str] | None = None, key: str | None = None) -> dict[str, int]:
        """run id → number of history points stored (of ``key``, or of every metric); runs without any left out."""
        from expsvc.store import history

        with self._tx(write=False) as conn:
            return history.point_counts(conn, run_ids, key)

    def summaries(self, run_ids: Sequence[str]) -> dict[str, dict[str, dict[str, float | int | None]]]:
        """run id → metric key → summary fields (first, last, min/max with steps, mean, count...)."""
        ids = list(dict.fromkeys(run_ids))
        result: dict[str, dict[str, dict[str, float | int | None]]] = {run_id: {} for run_id in ids}
        with self._tx(write=False) as conn:
            for chunk in _chunks(ids):
                for row in conn.execute(sa.select(_summaries).where(_summaries.c.run_id.in_(chunk))):
                    result[row.run_id][row.key] = {name: getattr(row, name) for name in SUMMARY_FIELDS}
        return result

    def params(self, run_ids: Sequence[str]) -> dict[str, dict[str, object]]:
        """run id → flattened params with their Python types restored."""
        ids = list(dict.fromkeys(run_ids))
        result: dict[str, dict[str, object]] = {run_id: {} for run_id in ids}
        with self._tx(write=False) as conn:
            for chunk in _chunks(ids):
                query = sa.select(_params).where(_params.c.run_id.in_(chunk)).order_by(_params.c.run_id, _params.c.key)
                for row in conn.execute(query):
                    result[row.run_id][row.key] = decode_param(row.value_text, row.value_num)
        return result

    def components(self, run_id: str) -> list[ComponentRecord]:
        """The components a run used, in the order they were recorded."""
        table = RunComponent.__table__
        with self._tx(write=False) as conn:
            rows = conn.execute(sa.select(table).where(table.c.run_id == run_id).order_by(table.c.position)).all()
        return [ComponentRecord(r.kind, r.name, r.spec, r.plugin, r.package, r.version) for r in rows]

    def delete_runs(self, run_ids: Sequence[str]) -> int:
        """Delete runs and (by ON DELETE CASCADE) everything that belongs to them; return how many."""
        deleted = 0
        with self._tx() as conn:
            for ids in _chunks(list(dict.fromkeys(run_ids))):
                deleted += conn.execute(_runs.delete().where(_runs.c.id.in_(ids))).rowcount
        return deleted
