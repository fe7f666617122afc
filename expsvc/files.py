"""Paths that come from users: what a path is before it is opened, and outputs that never destroy anything.

Two rules, one home:

- **Look before opening.** A FIFO opened for reading blocks until someone writes to it; a directory or a
  device is never what a user meant.  :func:`kind_of` says what a path is with ``stat`` alone (it never
  opens it), and :func:`readable_file` refuses anything but a regular file in one line.
- **Outputs never destroy.**  :func:`check_output` runs before a command does any work: an output may not be
  the store the command reads (nor its ``-wal``/``-shm``/``-journal``/lock/backup files), a directory, a
  FIFO or a device, and it replaces an existing file only if that file holds the same kind of data (a PNG
  over a PNG) unless ``--force`` is given.  :func:`atomic_open` / :func:`atomic_path` write to a temporary
  file in the same directory and rename it into place, so a crash or a full disk leaves the old file
  whole; they re-check the unconditional rules at write time against every store this process opened.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from expsvc.errors import ExpsvcError

SIDECAR_SUFFIXES = ("-wal", "-shm", "-journal", ".lock")
"""Files SQLite (and expsvc's migration lock) keep next to a database ``NAME``: ``NAME-wal`` ..."""
BACKUP_INFIX = ".bak-"
"""Backups made before migrations are ``NAME.bak-YYYYmmdd-HHMMSS[-n]``."""

OUTPUT_KINDS = {"csv": "text", "json": "json", "png": "png", "html": "html", "text": "text"}
"""What an output format's file holds, as :func:`content_kind` names it."""

_KIND_WORDS = {
    "empty": "an empty file", "sqlite": "a SQLite database", "sqlite-wal": "a SQLite write-ahead log",
    "png": "a PNG image", "pdf": "a PDF document", "zip": "a ZIP/NPZ archive", "json": "a JSON file",
    "html": "an HTML page", "text": "a text file", "binary": "a binary file",
}  # fmt: skip
_SQLITE_MAGIC = b"SQLite format 3\x00"
_WAL_MAGICS = (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83")

_FILE_TYPES = ((stat.S_ISREG, "file"), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
               (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))

_STORES: set[Path] = set()
"""The SQLite files this process opened as stores (outputs may never replace them or their sidecars)."""


class OutputError(ExpsvcError):
    """An output path that would destroy something (or cannot be written); one line, exit 2."""


# ------------------------------------------------------------------------------------- what a path is


def kind_of(path: str | os.PathLike[str]) -> str | None:
    """What ``path`` is, from ``stat`` alone (never opened): None if missing, else ``"file"``, ``"a directory"``,
    ``"a FIFO"``, ``"a socket"``, ``"a character device"``, ``"a block device"`` (symbolic links followed)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return "file"  # permission problems: let the open report them in its own words
    for test, name in _FILE_TYPES:
        if test(mode):
            return name
    return "not a regular file"  # pragma: no cover - other file types


def readable_file(path: str | os.PathLike[str], what: str, error: type[ExpsvcError] = ExpsvcError) -> Path:
    """``path`` as a Path if it is an existing regular file; else raise ``error`` naming it (never opens it).

    ``what`` names the path for the message, e.g. ``"experiment file"``.
    """
    kind = kind_of(path)
    if kind is None:
        raise error(f"{what} {str(path)!r} does not exist")
    if kind != "file":
        raise error(f"{what} {str(path)!r} is {kind}, not a regular file")
    return Path(path)


def content_kind(path: Path) -> str:
    """What an existing regular file holds, from its first bytes: ``sqlite``, ``png``, ``json``, ``text``..."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if not head:
        return "empty"
    if head.startswith(_SQLITE_MAGIC):
        return "sqlite"
    if head[:4] in _WAL_MAGICS:
        return "sqlite-wal"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"%PDF"):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if b"\x00" in head:
        return "binary"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # not just a character cut by the 512-byte window
            return "binary"
        text = head[: err.start].decode("utf-8")
    text = text.lstrip("\ufeff \t\r\n").lower()
    if text.startswith(("{", "[")):
        return "json"
    if text.startswith(("<!doctype html", "<html")):
        return "html"
    return "text"


# ------------------------------------------------------------------------------------- protected files


def protect(path: str | os.PathLike[str]) -> None:
    """Record that this process uses the SQLite file ``path`` as a store: no output may replace it."""
    _STORES.add(_real(Path(path)))


def store_file(url: str | None) -> Path | None:
    """The SQLite file of a store URL (None for PostgreSQL, in-memory or unparsable URLs)."""
    from expsvc.store.engine import default_url, sqlite_path

    try:
        return sqlite_path(url or default_url())
    except ExpsvcError:
        return None


def _real(path: Path) -> Path:
    """``path`` with symbolic links and ``..`` resolved (the file a write would really replace)."""
    return Path(os.path.realpath(path))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _is_sqlite(path: Path) -> bool:
    try:
        return kind_of(path) == "file" and content_kind(path) == "sqlite"
    except OSError:
        return False


def _store_relation(target: Path, stores: Sequence[Path]) -> str | None:
    """How ``target`` belongs to one of ``stores`` (or to any SQLite database beside it), else None."""
    real = _real(target)
    for store in stores:
        store = _real(store)
        if real == store or _same_file(real, store):
            return f"is the store {store.name}"
        if real.parent == store.parent or _same_file(real.parent, store.parent):
            for suffix in SIDECAR_SUFFIXES:
                if real.name == store.name + suffix:
                    return f"is the {suffix.lstrip('-.')} file of the store {store.name}"
            if real.name.startswith(store.name + BACKUP_INFIX):
                return f"is a backup of the store {store.name}"
    for suffix in SIDECAR_SUFFIXES:  # the sidecar of some other SQLite database
        if real.name.endswith(suffix) and len(real.name) > len(suffix):
            base = real.with_name(real.name[: -len(suffix)])
            if _is_sqlite(base):
                return f"is the {suffix.lstrip('-.')} file of the SQLite database {base.name}"
    return None


def _refusal(option: str, path: str, reason: str, hint: str = "choose another file") -> OutputError:
    return OutputError(f"{option} {path!r} {reason}; {hint}")


def _check_always(option: str, shown: str, target: Path, stores: Sequence[Path]) -> None:
    """The rules no ``--force`` lifts: not a store or its files, not a directory, FIFO or device."""
    kind = kind_of(target)
    if kind is not None and kind != "file":
        raise _refusal(option, shown, f"is {kind}, not a file")
    relation = _store_relation(target, stores)
    if relation is not None:
        raise _refusal(option, shown, f"{relation}; expsvc never writes an output over a store")
    parent = _real(target).parent
    parent_kind = kind_of(parent)
    if parent_kind is None:
        raise _refusal(option, shown, f"is in a folder that does not exist ({parent})", "create it first")
    if parent_kind != "a directory":
        raise _refusal(option, shown, f"is inside {parent}, which is {parent_kind.removeprefix('a ')}")


def check_output(
    path: str, *, option: str, fmt: str, force: bool = False, db: str | None = None,
    others: Sequence[str] = (),
) -> Path:
    """Refuse (``OutputError``, one line) an output that would destroy something; return its Path.

    ``fmt`` is the output's format (a key of :data:`OUTPUT_KINDS`); ``db`` the store URL the command reads
    (its SQLite file and that file's sidecars and backups are never written, ``--force`` or not);
    ``others`` the other outputs of the same command, which must be different files.
    """
    if not path or not path.strip():
        raise OutputError(f"{option}: give a file name")
    target = Path(path)
    stores = [*_STORES, *([s] if (s := store_file(db)) is not None else [])]
    _check_always(option, path, target, stores)
    for other in others:
        if other and (_real(Path(other)) == _real(target) or _same_file(Path(other), target)):
            raise _refusal(option, path, f"is also the command's other output {other!r}")
    if kind_of(target) == "file" and not force:
        try:
            found = content_kind(target)
        except OSError as err:
            raise _refusal(option, path, f"cannot be read ({err.strerror or err})") from None
        wanted = OUTPUT_KINDS[fmt]
        if found not in ("empty", wanted):
            raise _refusal(option, path, f"already exists and is {_KIND_WORDS[found]}, not {_KIND_WORDS[wanted]}",
                           "choose another file, or pass --force to replace it")
    return target


# ---------------------------------------------------------------------------------------- atomic writes


def _final_mode(target: Path) -> int:
    """The permission bits the written file gets: the replaced file's, else 0o666 minus the umask."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, option: str = "output") -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) to write; renamed over ``path`` when the block succeeds.

    The unconditional output rules are checked again here, against every store this process opened; on an
    error (or Ctrl-C) the temporary file is removed and ``path`` is untouched.
    """
    shown = str(path)
    target = _real(Path(path))  # writing through a symbolic link replaces the file it points to
    _check_always(option, shown, target, list(_STORES))
    tmp = target.with_name(f".{target.stem}.{secrets.token_hex(4)}.tmp{target.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _final_mode(target))
        os.replace(tmp, target)
    except OSError as err:
        raise OutputError(f"cannot write {shown!r}: {err.strerror or err}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", *, option: str = "output",
                **kwargs: Any) -> Iterator[IO[Any]]:
    """``open(path, mode)`` through :func:`atomic_path`: the file appears whole, or not at all."""
    with atomic_path(path, option=option) as tmp:
        try:
            fh = open(tmp, mode, **kwargs)  # noqa: SIM115 - closed below, before the rename
        except OSError as err:
            raise OutputError(f"cannot write {str(path)!r}: {err.strerror or err}") from None
        with fh:
            yield fh


# ------------------------------------------------------------------------------------------ strict JSON


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN and ±inf float (at any depth) replaced by None, for strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value


def strict_json(value: Any, *, indent: int | None = 2) -> str:
    """JSON text with NaN and ±inf written as ``null`` (JSON has neither; ``Infinity`` is not JSON)."""
    return json.dumps(finite_or_none(value), indent=indent, allow_nan=False, default=str)
