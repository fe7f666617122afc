"""Schema migrations: the Alembic scripts in ``expsvc.migrations`` run programmatically (no alembic.ini).

:func:`prepare` is what :meth:`RunStore.open` calls: it validates the database, refuses one from a newer
expsvc, creates a new one at head (SQLite: built next to its final name, then linked into place), and
upgrades an older one after backing it up.  Migrations hold a lock: ``fcntl`` on ``<name>.lock`` next to
a SQLite file, ``pg_advisory_lock`` on PostgreSQL.  :func:`upgrade`, :func:`current` and :func:`head`
serve ``expsvc db upgrade`` / ``expsvc db current``.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from expsvc.store import engine as eng
from expsvc.store import sqlite as sqlite_files
from expsvc.store.engine import StoreError, first_line, make_engine, translate_errors

if TYPE_CHECKING:
    from alembic.config import Config

PG_LOCK_KEY = 0x65787073_76630001  # "expsvc" + 1: the advisory lock id of expsvc migrations
NO_DATABASE_HINT = "run `expsvc run` to create one, or pass --db"


@dataclass(frozen=True)
class Prepared:
    """The outcome of :func:`prepare`: revisions before and after, and the backup made (if any)."""

    before: str | None
    after: str | None
    backup: Path | None = None
    checked: bool = True  # the whole file passed PRAGMA quick_check (or it is not a SQLite file)


def script_location() -> Path:
    """The directory of the Alembic scripts: the installed ``expsvc.migrations``, else the repo's folder."""
    try:
        location = importlib.resources.files("expsvc.migrations")
        if isinstance(location, Path) and (location / "env.py").is_file():
            return location
        path = Path(str(location))
        if (path / "env.py").is_file():
            return path
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - broken install
        pass
    fallback = Path(__file__).resolve().parents[2] / "migrations"
    if (fallback / "env.py").is_file():
        return fallback
    raise StoreError("cannot find the expsvc migration scripts (is expsvc installed correctly?)")


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic Config for the bundled scripts; ``connection`` is handed to env.py."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


_REVISION = re.compile(r"^revision(?::[^=]*)?=\s*[\"']([^\"']+)[\"']", re.MULTILINE)
_DOWN = re.compile(r"^down_revision(?::[^=]*)?=\s*(?:None|[\"']([^\"']+)[\"'])", re.MULTILINE)


