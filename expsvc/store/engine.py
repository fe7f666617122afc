"""Engines for the run store: URL handling, SQLite connection settings and database-error translation."""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, make_url

from expsvc.errors import ExpsvcError

DEFAULT_URL = "sqlite:///experiments.db"
BUSY_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_S = 10  # PostgreSQL: give up on an unreachable server after this long
POSTGRES_HINT = "pip install 'expsvc[postgres]'"

_ENGINES: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
SQLITE_QUERY_ARGS = frozenset({"timeout", "isolation_level", "detect_types", "check_same_thread", "cached_statements"})
"""Query arguments SQLAlchemy's pysqlite driver uses itself (others would reach SQLite only as a URI)."""


class StoreError(ExpsvcError):
    """A one-line error about the run store (missing, corrupt, too new, unknown run...)."""


class StoreFullError(StoreError):
    """The store's disk (or its quota) is full: nothing more can be written, everything can still be read."""


def default_url() -> str:
    """``$EXPSVC_DB`` or ``sqlite:///experiments.db`` (relative to the working directory)."""
    return os.environ.get("EXPSVC_DB") or DEFAULT_URL


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """``value`` as an aware UTC datetime (SQLite returns naive datetimes, which are UTC here)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_url(url: str) -> URL:
    """Parse a SQLAlchemy URL, turning a malformed one into a StoreError."""
    try:
        parsed = make_url(url)
    except (exc.ArgumentError, ValueError) as err:
        raise StoreError(f"invalid database URL {url!r}: {err}") from None
    if parsed.get_backend_name() == "sqlite" and parsed.query:
        _check_sqlite_query(parsed)
    return parsed


def _check_sqlite_query(parsed: URL) -> None:
    """Refuse SQLite query arguments the driver does not use itself: pysqlite would warn and go on without
    them (a ``mode=ro`` store would be written), and SQLite URIs (``uri=true``) are not supported."""
    unsupported = sorted(set(parsed.query) - SQLITE_QUERY_ARGS)
    if unsupported:
        shown = parsed.render_as_string(hide_password=True)
        raise StoreError(
            f"database URL {shown!r}: SQLite URL {'arguments' if len(unsupported) > 1 else 'argument'} "
            f"{', '.join(map(repr, unsupported))} {'are' if len(unsupported) > 1 else 'is'} not supported; "
            "give the store as sqlite:///path/to/runs.db (reading commands never write to it)"
        )


def display_url(url: str | URL) -> str:
    """The URL as shown to users (password hidden)."""
    parsed = url if isinstance(url, URL) else parse_url(url)
    return parsed.render_as_string(hide_password=True)


def is_sqlite(url: str | URL) -> bool:
    """Whether the URL names a SQLite database."""
    parsed = url if isinstance(url, URL) else parse_url(url)
    return parsed.get_backend_name() == "sqlite"


def is_postgres(url: str | URL) -> bool:
    """Whether the URL names a PostgreSQL database."""
    parsed = url if isinstance(url, URL) else parse_url(url)
    return parsed.get_backend_name() == "postgresql"


def _missing_driver(parsed: URL, err: BaseException) -> StoreError:
    """A one-line error for a URL whose driver cannot be loaded (with the install hint for PostgreSQL)."""
    name = getattr(err, "name", None) or ""
    if parsed.get_backend_name() == "postgresql":
        driver = parsed.get_driver_name()
        if driver == "psycopg" or name.split(".")[0] == "psycopg":
            return StoreError(
                f"cannot use {display_url(parsed)}: the PostgreSQL driver psycopg 3 is not installed; {POSTGRES_HINT}"
            )
        return StoreError(
            f"cannot use {display_url(parsed)}: driver {driver!r} is not available ({err}); expsvc uses psycopg 3: "
            f"write postgresql+psycopg://... and {POSTGRES_HINT}"
        )
    return StoreError(f"cannot use database URL {display_url(parsed)}: {err}")


def sqlite_path(url: str | URL) -> Path | None:
    """The file of a file-backed SQLite URL (relative to the working directory), else None."""
    parsed = url if isinstance(url, URL) else parse_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def make_engine(
    url: str, *, foreign_keys: bool = True, poolclass: Any = None, read_only: str | None = None
) -> sa.Engine:
    """An engine for ``url``; on SQLite every connection gets WAL, busy_timeout, foreign keys, synchronous=NORMAL.

    ``read_only`` (SQLite files): open the file through a ``file:`` URI with these parameters (e.g.
    ``mode=ro&immutable=1``) and leave its journal mode alone, so nothing is ever written beside it.

    SQLAlchemy emits BEGIN itself (pysqlite's implicit transactions are disabled); a connection whose
    execution option ``sqlite_begin`` is ``"IMMEDIATE"`` takes the write lock when its transaction begins,
    so read-modify-write transactions never fail with SQLITE_BUSY_SNAPSHOT under concurrent writers.
    """
    parsed = parse_url(url)
    kwargs: dict[str, Any] = {}
    if poolclass is not None:
        kwargs["poolclass"] = poolclass
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite:
        kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT_MS / 1000}
    elif is_postgres(parsed) and "connect_timeout" not in parsed.query:
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    path = sqlite_path(parsed) if sqlite else None
    if read_only is not None and path is not None:
        from expsvc.store.sqlite import uri

        # built here, not from a user: skip parse_url's refusal of SQLite URI arguments
        parsed = sa.engine.make_url(f"sqlite:///{uri(path, read_only)}&uri=true")
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except ImportError as err:
        raise _missing_driver(parsed, err) from None
    except exc.NoSuchModuleError as err:
        raise StoreError(f"cannot use database URL {display_url(parsed)}: {err}") from None
    except exc.ArgumentError as err:
        raise StoreError(f"cannot use database URL {display_url(parsed)}: {err}") from None
    if sqlite:
        memory = path is None
        keep_journal = memory or read_only is not None

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN (see _on_begin)
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
                if not keep_journal:
                    cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
            finally:
                cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

    _ENGINES.add(engine)
    return engine


def write_engine(engine: sa.Engine) -> sa.Engine:
    """A view of ``engine`` whose transactions take the SQLite write lock immediately (no-op elsewhere)."""
    return engine.execution_options(sqlite_begin="IMMEDIATE")


def _dispose_after_fork() -> None:
    for engine in list(_ENGINES):
        engine.dispose(close=False)  # never share the parent's connections with a forked child


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_dispose_after_fork)


def first_line(err: BaseException) -> str:
    """The first line of the driver's message for ``err``."""
    orig = getattr(err, "orig", None) or err
    text = str(orig).strip() or type(orig).__name__
    return text.splitlines()[0]


@contextmanager
def translate_errors(where: str) -> Iterator[None]:
    """Turn operational database errors (locked, corrupt, unreachable) into one-line StoreErrors."""
    try:
        yield
    except exc.DBAPIError as err:
        message = first_line(err)
        lowered = message.lower()
        if "malformed" in lowered or "not a database" in lowered:
            raise StoreError(f"{where} is corrupt ({message})") from None
        if "disk is full" in lowered or "no space left" in lowered or "quota" in lowered:
            raise StoreFullError(f"the disk of {where} is full ({message}); what was written before is kept") from None
        if "database is locked" in lowered or "database is busy" in lowered:
            raise StoreError(f"{where} is locked by another process (waited {BUSY_TIMEOUT_MS // 1000} s)") from None
        if isinstance(err, exc.OperationalError | exc.InterfaceError) and not isinstance(err, exc.IntegrityError):
            raise StoreError(f"database error on {where}: {message}") from None
        raise
