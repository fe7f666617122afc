"""Section 11: ``expsvc tune experiments/seed_points_tuned.toml`` — the reference study's wall time (issue 11: it
finishes within the time the README states, :data:`LIMIT_S`).

Each repetition is one ``expsvc tune`` process (start-up included) on a fresh SQLite store in a temporary
folder, ``-q``, the executor's default workers: 66 tuning runs (2 optimizers × 11 learning rates × 3 seeds, one
vectorised group per optimizer) evaluated every epoch, the selection, 20 confirmation runs and the comparison.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from benchmarks.cli import run_cli
from benchmarks.timing import interleaved

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "experiments" / "seed_points_tuned.toml"
LIMIT_S = 15.0
"""The README's promise for the reference study (measured 2.44 s median on 2 shared cores; room for slower machines)."""
CASE = "expsvc tune (subprocess)"


def section_tune(reps: int, study: Path = STUDY) -> dict[str, Any]:
    """Wall seconds of ``reps`` runs of ``study`` (the reference study), each into its own new store."""
    with tempfile.TemporaryDirectory(prefix="expsvc-bench-") as name:
        cwd = Path(name)
        count = iter(range(10_000))

        def one() -> float:
            return run_cli(["tune", str(study), "-q", "--db", f"sqlite:///{cwd / f'tune{next(count)}.db'}"], cwd)

        stats = interleaved({CASE: one}, reps, unit="s", warmup=False)
    return {"study": study.name, "stats": stats}


def targets(section: dict[str, Any], make: Any) -> list[Any]:
    """U1: the reference study's wall time within the README's figure (made with ``report._target``)."""
    stats = section.get("stats", {}).get(CASE)
    return [make("U1", "expsvc tune experiments/seed_points_tuned.toml wall time [s]", stats, LIMIT_S, False)]


def markdown(section: dict[str, Any] | None, table: Any) -> list[str]:
    """The section's Markdown lines (``table`` is ``report._table``)."""
    if not section:
        return []
    lines = [f"## 11. `expsvc tune {section['study']}`", "",
             "Tuning, selection, confirmation and comparison (the reference study: 66 tuning runs of 2 optimizers × "
             "11 lr × 3 seeds evaluated every epoch, then 20 confirmation runs); one process per repetition, a fresh "
             "store each.", ""]
    lines += table(["", "seconds median [min–max]"], [[k, s.text()] for k, s in section["stats"].items()])
    return [*lines, ""]
