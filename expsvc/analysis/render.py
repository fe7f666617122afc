"""Turn analysis results into text: rich tables, markdown, JSON, CSV and the loss sparkline."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from expsvc.analysis.keys import fmt_value

if TYPE_CHECKING:  # annotations only: ``runs`` must not import compare (numpy, scipy) through here
    from expsvc.analysis.compare import CompareResult, GroupResult
    from expsvc.analysis.listing import RunDetails, RunRow

BLOCKS = "▁▂▃▄▅▆▇█"
DASH = "–"


def fmt(x: float | int | None, digits: int = 4) -> str:
    """A number to ``digits`` significant digits; ``–`` for missing or NaN."""
    if x is None:
        return DASH
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if not math.isfinite(x):
        return DASH if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return f"{x:.{digits}g}"


def fmt_time(t: datetime | None) -> str:
    """``2026-01-31 14:05`` in UTC (SQLite returns naive UTC datetimes)."""
    if t is None:
        return DASH
    if t.tzinfo is not None:
        t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%d %H:%M")


def fmt_duration(s: float | None) -> str:
    """``0.84 s``, ``2 m 05 s``."""
    if s is None or not math.isfinite(s):
        return DASH
    if s < 60:
        return f"{s:.3g} s"
    m, sec = divmod(round(s), 60)
    return f"{m} m {sec:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} m"


def sparkline(values: Sequence[float], width: int = 60) -> str:
    """One line of unicode blocks for ``values`` (bucket means when longer than ``width``; NaN as ``×``)."""
    vals = [float(v) for v in values]
    if not vals:
        return ""
    buckets: list[float] = []
    n = len(vals)
    w = min(width, n)
    for i in range(w):
        chunk = [v for v in vals[i * n // w : (i + 1) * n // w] if math.isfinite(v)]
        buckets.append(sum(chunk) / len(chunk) if chunk else math.nan)
    finite = [b for b in buckets if math.isfinite(b)]
    if not finite:
        return "×" * w
    lo, hi = min(finite), max(finite)
    span = hi - lo
    out = []
    for b in buckets:
        if not math.isfinite(b):
            out.append("×")
        else:
            k = 0 if span == 0 else int((b - lo) / span * (len(BLOCKS) - 1) + 0.5)
            out.append(BLOCKS[k])
    return "".join(out)


# -------------------------------------------------------------------------------------------- runs
RIGHT = {"seed", "final loss", "test acc", "updates", "duration"}
STATUS_COLORS = {"finished": "green", "diverged": "yellow", "failed": "red", "failed (stale)": "red",
                 "interrupted": "magenta", "running": "cyan"}


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[str] | frozenset[str] = frozenset(),
               styles: Sequence[dict[str, str]] | None = None) -> str:
    """A fixed-width text table (fast for thousands of rows, unlike rich); ``styles`` colours cells by value."""
    import typer
    from rich.cells import cell_len

    widths = [cell_len(h) for h in header]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], cell_len(cell))

    def line(cells: Sequence[str], bold: bool = False) -> str:
        parts = []
        for i, (h, cell) in enumerate(zip(header, cells, strict=True)):
            pad = " " * (widths[i] - cell_len(cell))
            text = pad + cell if h in right else cell + pad
            color = styles[i].get(cell) if styles else None
            if color or bold:
                text = typer.style(text, fg=color, bold=bold)
            parts.append(text)
        return "  ".join(parts).rstrip()

    out = [line(header, bold=True), "  ".join("─" * w for w in widths)]
    out.extend(line(row) for row in rows)
    return "\n".join(out)


def runs_table(rows: Sequence[RunRow], params: Sequence[str]) -> str:
    """The ``expsvc runs`` table with a column per varying parameter."""
    header = ["id", "experiment", *params, "seed", "status", "final loss", "test acc", "updates", "duration",
              "started (UTC)"]
    cells = [[r.id[:8], r.experiment, *(_param(r.params.get(p)) for p in params), str(r.seed), r.display_status,
              fmt(r.final_loss), fmt(r.test_accuracy), fmt(r.updates), fmt_duration(r.duration),
              fmt_time(r.started_at)] for r in rows]
    styles = [{} for _ in header]
    styles[header.index("status")] = STATUS_COLORS
    return text_table(header, cells, RIGHT, styles)


def _param(v: Any) -> str:
    return DASH if v is None else fmt_value(v)


def runs_json(rows: Sequence[RunRow]) -> str:
    """``expsvc runs --json``."""
    return json.dumps([r.to_dict() for r in rows], indent=2, allow_nan=False)


def runs_csv(rows: Sequence[RunRow]) -> str:
    """``expsvc runs --csv``: one line per run, every parameter a ``params.<key>`` column."""
    keys = sorted({k for r in rows for k in r.params})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "experiment", "group", "seed", "status", *(f"params.{k}" for k in keys), "final_loss",
                "test_accuracy", "updates", "duration", "started", "created"])
    for r in rows:
        d = r.to_dict()
        w.writerow([r.id, r.experiment, r.group_key, r.seed, d["status"], *(_csv(r.params.get(k)) for k in keys),
                    _csv(d["final_loss"]), _csv(d["test_accuracy"]), _csv(r.updates), _csv(r.duration),
                    d["started"] or "", d["created"] or ""])
    return buf.getvalue()


def _csv(v: Any) -> Any:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return v


# -------------------------------------------------------------------------------------------- show
def show_text(d: RunDetails) -> list[Any]:
    """Renderables for ``expsvc show``: header, config, components, summaries, sparkline."""
    from rich.table import Table

    out: list[Any] = [f"[bold]run {d.id}[/bold]  experiment {d.experiment}  seed {d.seed}  group {d.group_key}",
                      f"status: {d.status}"]
    if d.error:
        first = d.error.strip().splitlines()
        out.append(f"error: {first[-1] if first else d.error}" + (" (full traceback in --json)" if len(first) > 1
                                                                   else ""))
    c = d.columns
    out.append(f"started {fmt_time(c['started_at'])} UTC, ended {fmt_time(c['ended_at'])} UTC, "
               f"duration {fmt_duration(c['duration'])}, updates {fmt(c['updates'])}, epochs {fmt(c['epochs'])}, "
               f"converged {fmt(c['converged'])}, steps/epoch {fmt(c['steps_per_epoch'])}")
    if c.get("expsvc_version") or c.get("host"):
        out.append(f"expsvc {c.get('expsvc_version') or DASH}, numpy {c.get('numpy_version') or DASH}, "
                   f"host {c.get('host') or DASH}, pid {c.get('pid') or DASH}")
    cfg = Table("config", "value", show_edge=False, pad_edge=False)
    for k, v in d.config.items():
        cfg.add_row(k, json.dumps(v) if not isinstance(v, str) else v)
    out.append(cfg)
    if d.components:
        comps = Table("kind", "name", "spec", "plugin", "package", "version", show_edge=False, pad_edge=False)
        for comp in d.components:
            comps.add_row(comp["kind"], comp["name"], comp["spec"], comp["plugin"], comp["package"] or DASH,
                          comp["version"] or DASH)
        out.append(comps)
    else:
        out.append("components: none recorded")
    if d.summaries:
        sums = Table("metric", "first", "last", "min (step)", "max (step)", "mean", "count", "NaN",
                     show_edge=False, pad_edge=False)
        for key, s in d.summaries.items():
            if s["count"] == 1:
                sums.add_row(key, DASH, fmt(s["last"]), DASH, DASH, DASH, "1", str(s["nan_count"]))
            else:
                sums.add_row(key, fmt(s["first"]), fmt(s["last"]), f"{fmt(s['min'])} ({fmt(s['min_step'])})",
                             f"{fmt(s['max'])} ({fmt(s['max_step'])})", fmt(s["mean"]), str(s["count"]),
                             str(s["nan_count"]))
        out.append(sums)
    else:
        out.append("summaries: none recorded")
    if d.loss:
        finite = [v for v in d.loss if math.isfinite(v)]
        tail = f"  {fmt(d.loss[0])} → {fmt(d.loss[-1])}" + (f" (min {fmt(min(finite))})" if finite else "")
        out.append(f"loss {sparkline(d.loss)}{tail}  [{len(d.loss)} steps]")
    else:
        out.append("loss: no history")
    return out


# ----------------------------------------------------------------------------------------- compare
GROUP_HEADER = ("group", "parameters", "finished/runs", "diverged", "failed", "unfinished", "seeds")
METRIC_HEADER = ("group", "n", "mean ± 95 % CI", "std", "median", "IQM [95 % boot]", "min", "max",
                 "Δ vs baseline ± 95 % CI", "p", "P(better)")


def _mean_cell(s: dict[str, Any]) -> str:
    if s.get("n_censored"):
        return f"censored: {s['n_censored']} of {s['n']} never converged"  # a lower bound has no mean
    if s["n"] == 0:
        return "no finished runs"
    if s["n"] == 1:
        return f"{fmt(s['mean'])} (n = 1, no interval)"
    return f"{fmt(s['mean'])} ± {fmt(s['ci'])}"


def _iqm_cell(s: dict[str, Any]) -> str:
    if s["n"] == 0 or s.get("n_censored"):
        return DASH
    if s["n"] == 1:
        return fmt(s["iqm"])
    return f"{fmt(s['iqm'])} [{fmt(s['iqm_low'])}, {fmt(s['iqm_high'])}]"


def _diff_cell(c: dict[str, Any] | None) -> str:
    if c is None:
        return "(baseline)"
    if c["method"] == "none":
        return DASH if c["diff"] is None else f"{fmt(c['diff'])} (no interval)"
    if c["method"] == "sign":  # censored values: only the order of each seed is known
        return f"better in {c['wins']}, worse in {c['losses']} (sign test)"
    tag = f"paired, {c['n']} seeds" if c["method"] == "paired" else "Welch"
    return f"{fmt(c['diff'])} ± {fmt(c['ci'])} ({tag})"


def _seeds(seeds: list[int]) -> str:
    if not seeds:
        return DASH
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))) and len(seeds) > 2:
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds[:12])) + (", ..." if len(seeds) > 12 else "")


def group_rows(result: CompareResult) -> list[list[str]]:
    """The cells of the groups table (counts per status)."""
    return [[g.short + (" (baseline)" if g.is_baseline else ""), g.label, f"{g.n_completed}/{g.n_expected}",
             str(g.n_diverged), str(g.n_failed), str(g.n_unfinished), _seeds(g.seeds)] for g in result.groups]


def compare_rows(result: CompareResult) -> dict[str, list[list[str]]]:
    """Per metric, the cells of its table, built from the JSON form so that both show the same numbers."""
    from expsvc.analysis.compare import fmt_p

    data = result.to_dict()
    out: dict[str, list[list[str]]] = {}
    for m in data["metrics"]:
        rows = []
        for g in data["groups"]:
            s = g["metrics"][m["label"]]
            c = s["vs_baseline"]
            rows.append([
                g["name"], str(s["n"]), _mean_cell(s), fmt(s["std"]), fmt(s["median"]), _iqm_cell(s),
                fmt(s["min"]), fmt(s["max"]), _diff_cell(c),
                DASH if c is None or c["p"] is None else fmt_p(c["p"]).removeprefix("p = "),
                DASH if c is None or c["prob_better"] is None else fmt(c["prob_better"], 3),
            ])
        out[m["label"]] = rows
    return out


TERMINAL_HEADER = ("group", "n", "mean ± 95 % CI", "std", "median", "IQM [95 % boot]", "min – max",
                   "Δ vs baseline ± 95 % CI", "p", "P(better)")


def _split_tag(cell: str) -> tuple[str, str]:
    """``"-0.26 ± 0.06 (paired, 5 seeds)"`` -> the number part and ``"paired, 5 seeds"``."""
    if cell.endswith(")") and " (" in cell and not cell.startswith("("):
        number, tag = cell.rsplit(" (", 1)
        return number, tag[:-1]
    return cell, ""


def _metric_title(m: Any) -> str:
    return f"{m.label} ({'lower' if m.lower_is_better else 'higher'} is better; {m.spec})"


def _notes(result: CompareResult) -> list[str]:
    notes = []
    for g in result.groups:
        if g.n_unfinished:
            notes.append(f"{g.label}: {g.n_unfinished} run(s) not finished yet (queued, running or interrupted).")
    return notes


def _sentences(result: CompareResult) -> list[str]:
    return [s for g in result.groups for s in g.sentences.values()]


def compare_table(result: CompareResult, width: int = 100) -> str:
    """The terminal form: the groups table, one table per metric, the sentences and the method.

    Plain fixed-width text (rich took over a second for the 100 tables of 20 groups × 5 metrics); min and
    max share a column and the Δ method goes under the table.  Markdown, JSON and CSV keep every field.
    """
    import textwrap

    out = [f"experiment {result.experiment}: groups", text_table(GROUP_HEADER, group_rows(result)), ""]
    rows = compare_rows(result)
    right = set(TERMINAL_HEADER) - {"group"}
    for m in result.metrics:
        cells, tags = [], set()
        for row in rows[m.label]:
            diff, tag = _split_tag(row[8])
            tags.add(tag)
            cells.append([*row[:6], f"{row[6]} – {row[7]}", diff, *row[9:]])
        out += [_metric_title(m), text_table(TERMINAL_HEADER, cells, right)]
        tags.discard("")
        if tags:
            out.append("Δ: " + "; ".join(sorted(tags)))
        out.append("")
    wrap = textwrap.TextWrapper(width=width, subsequent_indent="  ")
    out += [wrap.fill(f"warning: {w}") for w in result.warnings]  # before the sentences they qualify
    out += [wrap.fill(f"• {s}") for s in _sentences(result)]
    out += [wrap.fill(note) for note in _notes(result)]
    out.append("Method:")
    out += [textwrap.fill(line, width=width, initial_indent="  ", subsequent_indent="  ")
            for line in result.method if line]
    return "\n".join(out)


def compare_markdown(result: CompareResult) -> str:
    """``--format markdown``: the groups table, a pipe table per metric, the sentences and the method."""
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    def table(header: Sequence[str], rows: list[list[str]]) -> list[str]:
        return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
                *("| " + " | ".join(esc(c) for c in row) + " |" for row in rows), ""]

    lines = [f"### Experiment {esc(result.experiment)}", "", *table(GROUP_HEADER, group_rows(result))]
    rows = compare_rows(result)
    for m in result.metrics:
        lines += [f"**{esc(_metric_title(m))}**", "", *table(METRIC_HEADER, rows[m.label])]
    lines += [f"- **warning:** {esc(w)}" for w in result.warnings]
    lines += [f"- {s}" for s in _sentences(result)]
    lines += _notes(result)
    lines += ["", "**Method.**"]
    lines += [f"- {line}" for line in result.method if line]
    return "\n".join(lines) + "\n"


def compare_json(result: CompareResult) -> str:
    """``--format json``: every number of the table at full precision (``null`` where undefined)."""
    return json.dumps(result.to_dict(), indent=2, allow_nan=False)


CSV_FIELDS = ("n", "mean", "ci", "std", "median", "iqm", "iqm_low", "iqm_high", "min", "max")
CSV_CMP = ("method", "n", "diff", "ci", "low", "high", "p", "prob_better", "wins", "losses")


def compare_csv(result: CompareResult) -> str:
    """``--format csv``: one line per group and metric, raw numbers."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["experiment", "group", "baseline", "n_expected", "n_completed", "n_diverged", "n_failed",
                "n_unfinished", "metric", "better", *CSV_FIELDS, *(f"vs_baseline_{k}" for k in CSV_CMP)])
    data = result.to_dict()
    for g in data["groups"]:
        for m in data["metrics"]:
            s = g["metrics"][m["label"]]
            c = s["vs_baseline"] or {}
            w.writerow([data["experiment"], g["label"], int(g["baseline"]), g["n_expected"], g["n_completed"],
                        g["n_diverged"], g["n_failed"], g["n_unfinished"], m["label"], m["better"],
                        *(_csv(s[k]) for k in CSV_FIELDS), *(_csv(c.get(k)) for k in CSV_CMP)])
    return buf.getvalue()


def group_counts(g: GroupResult) -> str:
    """``5/5 finished, 0 diverged, 0 failed``."""
    return f"{g.n_completed}/{g.n_expected} finished, {g.n_diverged} diverged, {g.n_failed} failed"
