"""Targets, tables and result files of a suite run."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import reportpage, tunestudy
from benchmarks.timing import Stats, fmt, paired_ratio

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Target:
    """One target: ``ratio`` (the measured figure, as the target states it) against ``limit``."""

    key: str
    text: str
    ratio: float | None  # the measured figure (a ratio or an absolute value, as the target states)
    limit: float
    at_least: bool
    detail: str = ""

    @property
    def status(self) -> str:
        """PASS, MISS, or n/a when it could not be measured (e.g. torch missing)."""
        if self.ratio is None:
            return "n/a"
        ok = self.ratio >= self.limit if self.at_least else self.ratio <= self.limit
        return "PASS" if ok else "MISS"

    def line(self) -> str:
        """``PASS T1a ... measured 7.1× (needs ≥ 6×)``."""
        need = f"{'≥' if self.at_least else '≤'} {fmt(self.limit)}"
        got = "not measured" if self.ratio is None else fmt(self.ratio)
        detail = f"; {self.detail}" if self.detail else ""
        return f"{self.status:4s} {self.key:4s} {self.text}: {got} (needs {need}){detail}"

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "text": self.text, "measured": self.ratio, "limit": self.limit,
                "at_least": self.at_least, "status": self.status, "detail": self.detail}


def ratio(a: Stats | None, b: Stats | None) -> Stats | None:
    """The paired per-round ratio ``a / b`` (``None`` if either is missing)."""
    return None if a is None or b is None else paired_ratio(a, b)


def _target(key: str, text: str, stats: Stats | None, limit: float, at_least: bool) -> Target:
    """A target measured by the median of ``stats`` (its min–max as detail)."""
    if stats is None:
        return Target(key, text, None, limit, at_least)
    return Target(key, text, stats.median, limit, at_least, f"range {fmt(stats.min)}–{fmt(stats.max)}")


def targets(sections: dict[str, Any]) -> list[Target]:
    """Evaluate T1–T6 from the sections that ran (a target whose section did not run is n/a).  Ratios are
    medians of per-round paired ratios of contenders measured side by side."""
    out: list[Target] = []
    seed = sections.get("1_seed_net", {}).get("optimizers", {}).get("adamw", {}).get("stats", {})
    expsvc, floor, torch = seed.get("expsvc"), seed.get("numpy floor (flat)"), seed.get("torch eager")
    out.append(_target("T1a", "seed net AdamW R=1, expsvc steps/s ÷ torch eager steps/s", ratio(expsvc, torch),
                       6.0, True))
    out.append(_target("T1b", "seed net AdamW R=1, expsvc step time ÷ numpy floor (flat) step time",
                       ratio(floor, expsvc), 1.15, False))
    five = sections.get("2_five_seeds", {})
    out.append(_target("T2", "5 seeds vectorised wall time ÷ one seed's",
                       ratio(five.get("5 seeds vectorised (R=5)"), five.get("1 seed (R=1)")), 1.5, False))
    wide = sections.get("3_wide_net", {}).get("threads", {})
    for k in ("1", "2"):
        res = wide.get(k, {}).get("results", {}).get("float32", {})
        out.append(_target(f"T3.{k}", f"wide net float32, {k} thread{'s' if k != '1' else ''}, expsvc ÷ torch steps/s",
                           ratio(res.get("expsvc"), res.get("torch eager")), 1.0, True))
    tracking = sections.get("4_tracking", {})
    for jobs in ("jobs=1", "jobs=2"):
        res = tracking.get(jobs, {})
        out.append(_target(f"T4.{jobs[-1]}", f"default job {jobs}, wall time history on ÷ off",
                           ratio(res.get("history on"), res.get("history off")), 1.05, False))
    startup = sections.get("5_startup", {})
    out.append(_target("T5a", "expsvc --help wall time [s]", startup.get("expsvc --help"), 0.3, False))
    out.append(_target("T5b", "default job wall time incl. start-up [s]", startup.get("default job (subprocess)"),
                       3.0, False))
    out.append(_target("T5c", "default job peak RSS [MB]", startup.get("default job peak RSS"), 250.0, False))
    big = sections.get("6_big_store", {}).get("stats", {})
    out.append(_target("T6a", "expsvc compare on 1,000 runs × 1,000 steps [s]", big.get("expsvc compare"), 1.0,
                       False))
    out.append(_target("T6b", "expsvc runs on 1,000 runs × 1,000 steps [s]", big.get("expsvc runs"), 0.5, False))
    cnn = sections.get("7_digits_cnn", {})
    f32 = cnn.get("results", {}).get("float32", {})
    out.append(_target("C1", "digits CNN float32, 1 thread, expsvc ÷ torch eager steps/s",
                       ratio(f32.get("expsvc"), f32.get("torch eager")), 2.0, True))
    seeds = cnn.get("seeds", {})
    out.append(_target("C2", "digits CNN, 5 seeds vectorised wall time ÷ one seed's",
                       ratio(seeds.get("5 seeds vectorised (R=5)"), seeds.get("1 seed (R=1)")), 2.5, False))
    grid = sections.get("8_grid", {}).get("stats", {})
    one, g1, g2 = grid.get("one run (R=1)"), grid.get("expsvc grid, jobs=1 (R=45)"), grid.get(
        "expsvc grid, jobs=2 (2 tasks)")
    out.append(_target("G1.1", "45-run grid (9 lr × 5 seeds) jobs=1 wall time ÷ one run's", ratio(g1, one), 5.0, False))
    out.append(_target("G1.2", "45-run grid jobs=2 wall time ÷ one run's", ratio(g2, one), 3.0, False))
    out.append(_target("G2a", "torch eager stacked (45 replicas) wall time ÷ expsvc grid jobs=1",
                       ratio(grid.get("torch eager stacked (bmm, fused AdamW, lr tensor)"), g1), 1.5, True))
    out.append(_target("G2b", "torch eager sequential (45 runs, est.) wall time ÷ expsvc grid jobs=1",
                       ratio(grid.get("torch eager sequential (45 × one run, est.)"), g1), 40.0, True))
    out += reportpage.targets(sections.get("9_report", {}), _target)
    ev = sections.get("10_evaluation", {})
    for key, how in (("E1", "subprocess"), ("E2", "in-process")):
        res = ev.get(how, {})
        out.append(_target(key, f"default job --eval-every 1 --val-split 0.2 ÷ without evaluation, wall time ({how})",
                           ratio(res.get("--eval-every 1 --val-split 0.2"), res.get("no evaluation")), 1.15, False))
    out += tunestudy.targets(sections.get("11_tune", {}), _target)
    return out


# ------------------------------------------------------------------------------------------------ output


def jsonable(value: Any) -> Any:
    """Stats and nested containers as plain JSON values."""
    if isinstance(value, Stats):
        return value.as_dict()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _stats_rows(stats: dict[str, Any], ref: str | None = None) -> list[list[str]]:
    """Rows ``name | median [min–max] unit | ÷ ref`` for a dict of Stats (median paired ratio to ``ref``)."""
    rows = []
    base = stats.get(ref) if ref else None
    for name, s in stats.items():
        if not isinstance(s, Stats):
            continue
        rows.append([name, s.text(), f"{fmt(paired_ratio(s, base).median)}×" if base is not None else ""])
    return rows


def markdown(meta: dict[str, Any], sections: dict[str, Any], tgts: list[Target]) -> str:
    """The whole run as Markdown: machine, targets, one table per section."""
    m = meta["machine"]
    torch = m.get("torch") or {}
    lines = [
        f"# expsvc benchmarks — {meta['git']['short']}{' (uncommitted changes)' if meta['git'].get('dirty') else ''}",
        "",
        f"Mode: **{meta['mode']}**, run {meta['started']} (UTC), {meta['seconds']:.0f} s.  "
        f"Commit `{meta['git']['commit']}`.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']} (family {m.get('cpu_details', {}).get('family')}, model "
        f"{m.get('cpu_details', {}).get('model')}; {', '.join(m.get('cpu_details', {}).get('simd', []))})"
        f"{', virtualised' if m.get('cpu_details', {}).get('hypervisor') else ''}; "
        f"{m['cpus']['logical']} logical CPUs ({m['cpus']['usable']} usable)",
        f"- Free CPUs while measuring (2 busy processes vs 1): {m.get('parallel_capacity')} of 2",
        f"- Python {m['python']} ({m['implementation']}), {m['os']} {m['machine']}",
        f"- numpy {m['numpy']}, BLAS {m.get('blas')} {m.get('blas_version')} (kernel: {m.get('blas_core')}); "
        f"threadpoolctl: {'not installed' if isinstance(m['threadpools'], str) else m['threadpools']}",
        f"- torch: {torch.get('torch', 'not installed — pip install torch==2.13.0')}"
        + (f" (CPU capability {torch.get('cpu_capability')}, MKL {torch.get('mkl')})" if torch else ""),
        f"- BLAS environment: {m['env'] or 'none set'}",
        "",
        "## Targets",
        "",
    ]
    lines += _table(["", "target", "measured (median)", "min–max", "needs"], (
        [t.status, f"{t.key} {t.text}", "—" if t.ratio is None else fmt(t.ratio), t.detail.removeprefix("range "),
         f"{'≥' if t.at_least else '≤'} {fmt(t.limit)}"] for t in tgts))
    lines += ["", "Ratios are medians of per-round ratios of contenders measured side by side (interleaved)."]
    s1 = sections.get("1_seed_net")
    if s1:
        lines += ["", "## 1. Seed net (2-5-3-1 tanh, BCE with logits, batch 50, 300 points), steps/s, R = 1",
                  "", f"{s1['epochs']} epochs × {s1['steps_per_epoch']} steps per repetition for expsvc and the "
                  "flat floor (fewer for the slower contenders); ratio = contender ÷ torch eager.", ""]
        for opt, data in s1["optimizers"].items():
            ref = "torch eager" if "torch eager" in data["stats"] else None
            lines += [f"**{opt}**", ""]
            lines += _table(["contender", "steps/s median [min–max]", "× torch"], _stats_rows(data["stats"], ref))
            agree = ", ".join(f"{k} {v:.1e}" for k, v in data["agreement"].items())
            lines += ["", f"max |θ − θ_expsvc| after 20 epochs: {agree}", ""]
    s2 = sections.get("2_five_seeds")
    if s2:
        lines += ["## 2. Five seeds (AdamW, build + train), wall time", ""]
        lines += _table(["", "seconds median [min–max]", "÷ 1 seed"], _stats_rows(s2, "1 seed (R=1)"))
        lines += [""]
    s3 = sections.get("3_wide_net")
    if s3:
        lines += ["## 3. Wide net (784-256-256-10 relu, cross-entropy, batch 128, AdamW, random data), steps/s", "",
                  f"{s3['epochs']} epochs × {s3['steps_per_epoch']} steps per repetition; each contender in its own "
                  "worker process with OPENBLAS/OMP/MKL_NUM_THREADS set; torch.set_num_threads(n).  Free CPUs "
                  f"(of 2) measured before / after: {s3.get('free_cpus_before')} / {s3.get('free_cpus_after')} — "
                  "2-thread figures mean little when fewer than 2 are free.", ""]
        rows = []
        for k, block in s3["threads"].items():
            for dtype, stats in block["results"].items():
                e, t = stats.get("expsvc"), stats.get("torch eager")
                rows.append([k, dtype, e.text() if e else "—", t.text() if t else "—",
                             f"{fmt(paired_ratio(e, t).median)}×" if e and t else "—"])
        lines += [*_table(["threads", "dtype", "expsvc", "torch eager", "expsvc ÷ torch"], rows), ""]
    s4 = sections.get("4_tracking")
    if s4:
        lines += ["## 4. Tracking", "", "Default job in-process (`expsvc.run(optimizer=[\"mini_bgd\", \"adamw\"], "
                  f"seeds=5)`), fresh migrated store per run; it logs {s4.get('history_rows')} loss points.", ""]
        rows = []
        for jobs in ("jobs=1", "jobs=2"):
            if jobs in s4:
                on, off = s4[jobs]["history on"], s4[jobs]["history off"]
                rows.append([jobs, on.text(), off.text(), f"{fmt(paired_ratio(on, off).median)}×"])
        lines += _table(["", "history on", "history off", "on ÷ off"], rows)
        if "append_history" in s4:
            lines += ["", f"`RunStore.append_history`, 10 runs × 1,000 points per call (one chunk row per run): "
                      f"{s4['append_history'].text().replace('rows/s', 'points/s')}"]
        writes = s4.get("history_writes") or {}
        if writes:
            rows = []
            for backend in ("sqlite", "postgresql"):
                w = writes.get(backend) or {}
                if "skipped" in w:
                    rows.append([backend, "—", f"not measured: {w['skipped']}"])
                elif w:
                    rows.append([backend, f"{w['median_rows_per_s']:,.0f}", f"{w['rows_per_s']:,.0f}"])
            lines += ["", "History writes per store (`expsvc.store.bench.bench_history_writes`, 10 runs × 1,000 "
                      "points per call, stored as one chunk row per run):", "",
                      *_table(["store", "points/s median", "points/s best"], rows)]
        lines += [""]
    s5 = sections.get("5_startup")
    if s5:
        lines += ["## 5. Command line start-up and the default job (fresh subprocesses)", ""]
        lines += [*_table(["", "median [min–max]", ""], _stats_rows(s5)), ""]
    s6 = sections.get("6_big_store")
    if s6:
        built = "cached" if s6.get("build_seconds") is None else f"built in {s6['build_seconds']:.0f} s"
        lines += [f"## 6. Queries on {s6['runs']:,} runs × {s6['steps']:,} steps ({built})", ""]
        lines += [*_table(["", "median [min–max]", ""], _stats_rows(s6["stats"])), ""]
    s7 = sections.get("7_digits_cnn")
    if s7:
        lines += ["## 7. Digits CNN (conv(8,3,p1)-relu-maxpool-conv(16,3,p1)-relu-maxpool-flatten-linear(10), "
                  "cross-entropy, batch 64, AdamW, 1,438 digits images), 1 thread", "",
                  f"{s7['epochs']} epochs × {s7['steps_per_epoch']} steps per repetition; each contender in its own "
                  "worker process with OPENBLAS/OMP/MKL_NUM_THREADS=1, torch.set_num_threads(1).", ""]
        rows = []
        for dtype, stats in s7["results"].items():
            e, t = stats.get("expsvc"), stats.get("torch eager")
            rows.append([dtype, e.text() if e else "—", t.text() if t else "—",
                         f"{fmt(paired_ratio(e, t).median)}×" if e and t else "—"])
        lines += [*_table(["dtype", "expsvc", "torch eager", "expsvc ÷ torch"], rows), ""]
        lines += ["5 seeds vectorised against one seed (float32, build + train):", "",
                  *_table(["", "seconds median [min–max]", "÷ 1 seed"], _stats_rows(s7["seeds"], "1 seed (R=1)")), ""]
    s8 = sections.get("8_grid")
    if s8:
        lines += [f"## 8. Grid: {len(s8['lrs'])} learning rates × {s8['seeds']} seeds of the seed net (AdamW, "
                  f"{s8['epochs']} epochs, no early stopping), wall time", "",
                  "expsvc through `expsvc.run(...)` with its store (fresh migrated SQLite file per call); torch in a "
                  "fresh one-thread process per repetition, timed inside (start-up not counted).", ""]
        lines += [*_table(["", "seconds median [min–max]", "÷ one run"], _stats_rows(s8["stats"], "one run (R=1)")),
                  ""]
    lines += reportpage.markdown(sections.get("9_report"), _table)
    s10 = sections.get("10_evaluation")
    if s10:
        lines += ["## 10. Per-epoch evaluation: the default job with `--eval-every 1 --val-split 0.2`, wall time", "",
                  "Subprocess: `expsvc run --opt mini_bgd --opt adamw --seeds 5 -q [flags]` in an empty directory "
                  "(start-up included); in-process: `expsvc.run(...)` into a fresh copy of a migrated store.", ""]
        for how in ("subprocess", "in-process"):
            lines += [f"**{how}**", "", *_table(["", "seconds median [min–max]", "÷ no evaluation"],
                                                _stats_rows(s10[how], "no evaluation")), ""]
    lines += tunestudy.markdown(sections.get("11_tune"), _table)
    notes = meta.get("notes")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def write(meta: dict[str, Any], sections: dict[str, Any], tgts: list[Target], out_dir: Path = RESULTS) -> list[Path]:
    """``<commit>[-dirty][-quick].json/.md`` and copies as ``latest.json/.md``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = meta["git"]["short"] + ("-dirty" if meta["git"].get("dirty") else "") + (
        "-quick" if meta["mode"] == "quick" else "")
    payload = json.dumps({"meta": meta, "targets": [t.as_dict() for t in tgts], "sections": jsonable(sections)},
                         indent=1, sort_keys=False) + "\n"
    text = markdown(meta, sections, tgts) + "\n"
    paths = []
    for name in (stem, "latest"):
        (out_dir / f"{name}.json").write_text(payload)
        (out_dir / f"{name}.md").write_text(text)
        paths += [out_dir / f"{name}.json", out_dir / f"{name}.md"]
    return paths


def compare_files(old: Path, new: Path) -> str:
    """Targets of two result files side by side (``python -m benchmarks --compare OLD NEW``)."""
    a, b = json.loads(old.read_text()), json.loads(new.read_text())
    by_key = {t["key"]: t for t in a["targets"]}
    lines = [f"{'target':6s} {a['meta']['git']['short']:>10s} {b['meta']['git']['short']:>10s}  change"]
    for t in b["targets"]:
        o = by_key.get(t["key"], {})
        x, y = o.get("measured"), t["measured"]
        change = f"{y / x:.2f}×" if x and y else ""
        lines.append(f"{t['key']:6s} {fmt(x) if x is not None else '—':>10s} {fmt(y) if y is not None else '—':>10s}"
                     f"  {change}  {t['status']}")
    return "\n".join(lines)
