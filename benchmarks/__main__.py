"""``python -m benchmarks [--quick] [--sections 1,2,...] [--no-torch] [--out DIR]`` — run the suite, print the
tables and targets, write ``results/<commit>.{json,md}`` and ``results/latest.{json,md}``.

``python -m benchmarks --compare OLD.json NEW.json`` prints two runs' targets side by side.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.machine import describe
from benchmarks.seednet import TORCH_INSTALL, torch_available

SETTINGS: dict[str, dict[str, Any]] = {
    # reps: repetitions per contender (median, min–max), fast_reps for the in-process seed-net sections; sizes
    # keep --quick under 2 minutes on 2 cores.
    # warm: an unrecorded first run of every contender (subprocess sections skip it in quick mode).
    "quick": {"reps": 5, "fast_reps": 9, "seed_epochs": 100, "five_epochs": 200, "wide_n": 1280, "wide_epochs": 1,
              "settle": 0.05, "warm": False, "cnn_epochs": 2, "grid_reps": 3},
    "full": {"reps": 9, "fast_reps": 15, "seed_epochs": 300, "five_epochs": 200, "wide_n": 1280, "wide_epochs": 4,
             "settle": 0.25, "warm": True, "cnn_epochs": 5, "grid_reps": 5},
}


def run_sections(which: set[str], mode: str, with_torch: bool, log: Any = print) -> tuple[dict[str, Any], dict]:
    """Run the chosen sections (``"1"``…``"6"``) with the mode's sizes; their results and seconds by section."""
    from benchmarks import cli, digitscnn, evaluation, grid, reportpage, seednet, tracking, tunestudy, widenet

    cfg = SETTINGS[mode]
    reps = cfg["reps"]
    steps: list[tuple[str, str, Any]] = [
        ("1", "1_seed_net", lambda: seednet.section_seed_net(cfg["fast_reps"], cfg["seed_epochs"], with_torch)),
        ("2", "2_five_seeds", lambda: seednet.section_five_seeds(cfg["fast_reps"], cfg["five_epochs"])),
        ("3", "3_wide_net", lambda: widenet.section_wide_net(reps, cfg["wide_n"], cfg["wide_epochs"], with_torch,
                                                             settle=cfg["settle"])),
        ("4", "4_tracking", lambda: {**tracking.section_logging(reps),
                                     "append_history": tracking.section_append(reps),
                                     "history_writes": tracking.section_history_writes()}),
        ("5", "5_startup", lambda: cli.section_startup(reps, warmup=cfg["warm"])),
        ("6", "6_big_store", lambda: cli.section_big_store(reps, warmup=cfg["warm"])),
        ("7", "7_digits_cnn", lambda: digitscnn.section_digits_cnn(reps, cfg["cnn_epochs"], with_torch)),
        ("8", "8_grid", lambda: grid.section_grid(cfg["grid_reps"], with_torch)),
        ("9", "9_report", lambda: reportpage.section_report(reps)),
        ("10", "10_evaluation", lambda: evaluation.section_evaluation(reps, warmup=cfg["warm"])),
        ("11", "11_tune", lambda: tunestudy.section_tune(reps)),
    ]
    sections: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for number, key, run in steps:
        if number in which:
            log(f"{number}/{len(steps)} {TITLES[key]} ...")
            start = time.perf_counter()
            sections[key] = run()
            seconds[key] = round(time.perf_counter() - start, 1)
    return sections, seconds


TITLES = {
    "1_seed_net": "seed net: expsvc vs numpy floor vs torch eager",
    "2_five_seeds": "five seeds: vectorised vs one by one vs one seed",
    "3_wide_net": "wide net: expsvc vs torch at 1 and 2 threads (worker processes)",
    "4_tracking": "tracking: default job with history on/off, append_history points/s",
    "5_startup": "CLI start-up, default job wall time and peak RSS",
    "6_big_store": "compare and runs on 1,000 runs x 1,000 steps (built once, cached)",
    "7_digits_cnn": "digits CNN: expsvc vs torch eager at 1 thread, 5 seeds vs one (worker processes)",
    "8_grid": "grid: 9 lr x 5 seeds of the seed net, expsvc vectorised vs per config vs torch",
    "9_report": "expsvc report on 1,000 runs x 1,000 steps: file size, Chromium load event",
    "10_evaluation": "default job with --eval-every 1 --val-split 0.2 vs without evaluation",
    "11_tune": "expsvc tune on the reference study experiments/seed_points_tuned.toml: wall time",
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and steps (under 2 minutes)")
    parser.add_argument("--sections", default="1,2,3,4,5,6,7,8,9,10,11", help="comma-separated subset of 1-11")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch columns even if torch imports")
    parser.add_argument("--out", type=Path, default=report.RESULTS, help="results folder")
    parser.add_argument("--no-write", action="store_true", help="print only, write no result files")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("OLD", "NEW"), help="compare two result files")
    args = parser.parse_args(argv)
    if args.compare:
        print(report.compare_files(*args.compare))
        return 0
    which = {s.strip() for s in args.sections.split(",") if s.strip()}
    if not which <= {str(n) for n in range(1, 12)}:
        parser.error("--sections takes numbers 1 to 11")
    mode = "quick" if args.quick else "full"
    with_torch = not args.no_torch and torch_available()
    notes = []
    if not with_torch:
        note = f"torch not measured ({'--no-torch' if args.no_torch else 'not importable; ' + TORCH_INSTALL})"
        print(note, file=sys.stderr)
        notes.append(note)
    started = datetime.now(UTC)
    start = time.perf_counter()
    print("describing the machine ...", file=sys.stderr)
    machine = describe()
    sections, seconds = run_sections(which, mode, with_torch, log=lambda msg: print(msg, file=sys.stderr))
    meta = {"mode": mode, "started": started.strftime("%Y-%m-%d %H:%M"), "seconds": time.perf_counter() - start,
            "section_seconds": seconds, "settings": SETTINGS[mode], "sections": sorted(which),
            "torch": with_torch, "git": machine["git"], "machine": machine, "notes": notes}
    tgts = report.targets(sections)
    print(report.markdown(meta, sections, tgts))
    print()
    for t in tgts:
        if t.status != "n/a" or t.key[:2] in {f"T{s}" for s in which}:
            print(t.line())
    if not args.no_write:
        paths = report.write(meta, sections, tgts, args.out)
        print("\nwrote " + ", ".join(str(p.relative_to(Path.cwd())) if p.is_relative_to(Path.cwd()) else p.name
                                     for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
