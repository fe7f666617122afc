"""Bulk inserts through each driver's fast path: PostgreSQL ``COPY`` (psycopg 3), ``executemany`` elsewhere.

Used by ``db copy`` for the plain-column tables.  Driver errors raised inside a COPY are re-raised as the
matching SQLAlchemy exception (``IntegrityError``...), so callers handle every backend alike.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc


def uses_copy(conn: sa.Connection) -> bool:
    """Whether ``conn`` talks to PostgreSQL through psycopg 3 (so ``COPY`` is available)."""
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"


@lru_cache(maxsize=32)
def _insert_sql(dialect: sa.Dialect, table: sa.Table, columns: tuple[str, ...]) -> tuple[str, bool]:
    """The driver-level INSERT for ``columns`` of ``table`` and whether it takes positional parameters."""
    compiled = table.insert().compile(dialect=dialect, column_keys=list(columns))
    if compiled.positional:
        assert tuple(compiled.positiontup or ()) == columns
    return str(compiled), bool(compiled.positional)


def _copy_sql(conn: sa.Connection, table: sa.Table, columns: Sequence[str], binary: bool) -> str:
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(name) for name in columns)
    return f"COPY {quote(table.name)} ({names}) FROM STDIN" + (" (FORMAT BINARY)" if binary else "")


@contextmanager
def _driver_errors(conn: sa.Connection, statement: str) -> Iterator[None]:
    """Re-raise a psycopg error from a raw COPY as SQLAlchemy's matching DBAPIError subclass."""
    base = conn.dialect.loaded_dbapi.Error
    try:
        yield
    except base as err:
        raise exc.DBAPIError.instance(statement, None, err, base, dialect=conn.dialect) from None


@contextmanager
def _copy(conn: sa.Connection, statement: str) -> Iterator[Any]:
    """A psycopg ``Copy`` object for ``statement`` on the connection's own (transaction-bound) DBAPI connection."""
    driver: Any = conn.connection.driver_connection
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        yield copy


def insert_rows(conn: sa.Connection, table: sa.Table, columns: tuple[str, ...], rows: Sequence[tuple]) -> None:
    """Insert plain tuples (values already in driver form) in one round of ``COPY`` or ``executemany``."""
    if not rows:
        return
    if uses_copy(conn):
        statement = _copy_sql(conn, table, columns, binary=False)
        with _driver_errors(conn, statement), _copy(conn, statement) as copy:
            for row in rows:
                copy.write_row(row)
        return
    sql, positional = _insert_sql(conn.dialect, table, columns)
    if positional:
        conn.exec_driver_sql(sql, list(rows))  # type: ignore[arg-type]
    else:
        conn.exec_driver_sql(sql, [dict(zip(columns, row, strict=True)) for row in rows])
