"""The stored vocabulary, in one place: run statuses, the parameter encoding and the summary columns.

Everything that writes or reads these (the store, the read API, the ``--where`` compiler, the test
fixtures) imports them from here, so a writer and a reader can never disagree.  Light on purpose:
``expsvc runs`` imports it, and it imports nothing but the standard library.

**Parameter encoding.**  A run's flattened configuration is stored one row per key in two columns,
``value_text`` and ``value_num``, so a filter can compare numbers as numbers and text as text:

=========== ====================== ================= ==============================================
value       ``value_text``         ``value_num``     note
=========== ====================== ================= ==============================================
``None``    NULL                   NULL
``True``    ``'true'``             1.0               ``False``: ``'false'``, 0.0 (numpy bools too)
``3``       ``'3'``                3.0               any integral number
``0.01``    ``'0.01'`` (``repr``)  0.01              ±inf: ``'inf'``/``'-inf'`` and ±inf
``nan``     ``'nan'``              NULL              SQL has no NaN; the text keeps it
``'adam'``  ``'adam'``             NULL              (the text ``'nan'`` reads back as NaN)
other       JSON (sorted keys)     NULL              lists, dicts: decoded back as their JSON text
=========== ====================== ================= ==============================================

:func:`decode_param` inverts :func:`encode_param` for every row of the table (NaN included).
"""

from __future__ import annotations

import json
import math
import numbers
import re

# ------------------------------------------------------------------------------------------- statuses
#: every status a run can have, in lifecycle order
STATUSES = ("queued", "running", "finished", "diverged", "failed", "interrupted")
#: the run has not ended yet
UNFINISHED = ("queued", "running")
#: what ``expsvc run --resume`` runs again
RESUMABLE = ("queued", "failed", "interrupted")
#: a run's final status
FINISHED_STATUSES = ("finished", "diverged", "failed", "interrupted")
#: the status whose runs the statistics use
COMPLETED = "finished"
#: ``failed`` runs whose error starts with this were failed by the stale-run sweep
STALE_PREFIX = "stale:"
#: what ``--status`` accepts: the statuses plus ``stale`` (failed by the sweep)
FILTER_STATUSES = (*STATUSES, "stale")


def display_status(status: str, error: str | None) -> str:
    """``failed (stale)`` for runs failed by the stale-run sweep, the status otherwise."""
    if status == "failed" and (error or "").startswith(STALE_PREFIX):
        return "failed (stale)"
    return status


# ------------------------------------------------------------------------------------- summary columns
#: the statistics columns of ``metric_summaries``, in order
SUMMARY_FIELDS = ("first", "last", "last_step", "min", "min_step", "max", "max_step", "mean", "count", "nan_count")
#: the summary statistics a filter or a metric may name (``min(loss)``...); ``last`` is ``metrics.K``
STATS = ("first", "last", "min", "max", "mean")


# ------------------------------------------------------------------------------------- evaluation keys
#: the data splits a run is evaluated on, and the prefix of their metric keys (``val_loss``, ``test_accuracy``)
EVAL_SPLITS = ("train", "val", "test")
#: the per-step training loss history (the last minibatch's loss at every update)
LOSS_KEY = "loss"
#: wall seconds from the start of training at each evaluation (``--eval-every``), stored by epoch like the
#: evaluation histories, so a target reached at an epoch has a time
SECONDS_KEY = "eval_seconds"


def eval_key(split: str, metric: str) -> str:
    """The stored key of ``metric`` (``loss``, ``accuracy``...) evaluated on ``split``: ``val_accuracy``."""
    return f"{split}_{metric}"


def is_epoch_key(key: str) -> bool:
    """Whether ``key``'s history is indexed by epoch (evaluation histories) rather than by update (``loss``)."""
    return key == SECONDS_KEY or any(key.startswith(f"{split}_") for split in EVAL_SPLITS)


# ---------------------------------------------------------------------------------- parameter encoding
_INTEGER = re.compile(r"-?\d+")


def encode_param(value: object) -> tuple[str | None, float | None]:
    """``(value_text, value_num)`` for one parameter value (see the table in the module docstring)."""
    if value is None:
        return None, None
    if isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", None) == "b":  # numpy bools
        return ("true" if value else "false"), float(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value)), float(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return repr(number), (None if math.isnan(number) else number)
    if isinstance(value, str):
        return value, None
    return json.dumps(value, sort_keys=True, default=str), None


def decode_param(text: str | None, num: float | None) -> object:
    """The Python value of a parameter row: bool, int, float (NaN and ±inf included) or text."""
    if num is None:
        return math.nan if text == "nan" else text
    if text == "true":
        return True
    if text == "false":
        return False
    if text is not None and _INTEGER.fullmatch(text):
        return int(text)
    return float(num)
