"""Bulk inserts through each driver's fast path: PostgreSQL ``COPY`` (psycopg 3), ``executemany`` elsewhere.

Metric points go to PostgreSQL as one binary ``COPY`` stream encoded by numpy (no per-row Python work);
other rows use psycopg's ``Copy.write_row``.  Driver errors raised inside a COPY are re-raised as the
matching SQLAlchemy exception (``IntegrityError``...), so callers handle every backend alike.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy import exc

from expsvc.store.engine import StoreError

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_TRAILER = struct.pack(">h", -1)


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


def _binary_points(run_id: str, key: bytes, steps: np.ndarray, values: np.ndarray, nan: np.ndarray) -> bytes:
    """The binary COPY tuples (run_id, key, step int4, value float8 or NULL) of one run's points."""
    rid = run_id.encode()
    head = [("n", ">i2"), ("l_run", ">i4"), ("run", f"S{len(rid)}"), ("l_key", ">i4"), ("key", f"S{len(key)}"),
            ("l_step", ">i4"), ("step", ">i4"), ("l_value", ">i4")]  # fmt: skip
    parts = []
    for mask, with_value in ((~nan, True), (nan, False)):
        n = int(mask.sum())
        if not n:
            continue
        dtype = np.dtype([*head, ("value", ">f8")] if with_value else head)
        records = np.empty(n, dtype=dtype)
        records["n"] = 4
        records["l_run"], records["run"] = len(rid), rid
        records["l_key"], records["key"] = len(key), key
        records["l_step"], records["step"] = 4, steps[mask]
        if with_value:
            records["l_value"], records["value"] = 8, values[mask]
        else:
            records["l_value"] = -1  # NULL: NaN
        parts.append(records.tobytes())
    return b"".join(parts)


def insert_points(
    conn: sa.Connection, table: sa.Table, key: str, points: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]]
) -> None:
    """Insert metric points ``(run_id, steps, values, nan_mask)`` of metric ``key``; NaN is stored as NULL."""
    columns = ("run_id", "key", "step", "value")
    if not uses_copy(conn):
        rows: list[tuple] = []
        for run_id, steps, values, nan in points:
            column: list[float | None] = values.tolist()
            for i in np.flatnonzero(nan).tolist():
                column[i] = None
            rows.extend((run_id, key, step, value) for step, value in zip(steps.tolist(), column, strict=True))
        insert_rows(conn, table, columns, rows)
        return
    for _run_id, steps, _values, _nan in points:
        if steps.size and (int(steps.min()) < -(2**31) or int(steps.max()) >= 2**31):
            raise StoreError(f"steps {int(steps.min())}..{int(steps.max())} do not fit the 32-bit step column")
    encoded = key.encode()
    body = b"".join(_binary_points(run_id, encoded, steps, values, nan) for run_id, steps, values, nan in points)
    statement = _copy_sql(conn, table, columns, binary=True)
    with _driver_errors(conn, statement), _copy(conn, statement) as copy:
        copy.write(_SIGNATURE + body + _TRAILER)

