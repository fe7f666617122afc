"""The one exception type users see: a one-line message, printed without a traceback.

Also the helpers every such message uses: :func:`did_you_mean`, :func:`one_line` (what is printed: one
line, long echoed values shortened), :func:`path_problem` (what a path that is not a usable file *is*) and
:func:`memory_limit` (the budget that sizes are checked against before any work starts).
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path


class ExpsvcError(Exception):
    """A user-facing error; ``str(err)`` is one line that names the bad value and what is allowed."""

    exit_code = 2


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    if len(word) > 200:  # difflib is quadratic; a value this long is a mistake, not a typo
        return ""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


ECHO_LIMIT = 80
"""Longest run of text (a quoted value, or any word) echoed whole in an error line."""
LINE_LIMIT = 1000
"""Longest error line printed."""

_QUOTED = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\S+""")


def shorten(text: str, limit: int = ECHO_LIMIT) -> str:
    """``text`` if it is at most ``limit`` characters, else its start and end around ``…(N characters)…``."""
    if len(text) <= limit:
        return text
    head, tail = limit * 2 // 3, limit // 6
    return f"{text[:head]}…({len(text):,} characters)…{text[-tail:] if tail else ''}"


def one_line(message: str) -> str:
    """``message`` as printed: on one line, every echoed value (a quoted string or a word) shortened."""
    text = " ".join(message.split())
    text = _QUOTED.sub(lambda m: shorten(m.group(0)), text)
    return shorten(text, LINE_LIMIT)


def path_problem(path: str | os.PathLike[str], want: str = "a file", *, directory: bool = False) -> str | None:
    """Why ``path`` cannot be read as ``want`` (``"does not exist"``, ``"is a directory"``, ``"is a FIFO"``...),
    or None when it is a regular file (a directory, with ``directory``).  Never opens the path (opening a
    FIFO would block)."""
    try:
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        return "does not exist"
    except NotADirectoryError:
        return "does not exist (a parent is not a directory)"
    except PermissionError:
        return "cannot be read (permission denied)"
    except (OSError, ValueError) as err:
        return f"cannot be read ({getattr(err, 'strerror', None) or err})"
    if (stat.S_ISDIR if directory else stat.S_ISREG)(mode):
        return None
    kinds = ((stat.S_ISREG, "a file"), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    return f"is {kind}, not {want}"


MEMORY_ENV = "EXPSVC_MEMORY_LIMIT"
MEMORY_FRACTION = 0.8
"""The default memory budget: this fraction of the machine's physical memory."""

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def physical_memory() -> int | None:
    """Bytes of physical memory, or None where the platform does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def memory_limit() -> int | None:
    """The memory budget in bytes: ``$EXPSVC_MEMORY_LIMIT`` (``"8GiB"``, ``"500MB"``, ``"50%"`` of physical
    memory, or bytes; ``"none"`` for no limit), else 80 % of physical memory (None where unknown)."""
    raw = os.environ.get(MEMORY_ENV, "").strip().lower()
    if raw in ("none", "off", "0"):
        return None
    total = physical_memory()
    if not raw:
        return int(total * MEMORY_FRACTION) if total else None
    match = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*(%|[kmgt]i?b?|b)?", raw)
    if match is None:
        raise ExpsvcError(f"{MEMORY_ENV}: {raw!r} is not a size; expected e.g. '8GiB', '500MB', '50%' or 'none'")
    number, unit = float(match.group(1)), match.group(2) or ""
    if unit == "%":
        if total is None or not 0 < number <= 100:
            raise ExpsvcError(f"{MEMORY_ENV}: {raw!r} is not a percentage of known physical memory in (0, 100]")
        return int(total * number / 100)
    return int(number * _UNITS[unit])


def format_bytes(n: float) -> str:
    """``1.5 GiB``-style sizes for messages."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"
