"""Smoke tests of the benchmark suite (``python -m benchmarks``): every section runs at tiny sizes and the
report renders, so the suite cannot rot unnoticed.  No timing is asserted anywhere; the contenders of the seed
net must compute the same numbers, and the block-wise optimizer update must equal the whole-array one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import report
from benchmarks.seednet import (
    initial_params,
    run_numpy_flat,
    run_numpy_textbook,
    section_five_seeds,
    section_seed_net,
    seed_data,
)
from benchmarks.timing import Stats, interleaved
from tests._numerics import OPTIMIZER_CONFIGS


def test_interleaved_runs_every_case_in_rotating_rounds() -> None:
    """Each case runs reps times after one warm-up; the start of each round rotates."""
    calls: list[str] = []
    cases = {name: (lambda name=name: calls.append(name) or 1.0) for name in "abc"}
    stats = interleaved(cases, 3, unit="x")
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")
    assert all(s.values == [1.0, 1.0, 1.0] and s.median == 1.0 for s in stats.values())


def test_seed_net_contenders_compute_the_same_training() -> None:
    """expsvc, the flat numpy floor and the textbook loop end at the same parameters (torch is not needed)."""
    result = section_seed_net(reps=1, epochs=2, with_torch=False)
    for opt in ("adamw", "mini_bgd"):
        data = result["optimizers"][opt]
        assert set(data["stats"]) == {"expsvc", "numpy floor (flat)", "numpy textbook"}
        assert all(s.median > 0 for s in data["stats"].values())
        assert max(data["agreement"].values()) <= 1e-12, data["agreement"]
    data, params0 = seed_data(), initial_params()
    _, steps, flat = run_numpy_flat("adamw", data, 3, params0)
    _, steps2, textbook = run_numpy_textbook("adamw", data, 3, params0)
    assert steps == steps2 == 18 and np.max(np.abs(flat - textbook)) <= 1e-12


def test_five_seeds_section() -> None:
    """Vectorised, one-by-one and single-seed timings are all produced."""
    stats = section_five_seeds(reps=1, epochs=2)
    assert len(stats) == 3 and all(s.unit == "s" and s.median > 0 for s in stats.values())


def test_wide_net_worker_process() -> None:
    """Section 3 at one thread, tiny data, without torch: one worker process answers."""
    from benchmarks.widenet import section_wide_net

    out = section_wide_net(reps=1, n=256, epochs=1, with_torch=False, threads=(1,), settle=0.0)
    results = out["threads"]["1"]["results"]
    assert set(results) == {"float32", "float64"} and results["float32"]["expsvc"].median > 0


def test_append_history_throughput_section() -> None:
    """Section 4's store throughput runs on a throwaway store."""
    from benchmarks.tracking import section_append

    stats = section_append(reps=1, calls=2, runs=3, points=20)
    assert stats.unit == "rows/s" and stats.median > 0


@pytest.mark.slow
def test_tracking_and_cli_sections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sections 4 (history on/off), 5 (start-up, default job, RSS) and 6 (queries on a small cached store)."""
    from benchmarks import cli
    from benchmarks.tracking import section_logging

    tracking = section_logging(reps=1, jobs_list=(1,))
    assert tracking["history_rows"] > 0 and set(tracking["jobs=1"]) == {"history on", "history off"}
    startup = cli.section_startup(reps=1, warmup=False)
    assert startup["default job peak RSS"].median > 10  # MB
    monkeypatch.setattr(cli, "CACHE", tmp_path / "cache")
    big = cli.section_big_store(reps=1, runs=4, steps=5)
    assert big["build_seconds"] is not None and cli.big_store(4, 5)[1] is None  # built once, then cached
    sections = {"4_tracking": tracking, "5_startup": startup, "6_big_store": big}
    assert {t.key: t.status for t in report.targets(sections)}["T5c"] in ("PASS", "MISS")


def test_report_renders_and_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Targets are evaluated from whatever ran (n/a otherwise); JSON and Markdown files are written."""
    s = lambda v, unit="steps/s": Stats([v, v], unit)  # noqa: E731
    sections = {
        "1_seed_net": {"epochs": 1, "steps_per_epoch": 6, "optimizers": {"adamw": {
            "stats": {"expsvc": s(12000.0), "numpy floor (flat)": s(13000.0), "torch eager": s(1500.0)},
            "agreement": {"numpy floor (flat)": 0.0}}}},
        "2_five_seeds": {"5 seeds vectorised (R=5)": s(0.14, "s"), "1 seed (R=1)": s(0.1, "s")},
    }
    tgts = {t.key: t for t in report.targets(sections)}
    assert tgts["T1a"].status == "PASS" and tgts["T1a"].ratio == pytest.approx(8.0)
    assert tgts["T1b"].status == "PASS" and tgts["T2"].status == "PASS" and tgts["T6a"].status == "n/a"
    from benchmarks import machine as machine_mod

    monkeypatch.setattr(machine_mod, "parallel_capacity", lambda: 2.0)  # spares ~1 s of spinning processes
    machine = machine_mod.describe()
    meta = {"mode": "quick", "started": "2026-01-01 00:00", "seconds": 1.0, "git": machine["git"],
            "machine": machine, "notes": ["test"]}
    paths = report.write(meta, sections, list(tgts.values()), tmp_path)
    latest = json.loads((tmp_path / "latest.json").read_text())
    assert latest["targets"][0]["key"] == "T1a" and "machine" in latest["meta"]
    assert "| PASS | T1a" in (tmp_path / "latest.md").read_text() and len(paths) == 4
    assert "T1a" in report.compare_files(tmp_path / "latest.json", tmp_path / "latest.json")


