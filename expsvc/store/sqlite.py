"""SQLite files: read-only validation before any connection, backups before migrations, and a migration lock.

Nothing here writes to a database file it has not validated: :func:`inspect_file` checks the 100-byte
header by hand, then reads the schema through a read-only (or, when no other connection is active,
``immutable``) connection that creates no ``-wal``/``-shm`` files and never changes journal mode.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from expsvc.files import kind_of
from expsvc.store.engine import BUSY_TIMEOUT_MS, StoreError

try:  # pragma: no cover - always available on POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

MAGIC = b"SQLite format 3\x00"
HEADER_SIZE = 100
QUICK_CHECK_MAX_BYTES = 4 * 1024 * 1024  # PRAGMA quick_check on open only up to this size (~4 ms/MiB)


@dataclass(frozen=True)
class FileState:
    """What a read-only look at a SQLite file found."""

    exists: bool
    empty: bool  # missing, zero bytes, or no tables at all
    tables: frozenset[str]
    revision: str | None  # alembic_version.version_num, if the table exists
    checked: bool = False  # PRAGMA quick_check passed (every page of every table and index was read)
    wal: bool = False  # the header says WAL mode


def _uri(path: Path, params: str) -> str:
    return f"file:{quote(str(path.absolute()))}?{params}"  # urllib.request.pathname2url on POSIX, lighter


def check_header(path: Path) -> tuple[int, bool]:
    """Validate the 100-byte header of ``path``; return (size, WAL mode); StoreError if it is not SQLite.

    What the path is comes first, from ``stat`` alone: opening a FIFO would block until someone writes to it.
    """
    kind = kind_of(path)
    if kind is not None and kind != "file":
        raise StoreError(f"{path} is {kind}, not a SQLite database; refusing to open it")
    try:
        with path.open("rb") as fh:
            header = fh.read(HEADER_SIZE)
            size = os.fstat(fh.fileno()).st_size
    except OSError as err:
        raise StoreError(f"cannot read {path}: {err.strerror or err}") from None
    if size == 0:
        return 0, False
    if not header.startswith(MAGIC):
        raise StoreError(f"{path} is not a SQLite database (unrecognised file header); refusing to touch it")
    if len(header) < HEADER_SIZE:
        raise StoreError(f"{path} is corrupt (truncated SQLite header); refusing to touch it")
    page_size = struct.unpack(">H", header[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    valid = (
        512 <= page_size <= 65536
        and page_size & (page_size - 1) == 0
        and header[18] in (1, 2)
        and header[19] in (1, 2)
        and header[21:24] == b"\x40\x20\x20"
        and size % page_size == 0
    )
    if not valid:
        raise StoreError(f"{path} is corrupt (invalid SQLite header or size); refusing to touch it")
    return size, header[18] == 2


def _read_schema(path: Path, params: str, *, quick_check: bool) -> tuple[frozenset[str], str | None]:
    conn = sqlite3.connect(_uri(path, params), uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        tables = frozenset(row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
        revision = None
        if "alembic_version" in tables:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = row[0] if row else None
        if quick_check:
            result = [row[0] for row in conn.execute("PRAGMA quick_check")]
            if result != ["ok"]:
                raise sqlite3.DatabaseError(f"quick_check: {result[0]}")
        return tables, revision
    finally:
        conn.close()


def _stat_key(path: Path) -> tuple[int, int, bool]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, Path(f"{path}-wal").exists()


def inspect_file(path: Path, *, quick_check: bool | None = None) -> FileState:
    """Validate ``path`` without modifying it and report its tables and schema revision.

    ``quick_check`` also runs ``PRAGMA quick_check``; by default only for files up to 4 MiB (~4 ms/MiB), and
    for files not in WAL mode, whatever their size: the first connection of an engine switches those to WAL,
    which writes their header.  Writers check larger files before their first write (:class:`RunStore`).
    Raises StoreError naming the file if it is not a SQLite database or is corrupt.
    """
    if kind_of(path) is None:
        return FileState(exists=False, empty=True, tables=frozenset(), revision=None)
    size, wal = check_header(path)
    if size == 0:
        return FileState(exists=True, empty=True, tables=frozenset(), revision=None, checked=True)
    if quick_check is None:
        quick_check = size <= QUICK_CHECK_MAX_BYTES or not wal
    try:
        before = _stat_key(path)
        if wal and not before[2]:
            # WAL mode but no -wal file: no connection is active, so read the file as immutable (a
            # read-only connection would leave empty -wal/-shm files behind).  A concurrent writer
            # could make that read inconsistent, so a failure only counts if the file did not change.
            try:
                tables, revision = _read_schema(path, "mode=ro&immutable=1", quick_check=quick_check)
            except sqlite3.DatabaseError:
                if _stat_key(path) == before:
                    raise
                tables, revision = _read_schema(path, "mode=ro", quick_check=quick_check)
        else:
            tables, revision = _read_schema(path, "mode=ro", quick_check=quick_check)
    except sqlite3.DatabaseError as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        lowered = message.lower()
        if "locked" in lowered or "busy" in lowered:
            raise StoreError(f"{path} is locked by another process ({message})") from None
        if "unable to open" in lowered:
            raise StoreError(f"cannot open {path} ({message})") from None
        raise StoreError(f"{path} is corrupt ({message}); refusing to touch it") from None
    return FileState(exists=True, empty=not tables, tables=tables, revision=revision, checked=quick_check, wal=wal)


def read_only_reason(path: Path) -> str | None:
    """Why this process may not write the database ``path`` (or create its ``-wal``/``-shm`` files), or None.

    ``os.access`` answers for this process (root ignores permission bits, not a read-only mount).
    """
    folder = path.absolute().parent
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "on a read-only file system"
    except OSError:  # pragma: no cover - the folder vanished: let the open report it
        return None
    if path.exists() and not os.access(path, os.W_OK):
        return "the file is not writable"
    if not os.access(folder, os.W_OK | os.X_OK):
        return "its folder is not writable"
    return None


def read_only_params(path: Path) -> str:
    """URI parameters that read ``path`` without writing anything beside it.

    With no ``-wal`` file, a WAL database could only be opened by creating ``-wal``/``-shm``, which a
    read-only folder forbids; nobody is writing it then (a writer keeps a ``-wal`` file), so it is read as
    ``immutable``.  Otherwise SQLite's read-only mode uses the existing ``-shm``/``-wal`` files.
    """
    if not Path(f"{path}-wal").exists():
        return "mode=ro&immutable=1"
    return "mode=ro"


def uri(path: Path, params: str) -> str:
    """A ``file:`` URI for ``path`` with ``params`` (for ``sqlite3.connect(..., uri=True)``)."""
    return _uri(path, params)


def backup(path: Path) -> Path:
    """Copy the database to ``<name>.bak-YYYYmmdd-HHMMSS`` next to it (WAL checkpointed first)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.bak-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.bak-{stamp}-{n}")
        n += 1
    try:
        source = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            source.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            source.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            # The backup API copies a consistent snapshot page by page, even if another process writes meanwhile.
            dest = sqlite3.connect(str(target))
            try:
                source.backup(dest)
            finally:
                dest.close()
        finally:
            source.close()
    except sqlite3.Error as err:
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        raise StoreError(
            f"cannot back up {path} to {target.name} before migrating it: {err}; nothing was changed"
        ) from None
    return target


@contextlib.contextmanager
def file_lock(path: Path, timeout: float = 600.0) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``<name>.lock`` next to the database (no-op without fcntl)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    lock_path = path.with_name(f"{path.name}.lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise StoreError(f"cannot create the migration lock {lock_path}: {err.strerror or err}") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"timed out waiting for another process migrating {path} (lock {lock_path})"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