@lru_cache(maxsize=1)
def revisions() -> dict[str, str | None]:
    """Each revision of the bundled scripts and its parent, read from the files without importing Alembic.

    Opening a store at head is the common case; it needs only this, so commands start fast.  A test checks
    it against Alembic's own ``ScriptDirectory``.
    """
    graph: dict[str, str | None] = {}
    for path in sorted((script_location() / "versions").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        rev, down = _REVISION.search(text), _DOWN.search(text)
        if rev is not None and down is not None:
            graph[rev.group(1)] = down.group(1)
    return graph


def head() -> str:
    """The newest schema revision this expsvc knows."""
    graph = revisions()
    heads = sorted(set(graph) - {d for d in graph.values() if d is not None})
    if len(heads) != 1:  # pragma: no cover - a packaging error
        raise StoreError(f"the expsvc migrations have {len(heads)} heads: {', '.join(heads)}")
    return heads[0]


def known(revision: str) -> bool:
    """Whether ``revision`` is one of this expsvc's migrations."""
    return revision in revisions()


def _too_new(where: str, revision: str) -> StoreError:
    return StoreError(
        f"{where} has schema revision {revision!r}, which this expsvc does not know (its newest is "
        f"{head()!r}); it was written by a newer expsvc — upgrade expsvc to use it (the file is untouched)"
    )


def _not_expsvc(where: str, tables: frozenset[str] | set[str]) -> StoreError:
    shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
    return StoreError(
        f"{where} is not an expsvc database (it has tables {shown} but no schema revision); refusing to touch it"
    )


def _alembic_error() -> type[Exception]:
    """Alembic's own error type (imported only when a migration fails: alembic loads on demand)."""
    from alembic.util import CommandError

    return CommandError


def _run_upgrade(connection: sa.Connection, target: str = "head") -> None:
    """Run the migrations to ``target`` inside the connection's transaction."""
    from alembic import command

    command.upgrade(alembic_config(connection), target)


def _revision_of(connection: sa.Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


# ---------------------------------------------------------------------------------------------- SQLite


def _migrate_sqlite_file(path: Path, target: str = "head") -> None:
    """Upgrade the SQLite file in one transaction, with foreign keys off (so table rebuilds never cascade)."""
    engine = make_engine(f"sqlite:///{path}", foreign_keys=False, poolclass=NullPool)
    try:
        with translate_errors(str(path)), engine.connect() as conn:
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                _run_upgrade(conn, target)
                problems = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if problems:
                    raise StoreError(
                        f"migrating {path} would break {len(problems)} foreign key(s) "
                        f"(first in table {problems[0][0]!r}); nothing was changed"
                    )
    finally:
        engine.dispose()


def _create_sqlite_file(path: Path) -> None:
    """Build a new database at head beside ``path`` and link it into place (never half-built)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.new-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        _migrate_sqlite_file(tmp)
        try:
            os.link(tmp, path)  # atomic, and fails if someone else created the file meanwhile
        except FileExistsError:
            pass
        except OSError:  # pragma: no cover - file systems without hard links
            if not path.exists():
                os.replace(tmp, path)
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def _prepare_sqlite(path: Path, *, create: bool, upgrade: bool) -> Prepared:
    state = sqlite_files.inspect_file(path)
    if state.revision is not None and state.revision == head():
        return Prepared(state.revision, state.revision, checked=state.checked)
    # Anything else needs a decision; re-check under the lock so concurrent starts migrate only once.
    if not state.exists and not create:
        raise StoreError(f"no database exists at {path}; {NO_DATABASE_HINT}")
    _check_state(str(path), state.tables, state.revision, create=create, upgrade=upgrade)
    reason = sqlite_files.read_only_reason(path)
    if reason is not None:
        need = "creating" if not state.exists or state.revision is None else f"upgrading from {state.revision}"
        raise StoreError(f"{path} is read-only ({reason}) but needs {need} to {head()}; nothing was written")
    if not state.exists:
        path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite_files.file_lock(path):
        state = sqlite_files.inspect_file(path, quick_check=True)
        _check_state(str(path), state.tables, state.revision, create=create, upgrade=upgrade)
        if state.revision == head():
            return Prepared(state.revision, state.revision)
        if not state.exists:
            _create_sqlite_file(path)
            return Prepared(None, head())
        copy = None
        if state.revision is not None:
            copy = sqlite_files.backup(path)
        try:
            _migrate_sqlite_file(path)
        except StoreError:
            raise
        except (sa.exc.SQLAlchemyError, OSError, _alembic_error()) as err:  # in one transaction, rolled back
            saved = f"; a backup is at {copy}" if copy is not None else ""
            raise StoreError(
                f"migrating {path} from {state.revision or 'empty'} to {head()} failed "
                f"({type(err).__name__}: {first_line(err)}); the database was left unchanged{saved}"
            ) from err
        return Prepared(state.revision, head(), copy)


def _check_state(
    where: str, tables: frozenset[str] | set[str], revision: str | None, *, create: bool, upgrade: bool
) -> None:
    if revision is None:
        if tables - {"alembic_version"}:
            raise _not_expsvc(where, tables)
        if not create:
            raise StoreError(f"no expsvc database exists at {where} (it is empty); {NO_DATABASE_HINT}")
        return
    if not known(revision):
        raise _too_new(where, revision)
    if revision != head() and not upgrade:
        raise StoreError(
            f"{where} has schema revision {revision!r} but this expsvc needs {head()!r}; "
            "run `expsvc db upgrade` (a backup is made first)"
        )


# ------------------------------------------------------------------------------------ other databases


@contextlib.contextmanager
def _server_lock(conn: sa.Connection) -> Iterator[None]:
    """Serialise migrations across processes: ``pg_advisory_lock`` on PostgreSQL, nothing elsewhere."""
    if conn.dialect.name != "postgresql":
        yield
        return
    conn.exec_driver_sql(f"SELECT pg_advisory_lock({PG_LOCK_KEY})")
    conn.commit()
    try:
        yield
    finally:
        if conn.in_transaction():
            conn.rollback()
        conn.exec_driver_sql(f"SELECT pg_advisory_unlock({PG_LOCK_KEY})")
        conn.commit()


def _state_of(conn: sa.Connection) -> tuple[set[str], str | None]:
    tables = set(sa.inspect(conn).get_table_names())
    revision = _revision_of(conn) if "alembic_version" in tables else None
    conn.rollback()
    return tables, revision


def _prepare_server(url: str, *, create: bool, upgrade: bool) -> Prepared:
    where = eng.display_url(url)
    engine = make_engine(url, poolclass=NullPool)
    try:
        with translate_errors(where), engine.connect() as conn:
            tables, revision = _state_of(conn)
            if revision is not None and revision == head():
                return Prepared(revision, revision)
            _check_state(where, tables, revision, create=create, upgrade=upgrade)
            with _server_lock(conn):
                tables, revision = _state_of(conn)
                _check_state(where, tables, revision, create=create, upgrade=upgrade)
                if revision == head():
                    return Prepared(revision, revision)
                try:
                    with conn.begin():  # transactional DDL: all revisions or none
                        _run_upgrade(conn)
                except (StoreError, sa.exc.OperationalError, sa.exc.InterfaceError):
                    raise
                except (sa.exc.SQLAlchemyError, _alembic_error()) as err:
                    raise StoreError(
                        f"migrating {where} from {revision or 'empty'} to {head()} failed "
                        f"({type(err).__name__}: {first_line(err)}); the database was left unchanged"
                    ) from err
                return Prepared(revision, head())
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------------------ public API


def prepare(url: str, *, create: bool = True, upgrade: bool = True) -> Prepared:
    """Make sure the database at ``url`` exists (if ``create``) and is at head (if ``upgrade``), or raise."""
    parsed = eng.parse_url(url)
    path = eng.sqlite_path(parsed)
    if path is not None:
        return _prepare_sqlite(path, create=create, upgrade=upgrade)
    if parsed.get_backend_name() == "sqlite":
        raise StoreError(
            f"unsupported SQLite URL {url!r}: in-memory and file: URIs are not supported; use sqlite:///path/to/runs.db"
        )
    return _prepare_server(url, create=create, upgrade=upgrade)


def upgrade(url: str | None = None) -> tuple[str | None, str]:
    """Create or upgrade the database at ``url`` (default: :func:`default_url`) to head; return (before, after)."""
    result = prepare(url or eng.default_url(), create=True, upgrade=True)
    return result.before, result.after or head()


def current(url: str | None = None) -> str | None:
    """The schema revision of the database at ``url`` (None if it is empty); never modifies it."""
    url = url or eng.default_url()
    parsed = eng.parse_url(url)
    path = eng.sqlite_path(parsed)
    if path is not None:
        state = sqlite_files.inspect_file(path)
        if not state.exists:
            raise StoreError(f"no database exists at {path}; {NO_DATABASE_HINT}")
        if state.revision is None and state.tables - {"alembic_version"}:
            raise _not_expsvc(str(path), state.tables)
        return state.revision
    where = eng.display_url(parsed)
    engine = make_engine(url, poolclass=NullPool)
    try:
        with translate_errors(where), engine.connect() as conn:
            return _state_of(conn)[1]
    finally:
        engine.dispose()


def upgrade_to(url: str, revision: str) -> None:
    """Upgrade (or create) the database at ``url`` to a specific ``revision`` (for tests and tooling)."""
    path = eng.sqlite_path(url)
    if path is None:
        if eng.parse_url(url).get_backend_name() == "sqlite":
            raise StoreError("upgrade_to supports SQLite files, not in-memory databases")
        engine = make_engine(url, poolclass=NullPool)
        try:
            with translate_errors(eng.display_url(url)), engine.connect() as conn, _server_lock(conn), conn.begin():
                _run_upgrade(conn, revision)
        finally:
            engine.dispose()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite_files.file_lock(path):
        _migrate_sqlite_file(path, revision)
