"""The store's promises about files it is given: a corrupt file is never written (whatever its size), a FIFO
never hangs a command, a damaged history chunk is named, names are valid on every backend, and a read-only
store can be read."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import expsvc
from expsvc.store import RunStore, StoreError
from expsvc.store.sqlite import QUICK_CHECK_MAX_BYTES
from tests.conftest import run_cli

RUN = ["run", "--opt", "adamw", "--seeds", "2", "--epochs", "2", "-q", "-j", "1"]


def _digest(*paths: Path) -> list[str | None]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None for p in paths]


def _large_store(path: Path, megabytes: float = 5.0) -> None:
    """A real store past the size up to which a plain open quick-checks it (runs with long histories)."""
    url = f"sqlite:///{path}"
    expsvc.run(optimizer=["adamw"], seeds=2, epochs=2, db=url, name="small", jobs=1)
    conn = sqlite3.connect(path)  # pad with history chunks: cheaper than training for minutes
    run_id = conn.execute("SELECT id FROM runs LIMIT 1").fetchone()[0]
    blob = os.urandom(64 * 1024)
    n = int(megabytes * 1024 * 1024 // len(blob)) + 1
    with conn:
        conn.executemany(
            "INSERT INTO metric_chunks (run_id, key, first_step, count, data) VALUES (?, ?, ?, ?, ?)",
            [(run_id, f"pad{i}", 0, len(blob) // 8, blob) for i in range(n)],
        )
    conn.close()
    assert path.stat().st_size > QUICK_CHECK_MAX_BYTES


def _destroy_root_page(path: Path, table: str) -> None:
    """Overwrite the root page of ``table`` with garbage (the adversarial run's damage)."""
    conn = sqlite3.connect(path, isolation_level=None)
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()  # the last connection: checkpointed, no -wal left beside the file
    assert not Path(f"{path}-wal").exists()
    with open(path, "r+b") as fh:
        fh.seek((root - 1) * page_size)
        fh.write(b"\xa5" * page_size)


def test_large_corrupt_store_is_never_written_by_run(tmp_path: Path) -> None:
    """A corrupt store over 4 MiB: `run` refuses it (exit 2, "is corrupt") and not one byte changes."""
    db = tmp_path / "big.db"
    _large_store(db)
    _destroy_root_page(db, "runs")
    before = _digest(db, Path(f"{db}-wal"), Path(f"{db}-shm"))
    out = run_cli(*RUN, "--name", "new", "--db", f"sqlite:///{db}", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "is corrupt" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert _digest(db, Path(f"{db}-wal"), Path(f"{db}-shm")) == before
    for args in (["rm", "--experiment", "small", "--yes"], ["run", "--resume", "small"]):
        out = run_cli(*args, "--db", f"sqlite:///{db}", cwd=tmp_path)
        assert out.returncode == 2 and "corrupt" in out.stderr, (args, out.stderr)
        assert _digest(db, Path(f"{db}-wal"), Path(f"{db}-shm")) == before, args


def test_experiment_and_its_runs_are_created_together(tmp_path: Path) -> None:
    """If the runs cannot be written, no experiment row is left behind (one transaction for both)."""
    from expsvc.store import NewRun

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with RunStore.open(url) as store:
        bad = NewRun(seed=0, group_key="g", config={"x": object()}, params={})
        with pytest.raises(StoreError, match="JSON"):
            store.create_experiment_runs("lonely", None, [[bad]])
        with sqlite3.connect(tmp_path / "runs.db") as conn:
            assert conn.execute("SELECT count(*) FROM experiments").fetchone()[0] == 0
        good = NewRun(seed=0, group_key="g", config={"x": 1}, params={"x": 1})
        exp_id, ids = store.create_experiment_runs("fine", None, [[good], [good, good]])
        assert [len(i) for i in ids] == [1, 2]
        assert store.status_counts(exp_id) == {"queued": 3}


# ----------------------------------------------------------------------------------------------- FIFOs


@pytest.mark.parametrize("args", [
    ["runs"], RUN, ["show", "abc"], ["export"], ["db", "current"], ["db", "upgrade"], ["compare"],
])
def test_fifo_as_store_never_hangs(tmp_path: Path, args: list[str]) -> None:
    """`--db sqlite:///fifo.db` on a FIFO: one line naming it, exit 2, at once (the open used to block)."""
    os.mkfifo(tmp_path / "fifo.db")
    out = run_cli(*args, "--db", "sqlite:///fifo.db", cwd=tmp_path, timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == "error: fifo.db is a FIFO, not a SQLite database; refusing to open it"


def test_fifo_paths_from_users_never_hang(tmp_path: Path) -> None:
    """Every other path a user gives: a db copy end, a plugin file, the default store."""
    os.mkfifo(tmp_path / "fifo.db")
    good = tmp_path / "good.db"
    expsvc.run(optimizer=["adamw"], seeds=1, epochs=2, db=f"sqlite:///{good}", name="e", jobs=1)
    for args in (["db", "copy", "--from", f"sqlite:///{good}", "--to", "sqlite:///fifo.db"],
                 ["db", "copy", "--from", "sqlite:///fifo.db", "--to", "sqlite:///new.db"]):
        out = run_cli(*args, cwd=tmp_path, timeout=60)
        assert out.returncode == 2 and "is a FIFO" in out.stderr, out.stderr
    os.mkfifo(tmp_path / "experiments.db")
    out = run_cli("runs", cwd=tmp_path, timeout=60)
    assert out.returncode == 2 and "is a FIFO" in out.stderr
    (tmp_path / "plugins").mkdir()
    os.mkfifo(tmp_path / "plugins" / "stuck.py")
    out = run_cli("plugins", cwd=tmp_path, timeout=60)
    assert out.returncode == 0 and "is a FIFO, not a regular file" in out.stdout + out.stderr


# ------------------------------------------------------------------------------------- damaged history


@pytest.mark.slow
def test_damaged_history_chunk_names_the_run(tmp_path: Path) -> None:
    """A chunk cut to 7 bytes: `show` and `export --history --format json` name the run in one line."""
    db = tmp_path / "runs.db"
    result = expsvc.run(optimizer=["adamw"], seeds=2, epochs=3, db=f"sqlite:///{db}", name="e", jobs=1)
    damaged = result.run_ids[1]
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE metric_chunks SET data = substr(data, 1, 7) WHERE run_id = ?", (damaged,))
    for args in (["show", damaged[:8]], ["show", damaged[:8], "--json"],
                 ["export", "--history", "--format", "json"], ["export", "--history", "--out", "h.csv"],
                 ["plot", "-e", "e", "--out", "loss.png"], ["compare", "-e", "e", "--plot", "c.png"]):
        out = run_cli(*args, "--db", f"sqlite:///{db}", cwd=tmp_path)
        assert out.returncode == 2, (args, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and damaged[:8] in lines[0] and "damaged" in lines[0], (args, out.stderr)
        assert "Traceback" not in out.stderr
    out = run_cli("show", result.run_ids[0][:8], "--db", f"sqlite:///{db}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr  # the other run still reads


# ---------------------------------------------------------------------------------------------- names


def _experiments(url: str) -> list[str]:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        if "experiments" not in sa.inspect(engine).get_table_names():
            return []  # nothing was ever written
        with engine.connect() as conn:
            return [row[0] for row in conn.exec_driver_sql("SELECT name FROM experiments")]
    finally:
        engine.dispose()


def test_nul_in_a_name_is_refused_on_every_backend(store_url: str, tmp_path: Path) -> None:
    """TOML ``name = "a\\u0000b"``: PostgreSQL cannot store NUL, so no backend takes it (one line, exit 2)."""
    toml = tmp_path / "exp.toml"
    toml.write_text('name = "a\\u0000b"\noptimizer = "adamw"\nepochs = 2\nseeds = 1\n', encoding="utf-8")
    out = run_cli("run", str(toml), "-q", "--db", store_url, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "experiment name" in out.stderr, out.stderr
    assert "NUL" in out.stderr and "Traceback" not in out.stderr
    assert _experiments(store_url) == []


@pytest.mark.parametrize("bad", ["a\x00b", "a\ud800b"])
def test_unstorable_names_are_refused_by_the_api(store_url: str, bad: str) -> None:
    with pytest.raises(StoreError, match=r"experiment name .* cannot be stored"):
        expsvc.run(optimizer=["adamw"], seeds=1, epochs=2, db=store_url, name=bad, jobs=1)
    with RunStore.open(store_url) as store, pytest.raises(StoreError, match="cannot be stored"):
        store.get_or_create_experiment(bad)
    assert _experiments(store_url) == []


@pytest.mark.postgres
def test_db_copy_of_a_nul_name_into_postgres_is_one_line(pg_url: str, tmp_path: Path) -> None:
    """A SQLite store written before the check (NUL in a name) copies into PostgreSQL with one clear line."""
    src = tmp_path / "old.db"
    expsvc.run(optimizer=["adamw"], seeds=1, epochs=2, db=f"sqlite:///{src}", name="plain", jobs=1)
    with sqlite3.connect(src) as conn:
        conn.execute("UPDATE experiments SET name = 'a' || char(0) || 'b'")
    out = run_cli("db", "copy", "--from", f"sqlite:///{src}", "--to", pg_url, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "NUL" in out.stderr, out.stderr
    assert _experiments(pg_url) == []


def test_text_values_a_backend_cannot_store_are_refused(tmp_path: Path) -> None:
    from expsvc.store import ComponentRecord, NewRun

    with RunStore.open(f"sqlite:///{tmp_path / 'runs.db'}") as store:
        exp = store.get_or_create_experiment("e")
        with pytest.raises(StoreError, match="cannot be stored"):
            store.create_runs(exp, [NewRun(0, "g", {"optimizer": "a\x00"}, {})])
        with pytest.raises(StoreError, match="cannot be stored"):
            store.create_runs(exp, [NewRun(0, "g", {}, {"optimizer": "a\x00"})])
        (run_id,) = store.create_runs(exp, [NewRun(0, "g", {"ok": 1}, {})])
        with pytest.raises(StoreError, match="cannot be stored"):
            store.set_components(run_id, [ComponentRecord("layer", "x\x00", "x", "p", None, None)])


# ------------------------------------------------------------------------------------ read-only stores


def _wal_store(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "runs.db"
    expsvc.run(optimizer=["adamw", "mini_bgd"], seeds=2, epochs=2, db=f"sqlite:///{db}", name="e", jobs=1)
    assert not Path(f"{db}-wal").exists()  # closed cleanly: WAL mode, no -wal file
    return db


READS = (["runs"], ["compare", "-e", "e"], ["export", "--format", "json"], ["db", "current"])


@pytest.mark.slow
def test_store_on_a_read_only_mount_is_readable(tmp_path: Path) -> None:
    """A WAL store on a read-only file system (a read-only bind mount in a private mount namespace)."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("needs unshare (mount namespaces) to make a read-only mount")
    db = _wal_store(tmp_path / "ro")
    before = _digest(db)
    for args in READS:
        argv = [sys.executable, "-m", "expsvc", *args, "--db", f"sqlite:///{db}"]
        script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
        out = subprocess.run(["unshare", "-rm", "sh", "-c", script, str(db.parent), *argv], capture_output=True,
                             text=True, timeout=120, cwd=tmp_path, env={k: v for k, v in os.environ.items()
                                                                         if not k.startswith("EXPSVC_")})
        assert out.returncode == 0, (args, out.stderr)
        assert "error" not in out.stderr, (args, out.stderr)
    out = subprocess.run(["unshare", "-rm", "sh", "-c", script, str(db.parent), sys.executable, "-m", "expsvc",
                          *RUN, "--db", f"sqlite:///{db}"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2 and "read-only" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert _digest(db) == before


@pytest.mark.slow
def test_store_in_a_read_only_folder_is_readable(tmp_path: Path) -> None:
    """A WAL store in a folder its reader may not write.

    Root ignores permission bits, so as root the readers run without the capabilities that let it
    (``setpriv`` drops CAP_DAC_OVERRIDE and friends from the bounding set): the folder's mode binds them.
    """
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("needs setpriv to run without root's permission override")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    db = _wal_store(tmp_path / "store")
    os.chmod(db, 0o444)
    os.chmod(db.parent, 0o555)
    before = _digest(db)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPSVC_")}
    try:
        for args in READS:
            out = subprocess.run([*prefix, sys.executable, "-m", "expsvc", *args, "--db", f"sqlite:///{db}"],
                                 capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
            assert out.returncode == 0, (args, out.stderr)
            assert "error" not in out.stderr, (args, out.stderr)
        out = subprocess.run([*prefix, sys.executable, "-m", "expsvc", *RUN, "--db", f"sqlite:///{db}"],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
        assert out.returncode == 2 and "is read-only" in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert _digest(db) == before and sorted(p.name for p in db.parent.iterdir()) == ["runs.db", "runs.db.lock"]
    finally:
        os.chmod(db.parent, 0o755)


# ------------------------------------------------------------------------------------------- full disk

FULL_DISK_SCRIPT = r'''
import json, os, sqlite3, subprocess, sys
mnt, out = sys.argv[1], sys.argv[2]
db = os.path.join(mnt, "runs.db")
with open(os.path.join(mnt, "old.csv"), "w") as fh:
    fh.write("old export\n")
cmd = [sys.executable, "-m", "expsvc"]
run = subprocess.run(cmd + ["run", "--opt", "adamw", "--opt", "sgd", "--seeds", "3", "--epochs", "3000", "--tol", "0",
                            "-j", "1", "-q", "--db", "sqlite:///" + db], capture_output=True, text=True)
runs = subprocess.run(cmd + ["runs", "--db", "sqlite:///" + db], capture_output=True, text=True)
conn = sqlite3.connect(db)
check = conn.execute("PRAGMA integrity_check").fetchall()
copy = sqlite3.connect(os.path.join(out, "runs.db"))
conn.backup(copy)  # with what the WAL holds (a full disk cannot checkpoint it)
copy.close()
conn.close()
export = subprocess.run(cmd + ["export", "--out", os.path.join(mnt, "old.csv"), "--db",
                               "sqlite:///" + os.path.join(out, "runs.db")], capture_output=True, text=True)
print(json.dumps({"run": [run.returncode, run.stderr], "export": [export.returncode, export.stderr],
                  "runs": [runs.returncode, runs.stderr],
                  "old": open(os.path.join(mnt, "old.csv")).read(), "integrity": check,
                  "leftovers": sorted(os.listdir(mnt))}))
'''


@pytest.mark.slow
def test_full_disk_keeps_the_store_and_outputs_whole(tmp_path: Path) -> None:
    """A run that fills its file system (a 400 KiB tmpfs in a private mount namespace) fails cleanly: the store
    passes integrity_check, every run ends failed (or failed (stale)), and a failed export keeps the old file."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("needs unshare (mount namespaces) to mount a small tmpfs")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    (tmp_path / "script.py").write_text(FULL_DISK_SCRIPT)
    shell = 'mount -t tmpfs -o size=400k tmpfs "$0" && exec "$@"'
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPSVC_")}
    done = subprocess.run(["unshare", "-rm", "sh", "-c", shell, str(mnt), sys.executable, str(tmp_path / "script.py"),
                           str(mnt), str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    import json

    found = json.loads(done.stdout)
    code, err = found["run"]
    assert code != 0 and "full" in err and "Traceback" not in err, err
    assert found["integrity"] == [["ok"]]
    assert found["runs"] == [0, ""]  # reading works on the full disk
    code, err = found["export"]
    assert code == 2 and "No space left" in err and len(err.strip().splitlines()) == 1, err
    assert found["old"] == "old export\n"  # atomic: the old file is whole
    assert not [name for name in found["leftovers"] if ".tmp" in name]
    statuses = run_cli("runs", "--json", "--db", f"sqlite:///{tmp_path / 'runs.db'}", cwd=tmp_path)
    assert statuses.returncode == 0, statuses.stderr
    assert {r["status"] for r in json.loads(statuses.stdout)} <= {"failed", "failed (stale)"}
