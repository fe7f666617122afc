"""The one exception type users see: a one-line message, printed without a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ExpsvcError(Exception):
    """A user-facing error; ``str(err)`` is one line that names the bad value and what is allowed."""

    exit_code = 2


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""
