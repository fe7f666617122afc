"""Processes and statuses under signals: Ctrl-C never starts queued work, orphaned workers exit, a live run is
never called stale, and the runs of a killed process show as ``failed (stale)``.

Real ``expsvc run`` processes with a plugin layer that sleeps in ``forward`` (so a group lasts as long as the
test needs, whatever the machine's load); every wait polls for a condition with a generous timeout.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from expsvc.store.store import _pid_alive
from tests.conftest import run_cli

SLOW_PLUGIN = '''
import os
import time

from expsvc import Layer, hookimpl


class Slow(Layer):
    """Identity that takes SLOW_SECONDS per forward pass: a group lasts as long as a test needs."""

    name = "slow"

    def forward(self, x, train=True):
        time.sleep(float(os.environ.get("SLOW_SECONDS", "0.05")))
        return x

    def backward(self, dy):
        return dy


@hookimpl
def register_activations(register):
    register(Slow)
'''

TIMEOUT = 120.0  # generous: the machine may be shared and loaded


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPSVC_")}
    env.update(extra)
    return env


def _job(tmp_path: Path, *opts: str, epochs: int, jobs: int, name: str = "sig") -> list[str]:
    (tmp_path / "plugins").mkdir(exist_ok=True)
    (tmp_path / "plugins" / "slow.py").write_text(SLOW_PLUGIN)
    args = ["run", "--model", "linear(4), slow, linear(1)", "--loss", "mse", "--dataset", "linear_1d",
            "--batch-size", "100000", "--epochs", str(epochs), "--tol", "0", "--seeds", "2", "-j", str(jobs),
            "--name", name, "-q", "--db", f"sqlite:///{tmp_path / 'runs.db'}"]
    for opt in opts:
        args += ["--opt", opt]
    return args


@contextmanager
def _started(tmp_path: Path, args: list[str], **env: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "expsvc", *args], cwd=tmp_path, env=_env(**env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)
        for pid in _pids(tmp_path):  # never leave a worker behind, whatever the test found
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def _rows(tmp_path: Path) -> list[dict[str, Any]]:
    db = tmp_path / "runs.db"
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT id, status, pid, error, started_at, heartbeat_at, config "
                                              "FROM runs ORDER BY created_at, id")]
    except sqlite3.OperationalError:  # the schema is still being created
        return []
    finally:
        conn.close()


def _pids(tmp_path: Path) -> set[int]:
    return {r["pid"] for r in _rows(tmp_path) if r["pid"] is not None}


def _wait_for(condition: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def _running(tmp_path: Path, n: int) -> list[dict[str, Any]] | None:
    running = [r for r in _rows(tmp_path) if r["status"] == "running"]
    return running if len({r["pid"] for r in running}) >= n else None


def _statuses(tmp_path: Path, **env: str) -> dict[str, str]:
    """run id → status as ``expsvc runs`` shows it (which marks stale runs first)."""
    out = run_cli("runs", "--json", "--db", f"sqlite:///{tmp_path / 'runs.db'}", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    return {r["id"]: r["status"] for r in json.loads(out.stdout)}


@pytest.mark.slow
def test_ctrl_c_never_starts_queued_groups(tmp_path: Path) -> None:
    """4 groups on 2 workers, Ctrl-C while 2 run: "stopping" at once, exit 130, queued groups never start."""
    args = _job(tmp_path, "adamw", "sgd", "mini_bgd", "adam", epochs=1000, jobs=2)
    with _started(tmp_path, args, SLOW_SECONDS="0.05") as proc:
        running = _wait_for(lambda: _running(tmp_path, 2), "two groups running")
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does: the whole foreground process group
        sent = time.monotonic()
        _, err = proc.communicate(timeout=TIMEOUT)
        took = time.monotonic() - sent
    assert proc.returncode == 130, err
    assert "stopping" in err and "Traceback" not in err, err
    rows = _rows(tmp_path)
    assert len(rows) == 8
    started = {r["id"] for r in running}
    for r in rows:
        assert r["status"] == "interrupted", r
        if r["id"] not in started and r["pid"] == proc.pid:
            assert r["started_at"] is None, f"queued run {r['id'][:8]} started after Ctrl-C"
    assert sum(r["started_at"] is not None for r in rows) == 4  # only the two groups running at Ctrl-C
    assert took < 0.5 * 1000 * 0.05, f"took {took:.1f} s to stop"  # far less than finishing a group


@pytest.mark.slow
def test_workers_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    """SIGKILL of the parent only (the OOM killer): both workers stop their groups and exit."""
    args = _job(tmp_path, "adamw", "sgd", "mini_bgd", epochs=2000, jobs=2)
    with _started(tmp_path, args, SLOW_SECONDS="0.05") as proc:
        running = _wait_for(lambda: _running(tmp_path, 2), "two groups running")
        workers = {r["pid"] for r in running}
        assert proc.pid not in workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)
        _wait_for(lambda: not any(_pid_alive(pid) for pid in workers), "the orphaned workers to exit", 60)
    rows = _rows(tmp_path)
    for r in rows:
        if r["pid"] in workers:
            assert r["status"] == "interrupted" and "died" in r["error"], r
    statuses = _statuses(tmp_path)
    assert set(statuses.values()) <= {"interrupted", "failed (stale)"}, statuses
    assert list(statuses.values()).count("failed (stale)") == 2  # the third group, queued by the dead parent


@pytest.mark.slow
def test_queued_runs_of_a_killed_process_show_stale(tmp_path: Path) -> None:
    """SIGKILL of a -j 1 process during its first group: its running AND queued runs show failed (stale)."""
    args = _job(tmp_path, "adamw", "sgd", "mini_bgd", epochs=2000, jobs=1)
    with _started(tmp_path, args, SLOW_SECONDS="0.05") as proc:
        _wait_for(lambda: _running(tmp_path, 1), "the first group running")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)
    statuses = _statuses(tmp_path)
    assert list(statuses.values()) == ["failed (stale)"] * 6, statuses
    errors = [r["error"] for r in _rows(tmp_path)]
    assert sum("before the run started" in e for e in errors) == 4, errors


@pytest.mark.slow
def test_a_live_run_is_never_marked_stale(tmp_path: Path) -> None:
    """Slow steps and a 1-second stale limit: a concurrent `runs` never calls the live run stale, and the
    heartbeat is written by time (not every 64 steps), so readers on other hosts agree."""
    args = _job(tmp_path, "adamw", epochs=60, jobs=1)
    limit = {"EXPSVC_STALE_SECONDS": "1"}
    with _started(tmp_path, args, SLOW_SECONDS="0.25", **limit) as proc:
        _wait_for(lambda: _running(tmp_path, 1), "the run to start")
        seen: set[str] = set()
        beats: set[str] = set()
        while proc.poll() is None:
            seen.update(_statuses(tmp_path, **limit).values())
            for _ in range(10):  # sample the heartbeats between two `runs` (which may be slow on a busy machine)
                beats.update(r["heartbeat_at"] for r in _rows(tmp_path) if r["status"] == "running")
                time.sleep(0.1)
        _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    assert "failed (stale)" not in seen, seen
    assert len(beats) >= 4, f"heartbeats while running: {sorted(beats)}"  # 60 steps of 0.25 s: one beat per 0.25 s
    assert set(_statuses(tmp_path).values()) == {"finished"}


def test_stale_rules_trust_a_live_local_process_over_the_clock(tmp_path: Path) -> None:
    """The rules themselves: a live local pid is never stale however old its heartbeat; a dead one is, queued or
    running; another host's run goes by heartbeat age only, and its queued runs are left alone."""
    import socket
    from datetime import UTC, datetime, timedelta

    import sqlalchemy as sa

    from expsvc.store import NewRun, RunStore
    from expsvc.store.models import Run

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here, old = socket.gethostname(), datetime.now(UTC) - timedelta(days=1)
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    cases = {  # (status, host, pid, heartbeat) -> the status after an open
        ("running", here, os.getpid(), old): "running",
        ("running", here, dead.pid, datetime.now(UTC)): "failed",
        ("queued", here, dead.pid, None): "failed",
        ("queued", here, os.getpid(), None): "queued",
        ("running", "elsewhere", 1, old): "failed",
        ("queued", "elsewhere", 1, None): "queued",
    }
    with RunStore.open(url) as store:
        exp = store.get_or_create_experiment("rules")
        ids = store.create_runs(exp, [NewRun(i, "g", {}, {}) for i in range(len(cases))])
        with store._tx() as conn:
            for run_id, (status, host, pid, beat) in zip(ids, cases, strict=True):
                conn.execute(sa.update(Run).where(Run.id == run_id).values(status=status, host=host, pid=pid,
                                                                           heartbeat_at=beat, started_at=beat))
    with RunStore.open(url) as store:
        found = store.statuses(ids)
    assert [found[run_id] for run_id in ids] == list(cases.values())