@pytest.mark.parametrize("config", OPTIMIZER_CONFIGS, ids=[c[0] for c in OPTIMIZER_CONFIGS])
def test_block_wise_optimizer_update_equals_whole_buffer(config, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large buffers are updated in column blocks (the engine's speed-up for big models): bit for bit the same
    parameters as one whole-buffer update, for every optimizer code path."""
    import expsvc.builtins.optimizers as optimizers
    from expsvc.core.params import ParamBuffer, Parameter

    _, cls, kwargs = config

    def train(chunk_bytes: int) -> tuple[np.ndarray, int]:
        monkeypatch.setattr(optimizers, "CHUNK_BYTES", chunk_bytes)
        p = Parameter("w", (1000,), lambda rng, shape: rng.standard_normal(shape))
        buf = ParamBuffer([p], replicas=3)
        buf.initialize([np.random.default_rng(i) for i in range(3)])
        opt = cls(**kwargs)
        opt.bind(buf)
        rng = np.random.default_rng(9)
        for _ in range(5):
            buf.grad[...] = rng.standard_normal(buf.grad.shape)
            opt.step()
        return buf.value.copy(), len(opt._blocks)

    whole, n_whole = train(1 << 30)
    blocked, n_blocked = train(256)  # 10 columns × 3 replicas × 8 bytes per block
    assert (n_whole, n_blocked) == (1, 100)
    np.testing.assert_array_equal(blocked, whole)


def test_digits_cnn_section_runs_in_workers() -> None:
    """Section 7 at one repetition of one epoch, without torch: the expsvc worker answers both jobs."""
    from benchmarks.digitscnn import section_digits_cnn

    out = section_digits_cnn(reps=1, epochs=1, with_torch=False)
    assert set(out["results"]) == {"float32", "float64"} and out["results"]["float32"]["expsvc"].median > 0
    assert set(out["seeds"]) == {"5 seeds vectorised (R=5)", "1 seed (R=1)"}
    tgts = {t.key: t for t in report.targets({"7_digits_cnn": out})}
    assert tgts["C1"].status == "n/a" and tgts["C2"].ratio is not None


@pytest.mark.slow
@pytest.mark.browser
def test_report_page_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Section 9 (report size and Chromium's load event) on a tiny cached store; its targets and Markdown."""
    from benchmarks import cli, reportpage

    monkeypatch.setattr(cli, "CACHE", tmp_path / "cache")
    section = reportpage.section_report(reps=1, runs=4, steps=5)
    assert 0 < section["size_mb"] < 1 and section["stats"]["expsvc report (subprocess)"].median > 0
    tgts = {t.key: t.status for t in report.targets({"9_report": section})}
    assert tgts["R1"] == "PASS" and tgts["R2"] in ("PASS", "MISS", "n/a")
    assert "## 9. Report of 4 runs × 5 steps" in "\n".join(reportpage.markdown(section, report._table))


def test_the_command_line_parses_and_refuses_unknown_sections(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m benchmarks``'s own parser (a merge once declared --sections twice: every run crashed)."""
    from benchmarks.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["--sections", "1,0"])
    assert exit_.value.code == 2 and "--sections takes numbers 1 to" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "--sections" in capsys.readouterr().out


def test_tune_section(tmp_path: Path) -> None:
    """Section 11 (``expsvc tune`` wall time) on a tiny study; its target and Markdown."""
    from benchmarks import tunestudy

    study = tmp_path / "tiny.toml"
    study.write_text('optimizer = ["adamw"]\nlr = [0.01, 0.1]\nepochs = 2\ntune_seeds = 1\nseeds = 1\n')
    section = tunestudy.section_tune(reps=1, study=study)
    assert section["stats"][tunestudy.CASE].median > 0
    assert {t.key: t.status for t in report.targets({"11_tune": section})}["U1"] in ("PASS", "MISS")  # no timing
    assert "## 11. `expsvc tune tiny.toml`" in "\n".join(tunestudy.markdown(section, report._table))


@pytest.mark.slow
def test_evaluation_section() -> None:
    """Section 10 runs its three contenders both ways and yields the E1/E2 targets."""
    from benchmarks.evaluation import FLAGS, section_evaluation

    out = section_evaluation(reps=1, warmup=False)
    assert set(out["subprocess"]) == set(out["in-process"]) == set(FLAGS)
    tgts = {t.key: t for t in report.targets({"10_evaluation": out})}
    assert tgts["E1"].status in ("PASS", "MISS") and tgts["E2"].ratio is not None
