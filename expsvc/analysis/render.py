"""Turn analysis results into text for people (tables fitted to the terminal), markdown, JSON, CSV and sparklines."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from expsvc.analysis.keys import fmt_value
from expsvc.store.vocab import is_epoch_key

EPOCH_AT = "epoch="

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


def _wrap_cell(cell: str, width: int, breaks: str = " ") -> list[str]:
    """``cell`` as lines of at most ``width`` columns, broken at spaces; a word wider than ``width`` breaks
    after one of the characters in ``breaks`` (or is cut where it has none)."""
    from rich.cells import cell_len

    if cell_len(cell) <= width:
        return [cell]
    width = max(width, 1)
    pieces: list[tuple[str, str]] = []  # (glue, text): words after a space, parts of too-wide words after ""
    for word in cell.split():
        parts = [word] if cell_len(word) <= width else _words(word, breaks) or [word]
        pieces += [(" " if i == 0 else "", part) for i, part in enumerate(parts)]
    lines: list[str] = []
    line = ""
    for glue, piece in pieces:
        if line and cell_len(line + glue + piece) > width:
            lines.append(line)
            line = ""
        line += (glue if line else "") + piece
        while cell_len(line) > width:  # no break inside: cut
            cut = width
            while cut > 1 and cell_len(line[:cut]) > width:
                cut -= 1
            lines.append(line[:cut])
            line = line[cut:]
    if line or not lines:
        lines.append(line)
    return lines


def _longest_word(text: str, breaks: str = " ") -> int:
    from rich.cells import cell_len

    return max((cell_len(w) for w in _words(text, breaks)), default=0)


def _words(text: str, breaks: str) -> list[str]:
    import re

    extra = re.escape(breaks.replace(" ", ""))
    return re.findall(rf"[^\s{extra}]*[{extra}]|[^\s{extra}]+", text) if extra else text.split()


def _shrink(natural: dict[int, int], mins: dict[int, int], width: int,
            cells: dict[int, int] | None = None) -> dict[int, int] | None:
    """Column widths that fit ``width``, or None.  Headers wrap first (columns narrow down to their widest
    cell), then cells wrap, the widest column narrowing first."""
    widths = dict(natural)
    excess = sum(widths.values()) + 2 * (len(widths) - 1) - width
    if excess <= 0:
        return widths
    if sum(widths[c] - mins[c] for c in widths) < excess:
        return None
    for floor in ({c: max(mins[c], (cells or {}).get(c, 0)) for c in widths}, mins):
        room = {c: widths[c] - floor[c] for c in widths if floor[c] < widths[c]}
        while excess > 0 and room:
            c = max(room, key=lambda k: (widths[k], room[k]))
            widths[c] -= 1
            room[c] -= 1
            if room[c] == 0:
                del room[c]
            excess -= 1
    return widths


HEADER_BREAKS = " ./"  # headers also break after a dot or slash (``optimizer.`` / ``momentum``)
CELL_BREAKS = " =."  # a word too wide for its column breaks after ``=`` or ``.`` (``optimizer.`` / ``momentum=``)


def fit_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[str] | frozenset[str] = frozenset(),
              styles: Sequence[dict[str, str]] | None = None, *, width: int | None = None,
              drop: Sequence[str] = (), wrap: dict[str, int | None] | None = None,
              squeeze: dict[str, int] | None = None) -> tuple[list[str], list[str]]:
    """A fixed-width text table no line of which is longer than ``width`` (None: no limit), and what it hid.

    To fit, in this order: headers wrap at their words and the columns named in ``wrap`` wrap their cells
    (name -> narrowest width; None: the column's longest word); the columns named in ``drop`` are left out,
    first named first; the columns named in ``squeeze`` wrap down to the width given; as a last resort every
    column wraps.  Returns the lines and the headers of the columns left out.  Fast for thousands of rows
    (plain text, unlike rich); ``styles`` colours cells by value.
    """
    import typer
    from rich.cells import cell_len

    wrap, squeeze = wrap or {}, squeeze or {}
    natural = {i: max([cell_len(h), *(cell_len(r[i]) for r in rows)]) for i, h in enumerate(header)}
    widest_word = {i: max((_longest_word(r[i]) for r in rows), default=0) for i in natural}

    def mins(cols: Sequence[int], tier: int) -> dict[int, int]:
        out = {}
        for c in cols:
            h = header[c]
            floor = max((cell_len(r[c]) for r in rows), default=0)
            if h in wrap:
                floor = widest_word[c] if wrap[h] is None else min(wrap[h] or 1, floor)
            if tier >= 2 and h in squeeze:
                floor = min(floor, squeeze[h])
            floor = max(floor, _longest_word(h, HEADER_BREAKS))
            out[c] = 1 if tier >= 3 else min(natural[c], max(floor, 1))
        return out

    widest_cell = {i: max((cell_len(r[i]) for r in rows), default=0) for i in natural}

    def attempt(cols: Sequence[int], tier: int) -> dict[int, int] | None:
        if width is None:
            return None
        return _shrink({c: natural[c] for c in cols}, mins(cols, tier), width, widest_cell)

    cols = list(range(len(header)))
    widths: dict[int, int] | None = natural
    if width is not None:
        width = max(width, 1)
        order = [header.index(h) for h in drop if h in header]
        widths = attempt(cols, 1)
        while widths is None and order:
            cols.remove(order.pop(0))
            widths = attempt(cols, 1)
        widths = widths or attempt(cols, 2) or attempt(cols, 3)
        if widths is None:  # narrower than one character per column: keep what fits, left first
            kept: dict[int, int] = {}
            for c in cols:
                if sum(kept.values()) + 2 * len(kept) + 1 <= width:
                    kept[c] = 1
            widths = _shrink({c: natural[c] for c in kept}, {c: 1 for c in kept}, width) or kept
    hidden = [h for i, h in enumerate(header) if i not in widths]
    cols = sorted(widths)

    def block(cells: Sequence[str], bold: bool = False) -> list[str]:
        parts = {c: _wrap_cell(cells[c], widths[c], HEADER_BREAKS if bold else CELL_BREAKS) for c in cols}
        height = max(len(p) for p in parts.values())
        lines = []
        for k in range(height):
            texts = []
            for c in cols:
                cell = parts[c][k] if k < len(parts[c]) else ""
                pad = " " * (widths[c] - cell_len(cell))
                text = pad + cell if header[c] in right else cell + pad
                color = styles[c].get(cells[c]) if styles and cell else None
                if color or bold:
                    text = typer.style(text, fg=color, bold=bold)
                texts.append(text)
            lines.append("  ".join(texts).rstrip())
        return lines

    out = [*block(header, bold=True), "  ".join("─" * widths[c] for c in cols)]
    for row in rows:
        out.extend(block(row))
    return out, hidden


def prose(text: str, width: int | None, indent: str = "", first: str = "") -> str:
    """``text`` for a terminal ``width`` wide: wrapped at spaces (never at hyphens: flags and names stay whole),
    the first line prefixed by ``first``, the others by ``indent``; unwrapped when ``width`` is None (piped)."""
    import textwrap

    if not width:
        return first + text
    return "\n".join(textwrap.wrap(text, width, initial_indent=first, subsequent_indent=indent,
                                   break_on_hyphens=False))


def hidden_note(hidden: Sequence[str], width: int | None, how: str = "--wide shows them") -> list[str]:
    """The line saying which columns a narrow terminal left out (wrapped to ``width``)."""
    import textwrap

    if not hidden:
        return []
    text = f"(left out to fit {width} columns: {', '.join(dict.fromkeys(hidden))}; {how})"
    return textwrap.wrap(text, width or len(text), break_on_hyphens=False)


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[str] | frozenset[str] = frozenset(),
               styles: Sequence[dict[str, str]] | None = None, *, width: int | None = None,
               drop: Sequence[str] = (), wrap: dict[str, int | None] | None = None,
               squeeze: dict[str, int] | None = None) -> str:
    """:func:`fit_table` as text, with a note naming the columns left out (if any)."""
    lines, hidden = fit_table(header, rows, right, styles, width=width, drop=drop, wrap=wrap, squeeze=squeeze)
    return "\n".join([*lines, *hidden_note(hidden, width)])


def runs_table(rows: Sequence[RunRow], params: Sequence[str], width: int | None = None) -> str:
    """The ``expsvc runs`` table: a column per identifying parameter, fitted to ``width`` columns.

    Parameters wrap rather than vanish; to fit, the start time, the duration, the experiment (when every
    row has the same), the updates and the test accuracy are left out in that order, and a note says so.
    """
    header = ["id", "experiment", *params, "seed", "status", "final loss", "test acc", "updates", "duration",
              "started (UTC)"]
    cells = [[r.id[:8], r.experiment, *(_param(r.params.get(p)) for p in params), str(r.seed), r.display_status,
              fmt(r.final_loss), fmt(r.test_accuracy), fmt(r.updates), fmt_duration(r.duration),
              fmt_time(r.started_at)] for r in rows]
    styles: list[dict[str, str]] = [{} for _ in header]
    styles[header.index("status")] = STATUS_COLORS
    one_experiment = len({r.experiment for r in rows}) == 1
    drop = ["started (UTC)", "duration", *(["experiment"] if one_experiment else []), "updates", "test acc"]
    wrap: dict[str, int | None] = {p: None for p in params} | {"experiment": None}
    squeeze = {p: 6 for p in params} | {"experiment": 6}
    return text_table(header, cells, RIGHT, styles, width=width, drop=drop, wrap=wrap, squeeze=squeeze)


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
def _items(items: Sequence[str], width: int | None, indent: str = "") -> list[str]:
    """``items`` joined by two spaces, a new line (indented) before an item that would pass ``width``."""
    from rich.cells import cell_len

    lines: list[str] = []
    line = ""
    for item in items:
        for piece in _wrap_cell(item, max((width or cell_len(item)) - len(indent), 1)):
            if line and width is not None and cell_len(line + "  " + piece) > width:
                lines.append(line)
                line = indent + piece
            else:
                line = f"{line}  {piece}" if line else piece
    return [*lines, line] if line else lines


def show_text(d: RunDetails, width: int | None = None) -> list[str]:
    """The lines of ``expsvc show``: header, config, components, summaries, sparkline; none longer than
    ``width`` (None: no limit) -- values wrap, the component's package goes first when space runs out."""
    out = _items([f"run {d.id}", f"experiment {d.experiment}", f"seed {d.seed}", f"group {d.group_key}"], width)
    out += _items([f"status: {d.status}"], width)
    if d.error:
        first = d.error.strip().splitlines()
        out += _items([f"error: {first[-1] if first else d.error}"
                       + (" (full traceback in --json)" if len(first) > 1 else "")], width, "  ")
    c = d.columns
    out += _items([f"started {fmt_time(c['started_at'])} UTC,", f"ended {fmt_time(c['ended_at'])} UTC,",
                   f"duration {fmt_duration(c['duration'])},", f"updates {fmt(c['updates'])},",
                   f"epochs {fmt(c['epochs'])},", f"converged {fmt(c['converged'])},",
                   f"steps/epoch {fmt(c['steps_per_epoch'])}"], width)
    if c.get("expsvc_version") or c.get("host"):
        out += _items([f"expsvc {c.get('expsvc_version') or DASH},", f"numpy {c.get('numpy_version') or DASH},",
                       f"host {c.get('host') or DASH},", f"pid {c.get('pid') or DASH}"], width)
    out.append("")
    config = [[k, v if isinstance(v, str) else json.dumps(v)] for k, v in d.config.items()]
    out += fit_table(("config", "value"), config, width=width, wrap={"value": None}, squeeze={"value": 8})[0]
    out.append("")
    if d.components:
        comps = [[comp["kind"], comp["name"], comp["spec"], comp["plugin"], comp["package"] or DASH,
                  comp["version"] or DASH] for comp in d.components]
        out.append(text_table(("kind", "name", "spec", "plugin", "package", "version"), comps, width=width,
                              drop=("package", "name"), wrap={"spec": None, "plugin": None},
                              squeeze={"spec": 8, "plugin": 8}))
    else:
        out.append("components: none recorded")
    out.append("")
    series = {k: v for k, v in d.summaries.items() if v["count"] != 1}
    single = {k: v for k, v in d.summaries.items() if v["count"] == 1}
    if series:
        # evaluation histories are indexed by epoch, the loss by update: each extreme says which it is
        # ("(epoch=5)": one word, so a narrow table wraps it as one)
        epochs = any(is_epoch_key(k) for k in series)
        where = "step/epoch" if epochs else "step"

        def at(key: str, step: Any) -> str:
            return f"({EPOCH_AT if is_epoch_key(key) else ''}{fmt(step)})"

        rows = [[key, fmt(v["first"]), fmt(v["last"]), f"{fmt(v['min'])} {at(key, v['min_step'])}",
                 f"{fmt(v['max'])} {at(key, v['max_step'])}", fmt(v["mean"]), str(v["count"]), str(v["nan_count"])]
                for key, v in series.items()]
        out.append(text_table(("series", "first", "last", f"min ({where})", f"max ({where})", "mean", "count", "NaN"),
                              rows, frozenset({"first", "last", "mean", "count", "NaN"}), width=width,
                              wrap={"series": None, f"min ({where})": None, f"max ({where})": None}))
    if single:
        rows = [[key, fmt(v["last"])] for key, v in single.items()]
        out += fit_table(("metric", "value"), rows, width=width, wrap={"metric": None})[0]
    if not d.summaries:
        out.append("summaries: none recorded")
    if d.loss:
        finite = [v for v in d.loss if math.isfinite(v)]
        tail = f"{fmt(d.loss[0])} → {fmt(d.loss[-1])}" + (f" (min {fmt(min(finite))})" if finite else "")
        spark = sparkline(d.loss, min(60, max((width or 80) - 5, 10)))
        out += _items([f"loss {spark}", tail, f"[{len(d.loss)} steps]"], width)
    else:
        out.append("loss: no history")
    return out


# ----------------------------------------------------------------------------------------- run
def mean_std(values: Sequence[float]) -> str:
    """``0.2866 ± 0.0037`` (mean ± sample std) to significant digits, so small losses never read ``0 ± 0``."""
    import statistics

    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return DASH
    if len(vals) == 1:
        return f"{fmt(vals[0])} (one run)"
    return f"{fmt(statistics.fmean(vals))} ± {fmt(statistics.stdev(vals), 2)}"


def run_summary(title: str, groups: Sequence[tuple[str, str, Sequence[float], Sequence[float], Sequence[float]]],
                width: int | None = None) -> str:
    """``expsvc run``'s table: per group its label, run counts, final loss and test accuracy (mean ± std over
    the finished runs, significant digits) and mean updates; labels wrap to fit ``width``."""
    import statistics

    rows = [[label, counts, mean_std(losses), mean_std(accs),
             fmt(statistics.fmean(upd), 4) if upd else DASH] for label, counts, losses, accs, upd in groups]
    header = ("group", "runs", "final loss (mean ± std)", "test accuracy", "updates")
    lines, hidden = fit_table(header, rows, frozenset({"updates"}), width=width, drop=("updates",),
                              wrap={"group": None, "runs": None}, squeeze={"group": 10, "runs": 8})
    import textwrap

    return "\n".join([*textwrap.wrap(title, width or max(len(title), 1)), *lines, *hidden_note(hidden, width)])


# ----------------------------------------------------------------------------------------- compare
GROUP_HEADER = ("group", "parameters", "finished/runs", "diverged", "failed", "unfinished", "seeds")
METRIC_HEADER = ("group", "n", "mean ± 95 % CI", "std", "median", "IQM [95 % boot]", "min", "max",
                 "Δ vs baseline ± 95 % CI", "p", "P(better)")


def _mean_cell(s: dict[str, Any]) -> str:
    if "n_reached" in s:  # time to target: how many reached it, always said
        if s["n_censored"] or s["n"] < 2:
            return f"{s['n_reached']} of {s['n']} reached" + (" (rest censored)" if s["n_censored"] else "")
        return f"{fmt(s['mean'])} ± {fmt(s['ci'])} ({s['n']} of {s['n']} reached)"
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


COMPARE_DROP = ("IQM [95 % boot]", "median", "min – max", "std")
"""The statistics a narrow terminal leaves out of ``compare``'s tables, first named first."""
PROSE_WIDTH = 100


def compare_table(result: CompareResult, width: int | None = None) -> str:
    """The terminal form: the groups table, one table per metric, the sentences and the method.

    Plain fixed-width text (rich took over a second for the 100 tables of 20 groups × 5 metrics); min and
    max share a column and the Δ method goes under the table.  No line is longer than ``width`` (None: no
    limit): labels wrap, and the IQM, median, min – max and std columns are left out in that order when
    the rest does not fit (one note says which).  Markdown, JSON and CSV keep every field.
    """
    import textwrap

    group_cells = group_rows(result)
    header: Sequence[str] = GROUP_HEADER
    if all(row[0].removesuffix(" (baseline)") == row[1] for row in group_cells):  # the label says it all
        header, group_cells = [h for h in header if h != "parameters"], [[r[0], *r[2:]] for r in group_cells]
    groups, hidden = fit_table(header, group_cells, width=width, drop=("seeds",),
                               wrap={"group": None, "parameters": None, "seeds": 5},
                               squeeze={"group": 10, "parameters": 10})
    prose = min(width or PROSE_WIDTH, PROSE_WIDTH)
    out = [*textwrap.wrap(f"experiment {result.experiment}: groups", prose), *groups, ""]
    rows = compare_rows(result)
    right = set(TERMINAL_HEADER) - {"group"}
    wrap: dict[str, int | None] = {"group": None}
    squeeze = {"group": 10, "IQM [95 % boot]": 8, "min – max": 8, "mean ± 95 % CI": 9, "Δ vs baseline ± 95 % CI": 9}
    for m in result.metrics:
        cells, tags = [], set()
        for row in rows[m.label]:
            diff, tag = _split_tag(row[8])
            tags.add(tag)
            cells.append([*row[:6], f"{row[6]} – {row[7]}", diff, *row[9:]])
        lines, left_out = fit_table(TERMINAL_HEADER, cells, right, width=width, drop=COMPARE_DROP, wrap=wrap,
                                    squeeze=squeeze)
        hidden += left_out
        out += [*textwrap.wrap(_metric_title(m), prose), *lines]
        tags.discard("")
        if tags:
            out += textwrap.wrap("Δ: " + "; ".join(sorted(tags)), prose)
        out.append("")
    out += hidden_note(hidden, width, "--wide or --format markdown shows them")
    wrap_prose = textwrap.TextWrapper(width=prose, subsequent_indent="  ", break_on_hyphens=False)
    out += [wrap_prose.fill(f"warning: {w}") for w in result.warnings]  # before the sentences they qualify
    out += [wrap_prose.fill(f"• {s}") for s in _sentences(result)]
    out += [wrap_prose.fill(note) for note in _notes(result)]
    out.append("Method:")
    out += [textwrap.fill(line, width=prose, initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False)
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
