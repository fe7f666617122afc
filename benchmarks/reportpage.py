"""Section 9: ``expsvc report`` on 1,000 runs × 1,000 steps — the file's size, the command's wall time and
Chromium's load event (issue 13: under 5 MB, load within 2 s).

The store is section 6's (``cli.big_store``, cached).  The page is loaded from disk in a fresh headless
Chromium (Debian's ``chromium`` + ``chromedriver`` through Selenium, the test suite's flags); the figure is
``performance.timing.loadEventEnd − navigationStart``, i.e. parsing, the inline uPlot, building every chart,
table and the parallel-coordinates view.  Skipped (said in the result) when Chromium or Selenium is missing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from benchmarks.cli import big_store, run_cli
from benchmarks.timing import Stats, fmt, interleaved

SIZE_LIMIT_MB = 5.0
LOAD_LIMIT_S = 2.0


def _load_seconds(driver: Any, page: Path) -> float:
    driver.get("about:blank")
    driver.get(page.as_uri())
    ms = driver.execute_script("return performance.timing.loadEventEnd - performance.timing.navigationStart")
    errors = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    if errors:
        raise RuntimeError(f"the report logged errors in Chromium: {errors[:3]}")
    return float(ms) / 1000


def section_report(reps: int, runs: int = 1000, steps: int = 1000) -> dict[str, Any]:
    """Write the report of the big store (``reps`` times, interleaved with loading it in Chromium)."""
    path, built = big_store(runs, steps)
    url = f"sqlite:///{path}"
    with tempfile.TemporaryDirectory(prefix="expsvc-bench-") as name:
        cwd = Path(name)
        page = cwd / "report.html"
        cases = {"expsvc report (subprocess)": lambda: run_cli(["report", "--out", str(page), "--force", "--db", url],
                                                               cwd)}
        stats = interleaved(cases, reps, unit="s", warmup=False)
        size = page.stat().st_size / 1e6
        try:
            from tests._browser import available, chromium
        except ImportError as err:  # selenium not installed
            return {"runs": runs, "steps": steps, "size_mb": size, "stats": stats, "skipped": str(err)}
        if not available():
            return {"runs": runs, "steps": steps, "size_mb": size, "stats": stats,
                    "skipped": "chromium or chromedriver not installed"}
        with chromium() as driver:
            stats.update(interleaved({"Chromium load event": lambda: _load_seconds(driver, page)}, reps,
                                     unit="s", warmup=True))
    return {"runs": runs, "steps": steps, "size_mb": size, "stats": stats, "build_seconds": built}


def targets(section: dict[str, Any], make: Any) -> list[Any]:
    """R1 (size) and R2 (load event), made with ``report._target``."""
    stats = section.get("stats", {})
    size = Stats([section["size_mb"]], "MB") if "size_mb" in section else None
    return [make("R1", "report of 1,000 runs × 1,000 steps, file size [MB]", size, SIZE_LIMIT_MB, False),
            make("R2", "report of 1,000 runs × 1,000 steps, Chromium load event [s]",
                 stats.get("Chromium load event"), LOAD_LIMIT_S, False)]


def markdown(section: dict[str, Any] | None, table: Any) -> list[str]:
    """The section's Markdown lines (``table`` is ``report._table``)."""
    if not section:
        return []
    lines = [f"## 9. Report of {section['runs']:,} runs × {section['steps']:,} steps", "",
             f"`expsvc report` file: {fmt(section['size_mb'])} MB (one self-contained HTML file; curves "
             "downsampled min/max per bucket).", ""]
    lines += table(["", "median [min–max]"], [[k, s.text()] for k, s in section["stats"].items()])
    if section.get("skipped"):
        lines += ["", f"Chromium not measured: {section['skipped']}"]
    return [*lines, ""]
