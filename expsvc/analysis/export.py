"""``expsvc export``: runs with parameters and summaries (and optionally histories) as CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from expsvc.errors import ExpsvcError
from expsvc.store import read
from expsvc.store.read import RunRecord

if TYPE_CHECKING:
    from expsvc.store.store import RunStore

FORMATS = ("csv", "json")
STAT_COLUMNS = ("first", "last", "min", "min_step", "max", "max_step", "mean", "count", "nan_count")
RUN_COLUMNS = ("updates", "epochs", "converged", "duration", "steps_per_epoch")


class ExportError(ExpsvcError):
    """An export that cannot be written."""


def _clean(v: Any) -> Any:
    """JSON/CSV-safe value: non-finite floats → ``None``."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


Series = tuple[list[int], list[float | None]]


def fetch_all_histories(store: RunStore, run_ids: Sequence[str]) -> dict[str, dict[str, Series]]:
    """Every history of the given runs: ``{run_id: {key: (steps, values)}}`` (NaN becomes ``None``, ±inf stays)."""
    return {
        run_id: {key: (steps.tolist(), [None if v != v else v for v in values.tolist()])
                 for key, (steps, values) in keys.items()}
        for run_id, keys in read.histories(store, run_ids).items()
    }


def _run_dict(r: RunRecord) -> dict[str, Any]:
    return {
        "id": r.id, "experiment": r.experiment, "group": r.group_key, "seed": r.seed, "status": r.display_status,
        "error": r.error,
        "created": r.created_at.isoformat() if r.created_at else None,
        "started": r.started_at.isoformat() if r.started_at else None,
        **{c: _clean(getattr(r, c)) for c in RUN_COLUMNS},
        "config": r.config,
        "params": {k: _clean(v) for k, v in r.params.items()},
        "summaries": {k: {s: _clean(v) for s, v in vals.items()} for k, vals in r.summaries.items()},
    }


def export_data(store: RunStore, run_ids: Sequence[str], *, history: bool = False) -> list[dict[str, Any]]:
    """The exported runs as dicts (oldest first): columns, config, params, summaries and maybe histories."""
    records = read.records(store, run_ids=run_ids)
    rows = [_run_dict(r) for r in records]
    if history:
        hist = fetch_all_histories(store, [r.id for r in records])
        for row in rows:
            row["history"] = {k: {"steps": s, "values": v} for k, (s, v) in hist.get(row["id"], {}).items()}
    return rows


def write_json(rows: list[dict[str, Any]], fh: TextIO) -> None:
    """``{"runs": [...]}`` with NaN and ±inf as ``null`` (JSON has neither)."""
    clean = [
        {**row, "history": {k: {"steps": h["steps"], "values": [_clean(v) for v in h["values"]]}
                            for k, h in row["history"].items()}} if "history" in row else row
        for row in rows
    ]
    json.dump({"runs": clean}, fh, indent=1, allow_nan=False, default=str)
    fh.write("\n")


def write_csv(rows: list[dict[str, Any]], fh: TextIO) -> None:
    """One line per run: run columns, ``params.<key>``, ``metrics.<key>`` (single values) and
    ``metrics.<key>.<stat>`` for logged series."""
    params = sorted({k for r in rows for k in r["params"]})
    keys = sorted({k for r in rows for k in r["summaries"]})
    series = {k for k in keys if any((r["summaries"].get(k) or {}).get("count", 0) > 1 for r in rows)}
    header = ["id", "experiment", "group", "seed", "status", "error", "created", "started", *RUN_COLUMNS]
    header += [f"params.{k}" for k in params]
    for k in keys:
        header += [f"metrics.{k}.{s}" for s in STAT_COLUMNS] if k in series else [f"metrics.{k}"]
    w = csv.writer(fh, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        err = (r["error"] or "").strip().splitlines()
        line = [r["id"], r["experiment"], r["group"], r["seed"], r["status"], err[-1] if err else "",
                r["created"] or "", r["started"] or "", *(_cell(r[c]) for c in RUN_COLUMNS)]
        line += [_cell(r["params"].get(k)) for k in params]
        for k in keys:
            s = r["summaries"].get(k) or {}
            line += [_cell(s.get(c)) for c in STAT_COLUMNS] if k in series else [_cell(s.get("last"))]
        w.writerow(line)


def write_history_csv(rows: list[dict[str, Any]], fh: TextIO) -> None:
    """Histories in long form: ``run_id,key,step,value`` (empty value = NaN)."""
    w = csv.writer(fh, lineterminator="\n")
    w.writerow(["run_id", "key", "step", "value"])
    for r in rows:
        for key, h in r.get("history", {}).items():
            for step, value in zip(h["steps"], h["values"], strict=True):
                w.writerow([r["id"], key, step, "" if value is None else repr(float(value))])


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ""
    return v


def history_path(out: Path) -> Path:
    """Where ``--history`` goes for CSV: ``runs.csv`` → ``runs.history.csv``."""
    return out.with_name(f"{out.stem}.history{out.suffix or '.csv'}")


def export_runs(store: RunStore, run_ids: Sequence[str], out: str, fmt: str = "csv", *,
                history: bool = False) -> list[str]:
    """Write the runs to ``out`` (``-`` = stdout); returns the files written (CSV histories go beside)."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: allowed: {', '.join(FORMATS)}")
    if out == "-" and history and fmt == "csv":
        raise ExportError("--history with --format csv writes a second file; give --out FILE, not '-'")
    rows = export_data(store, run_ids, history=history)
    if out == "-":
        buf = io.StringIO()
        (write_json if fmt == "json" else write_csv)(rows, buf)
        import sys

        sys.stdout.write(buf.getvalue())
        return []
    from expsvc.files import atomic_open

    path = Path(out)
    written = [str(path)]
    with atomic_open(path, "w", option="--out", encoding="utf-8", newline="") as fh:
        (write_json if fmt == "json" else write_csv)(rows, fh)
    if history and fmt == "csv":
        hp = history_path(path)
        with atomic_open(hp, "w", option="--out", encoding="utf-8", newline="") as fh:
            write_history_csv(rows, fh)
        written.append(str(hp))
    return written
