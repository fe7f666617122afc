"""Tests of the Alembic migrations and of how RunStore.open treats new, old, too-new and broken databases.

Tests taking ``url`` run on a SQLite file and on a fresh PostgreSQL database (``store_url`` in conftest)."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from expsvc.store import RunStore, StoreError, migrate
from expsvc.store.models import Base

REPO = Path(__file__).resolve().parents[1]
BACKUP_NAME = re.compile(r"runs\.db\.bak-\d{8}-\d{6}(-\d+)?$")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "runs.db"


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def url(store_url: str) -> str:
    """A store that does not exist yet on each backend: a missing SQLite file, an empty PostgreSQL database."""
    return store_url


def file_of(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def execute(url: str, *statements: str) -> list[tuple]:
    """Run raw SQL on ``url`` in one transaction (outside expsvc); the rows of the last statement."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            rows: list[tuple] = []
            for statement in statements:
                result = conn.exec_driver_sql(statement)
                rows = [tuple(r) for r in result] if result.returns_rows else []
            return rows
    finally:
        engine.dispose()


def state_of(url: str) -> object:
    """What must not change when a database is refused: the file (SQLite), or tables, revision and row counts."""
    path = file_of(url)
    if path is not None:
        return snapshot(path)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            tables = sorted(sa.inspect(conn).get_table_names())
            counts = [conn.exec_driver_sql(f'SELECT count(*) FROM "{t}"').scalar() for t in tables]
            revision = migrate._revision_of(conn) if "alembic_version" in tables else None
            return tables, counts, revision
    finally:
        engine.dispose()


def snapshot(path: Path) -> tuple[bytes, int, list[str]]:
    """Bytes, mtime and the directory listing: what must not change when a file is refused."""
    return path.read_bytes(), path.stat().st_mtime_ns, sorted(os.listdir(path.parent))


def schema_diffs(url: str) -> list:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def make_head_db(path: Path | str, with_data: bool = True) -> None:
    with RunStore.open(path if isinstance(path, str) else url_of(path)) as store:
        if with_data:
            exp = store.get_or_create_experiment("exp")
            from expsvc.store import NewRun

            (run_id,) = store.create_runs(exp, [NewRun(0, "g", {"a": 1}, {"a": 1})])
            store.append_history("loss", [(run_id, 0, np.linspace(1, 0, 500))])


# ---------------------------------------------------------------------------------------- the scripts


def test_scripts_are_found_and_linear() -> None:
    location = migrate.script_location()
    assert (location / "env.py").is_file() and (location / "script.py.mako").is_file()
    assert migrate.head() == "0005"
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config())
    assert [rev.revision for rev in script.walk_revisions()] == ["0005", "0004", "0003", "0002", "0001"]
    # the fast, import-free reading of the scripts agrees with Alembic's
    assert migrate.revisions() == {rev.revision: rev.down_revision for rev in script.walk_revisions()}
    assert script.get_heads() == [migrate.head()]
    assert migrate.known("0001") and not migrate.known("0099") and not migrate.known("zz!")


def test_new_database_is_created_at_head_by_the_migrations(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_create_all(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the schema must come from the migrations")

    monkeypatch.setattr(Base.metadata, "create_all", no_create_all)
    with RunStore.open(url) as store:
        assert store.current_revision() == "0005"
    assert schema_diffs(url) == []
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    tables = set(sa.inspect(engine).get_table_names())
    engine.dispose()
    assert tables == {*Base.metadata.tables, "alembic_version"}
    path = file_of(url)
    if path is not None:
        assert (path.parent / "runs.db.lock").exists()  # the migration lock lives next to the database
        assert not [name for name in os.listdir(path.parent) if ".new-" in name]  # no build leftovers


def test_new_database_in_a_new_directory(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "runs.db"
    with RunStore.open(url_of(path)) as store:
        assert store.current_revision() == "0005"


def test_missing_database_with_create_false(path: Path) -> None:
    with pytest.raises(StoreError, match=r"no database exists at .*runs\.db.*expsvc run") as info:
        RunStore.open(url_of(path), create=False)
    assert "\n" not in str(info.value)
    assert os.listdir(path.parent) == []


def test_empty_file_becomes_a_database(path: Path) -> None:
    path.touch()
    with pytest.raises(StoreError, match="no expsvc database exists"):
        RunStore.open(url_of(path), create=False)
    with RunStore.open(url_of(path)) as store:
        assert store.current_revision() == "0005"


# ---------------------------------------------------------------------------------------- broken files


@pytest.mark.parametrize(
    "content",
    [os.urandom(8192), b"name,value\n" * 100, b"SQLite format 2\x00" + bytes(4080)],
    ids=["random", "csv", "almost-sqlite"],
)
@pytest.mark.parametrize("create", [True, False])
def test_not_a_sqlite_file_is_refused_untouched(path: Path, content: bytes, create: bool) -> None:
    path.write_bytes(content)
    before = snapshot(path)
    with pytest.raises(StoreError, match=r"runs\.db is not a SQLite database") as info:
        RunStore.open(url_of(path), create=create)
    assert "\n" not in str(info.value)
    assert snapshot(path) == before


def _corrupt_copies(source: Path, tmp_path: Path) -> dict[str, Path]:
    data = source.read_bytes()
    rng = np.random.default_rng(0)
    page = int.from_bytes(data[16:18], "big")
    variants = {
        "header-then-garbage": data[:100] + rng.bytes(len(data) - 100),
        "first-page-then-garbage": data[:page] + rng.bytes(len(data) - page),
        "truncated": data[: len(data) - page // 2],
        "bad-page-size": data[:16] + b"\x03\x00" + data[18:],
    }
    out = {}
    for name, content in variants.items():
        target = tmp_path / name / "runs.db"
        target.parent.mkdir()
        target.write_bytes(content)
        out[name] = target
    return out


def test_corrupt_files_are_refused_untouched(tmp_path: Path) -> None:
    source = tmp_path / "good.db"
    make_head_db(source)
    for name, path in _corrupt_copies(source, tmp_path).items():
        before = snapshot(path)
        with pytest.raises(StoreError, match=r"runs\.db is corrupt") as info:
            RunStore.open(url_of(path))
        assert "\n" not in str(info.value), name
        assert snapshot(path) == before, name
        with pytest.raises(StoreError, match="corrupt"):
            migrate.current(url_of(path))


def test_foreign_database_is_refused_untouched(url: str) -> None:
    execute(url, "CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    before = state_of(url)
    with pytest.raises(StoreError, match=r"is not an expsvc database .*invoices"):
        RunStore.open(url)
    assert state_of(url) == before


def test_database_from_a_newer_expsvc_is_refused_untouched(url: str) -> None:
    make_head_db(url)
    execute(url, "UPDATE alembic_version SET version_num = '0099_future'")
    before = state_of(url)
    for attempt in (
        lambda: RunStore.open(url),
        lambda: RunStore.open(url, upgrade=False),
        lambda: migrate.upgrade(url),
    ):
        with pytest.raises(StoreError, match=r"'0099_future'.*does not know.*newest is '0005'"):
            attempt()
    assert migrate.current(url) == "0099_future"
    assert state_of(url) == before


# ------------------------------------------------------------------------------------------- upgrades


def _build_0001_database(url: str) -> dict[str, np.ndarray]:
    """A database at revision 0001 with history (NaNs, ties, an all-NaN metric); a SQLite one keeps an open WAL."""
    migrate.upgrade_to(url, "0001")
    rng = np.random.default_rng(3)
    series = {
        "r1": rng.normal(size=40),
        "r2": np.array([np.nan, 2.0, 1.0, 1.0, 5.0, 5.0, np.nan]),
        "r3": np.full(3, np.nan),
    }
    series["r1"][[0, 7, 8]] = [np.nan, np.nan, np.nan]
    experiment = "INSERT INTO experiments (id, name, created_at) VALUES (1, 'old', '2025-01-01 00:00:00')"
    run = ("INSERT INTO runs (id, experiment_id, group_key, seed, status, config, created_at)"
           " VALUES (?, 1, 'g', 0, 'finished', '{}', '2025-01-01 00:00:00')")
    points = {
        name.ljust(32, "0"): [(name.ljust(32, "0"), "loss", 10 + 2 * i, None if np.isnan(v) else float(v))
                              for i, v in enumerate(values)]
        for name, values in series.items()
    }
    path = file_of(url)
    if path is None:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.begin() as conn:
            conn.exec_driver_sql(experiment)
            for run_id, rows in points.items():
                conn.exec_driver_sql(run.replace("?", "%s"), (run_id,))
                conn.exec_driver_sql("INSERT INTO metric_history VALUES (%s, %s, %s, %s)", rows)
        engine.dispose()
        _build_0001_database.keep_open = None  # type: ignore[attr-defined]
    else:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")  # keep the rows in the -wal: the backup must include them
        conn.execute("BEGIN")
        conn.execute(experiment)
        for run_id, rows in points.items():
            conn.execute(run, (run_id,))
            conn.executemany("INSERT INTO metric_history VALUES (?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
        _build_0001_database.keep_open = conn  # type: ignore[attr-defined]
    return {name.ljust(32, "0"): values for name, values in series.items()}


def _close_0001() -> None:
    """Close the SQLite connection :func:`_build_0001_database` left open (if any)."""
    conn = getattr(_build_0001_database, "keep_open", None)
    if conn is not None:
        conn.close()
        _build_0001_database.keep_open = None  # type: ignore[attr-defined]


def _expected(steps: np.ndarray, values: np.ndarray) -> dict[str, object]:
    finite = ~np.isnan(values)
    out: dict[str, object] = {
        "first": None if np.isnan(values[0]) else float(values[0]),
        "last": None if np.isnan(values[-1]) else float(values[-1]),
        "last_step": int(steps[-1]),
        "count": int(values.size),
        "nan_count": int((~finite).sum()),
        "min": None,
        "min_step": None,
        "max": None,
        "max_step": None,
        "mean": None,
    }
    if finite.any():
        out |= {
            "min": float(np.nanmin(values)),
            "min_step": int(steps[np.nanargmin(values)]),
            "max": float(np.nanmax(values)),
            "max_step": int(steps[np.nanargmax(values)]),
            "mean": pytest.approx(float(np.nanmean(values)), rel=1e-12),
        }
    return out


def test_upgrade_from_0001_backs_up_and_backfills_summaries(url: str) -> None:
    series = _build_0001_database(url)
    try:
        assert migrate.current(url) == "0001"
        with RunStore.open(url) as store:
            assert store.current_revision() == "0005"
            summaries = store.summaries(list(series))
            for run_id, values in series.items():
                steps = 10 + 2 * np.arange(values.size)
                assert summaries[run_id]["loss"] == _expected(steps, values), run_id
                old_steps, old_values = store.history(run_id)  # the points became chunks, NULL became NaN
                np.testing.assert_array_equal(old_steps, steps)
                np.testing.assert_array_equal(old_values, values)
                store.append_history("loss", [(run_id, 1000, [-100.0])])  # the backfilled summary keeps working
                got_steps, got_values = store.history(run_id)
                assert store.summaries([run_id])[run_id]["loss"] == _expected(got_steps, got_values)
    finally:
        _close_0001()
    assert schema_diffs(url) == []
    path = file_of(url)
    if path is None:
        return  # PostgreSQL: no file to back up (the migration runs in one transaction)
    backups = [name for name in os.listdir(path.parent) if BACKUP_NAME.match(name)]
    assert len(backups) == 1
    backup = sqlite3.connect(path.parent / backups[0])
    assert backup.execute("SELECT version_num FROM alembic_version").fetchone() == ("0001",)
    assert backup.execute("SELECT count(*) FROM metric_history").fetchone() == (50,)
    assert backup.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    backup.close()


def test_old_database_with_upgrade_false_is_refused_untouched(url: str) -> None:
    _build_0001_database(url)
    _close_0001()
    before = state_of(url)
    with pytest.raises(StoreError, match=r"revision '0001' but this expsvc needs '0005'.*expsvc db upgrade"):
        RunStore.open(url, upgrade=False)
    assert state_of(url) == before


def test_failed_migration_is_rolled_back(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _build_0001_database(url)
    _close_0001()
    real = migrate._run_upgrade

    def upgrade_then_fail(connection: sa.Connection, target: str = "head") -> None:
        real(connection, target)
        assert "metric_summaries" in sa.inspect(connection).get_table_names()
        raise sa.exc.ProgrammingError("ALTER TABLE runs", {}, Exception("disk on fire"))  # a failing statement

    monkeypatch.setattr(migrate, "_run_upgrade", upgrade_then_fail)
    backup = ".*bak-" if file_of(url) is not None else ""
    failed = r"from 0001 to 0005 failed \(ProgrammingError: disk on fire\).*unchanged"
    with pytest.raises(StoreError, match=failed + backup):
        RunStore.open(url)
    assert migrate.current(url) == "0001"  # one transaction: the DDL was rolled back too
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        assert "metric_summaries" not in sa.inspect(conn).get_table_names()
        assert conn.exec_driver_sql("SELECT count(*) FROM metric_history").scalar() == 50
    engine.dispose()
    monkeypatch.setattr(migrate, "_run_upgrade", real)
    with RunStore.open(url) as store:
        assert store.current_revision() == "0005"


def test_migrate_helpers(path: Path) -> None:
    url = url_of(path)
    with pytest.raises(StoreError, match="no database exists"):
        migrate.current(url)
    assert migrate.upgrade(url) == (None, "0005")
    assert migrate.upgrade(url) == ("0005", "0005")
    assert migrate.current(url) == "0005"
    other = path.with_name("old.db")
    migrate.upgrade_to(url_of(other), "0001")
    assert migrate.current(url_of(other)) == "0001"
    assert migrate.upgrade(url_of(other)) == ("0001", "0005")


def test_history_chunks_down_to_rows_and_back(url: str) -> None:
    """0003 → 0002 expands chunks into a row per point (NaN as NULL); 0002 → 0003 regroups consecutive steps."""
    make_head_db(url)
    odd = np.array([0.5, np.nan, np.inf, -np.inf, -0.0])
    with RunStore.open(url) as store:
        (run_id,) = [r for (r,) in execute(url, "SELECT id FROM runs")]
        store.append_history("odd", [(run_id, 7, odd[:2])])
        store.append_history("odd", [(run_id, 9, odd[2:])])  # continues the first chunk
        store.append_history("odd", [(run_id, 20, [1.0])])  # after a gap
        before = {key: store.history(run_id, key) for key in ("loss", "odd")}
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        command.downgrade(migrate.alembic_config(conn), "0002")
        rows = conn.exec_driver_sql("SELECT key, step, value FROM metric_history ORDER BY key, step").all()
    engine.dispose()
    assert len(rows) == 500 + 6
    odd_rows = [(step, value) for key, step, value in rows if key == "odd"]
    assert odd_rows == [(7, 0.5), (8, None), (9, np.inf), (10, -np.inf), (11, -0.0), (20, 1.0)]
    assert [value for key, _, value in rows if key == "loss"] == np.linspace(1, 0, 500).tolist()
    with RunStore.open(url) as store:
        assert store.current_revision() == "0005"
        for key, (steps, values) in before.items():
            got_steps, got_values = store.history(run_id, key)
            np.testing.assert_array_equal(got_steps, steps)
            np.testing.assert_array_equal(got_values, values)
    assert execute(url, "SELECT key, first_step, count FROM metric_chunks ORDER BY key, first_step") == [
        ("loss", 0, 500), ("odd", 7, 5), ("odd", 20, 1)]
    assert schema_diffs(url) == []


def test_experiment_tags_and_notes_down_and_up(url: str) -> None:
    """0004 adds experiment_tags and experiment_notes; 0004 → 0003 drops them (and nothing else); up again."""
    from expsvc.store import experiments as exps

    make_head_db(url)
    with RunStore.open(url) as store:
        exps.set_tags(store, "exp", add=["baseline"])
        exps.add_note(store, "exp", "first try")
    assert execute(url, "SELECT tag FROM experiment_tags") == [("baseline",)]
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        command.downgrade(migrate.alembic_config(conn), "0003")
        tables = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert "experiment_tags" not in tables and "experiment_notes" not in tables
    assert {"experiments", "runs", "metric_chunks"} <= tables
    assert execute(url, "SELECT count(*) FROM runs") == [(1,)]
    with RunStore.open(url) as store:
        assert store.current_revision() == "0005"
        assert exps.describe(store, "exp").tags == []
    assert schema_diffs(url) == []


def test_studies_down_and_up(url: str) -> None:
    """0005 adds studies (linked to experiments, SET NULL when one is deleted); 0005 → 0004 drops the table and
    nothing else; up again."""
    from expsvc.store import studies

    make_head_db(url)
    with RunStore.open(url) as store:
        studies.create_study(store, "st", {"optimizers": ["adamw"]}, "the rule")
        studies.link(store, "st", "tuning", "exp")
        studies.set_selection(store, "st", {"choices": {"adamw": {"lr": 0.01}}})
        record = studies.get_study(store, "st")
    assert (record.tuning_experiment, record.status, record.selection) == (
        "exp", "confirming", {"choices": {"adamw": {"lr": 0.01}}})
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        command.downgrade(migrate.alembic_config(conn), "0004")
        tables = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert "studies" not in tables and {"experiments", "runs", "experiment_tags"} <= tables
    assert execute(url, "SELECT count(*) FROM runs") == [(1,)]
    with RunStore.open(url) as store:
        assert store.current_revision() == "0005"
        assert studies.list_studies(store) == []
    assert schema_diffs(url) == []


def test_downgrade_to_base_and_up_again(url: str) -> None:
    make_head_db(url)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        command.downgrade(migrate.alembic_config(conn), "0001")
        assert "metric_summaries" not in sa.inspect(conn).get_table_names()
        command.downgrade(migrate.alembic_config(conn), "base")
        assert sa.inspect(conn).get_table_names() == ["alembic_version"]
    engine.dispose()
    with RunStore.open(url) as store:
        assert store.current_revision() == "0005"
    assert schema_diffs(url) == []


def test_alembic_command_line(path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ini = REPO / "migrations" / "alembic.ini"
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ini), "-x", f"url={url_of(path)}", "upgrade", "0001"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert migrate.current(url_of(path)) == "0001"


OPENER = textwrap.dedent(
    """
    import os, sys, time
    from expsvc.store import RunStore
    url, go = sys.argv[1], sys.argv[2]
    open(f"{go}.ready-{os.getpid()}", "w").close()
    while not os.path.exists(go):
        time.sleep(0.001)
    with RunStore.open(url) as store:
        print(store.current_revision())
    """
)


@pytest.mark.slow
def test_concurrent_opens_upgrade_once(url: str, tmp_path: Path) -> None:
    _build_0001_database(url)
    _close_0001()
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, url, str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("go.ready-*"))) < 4:
        assert time.monotonic() < deadline, "openers did not start"
        time.sleep(0.01)
    go.touch()  # all four open at once
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outputs]
    assert [out.strip() for out, _ in outputs] == ["0005"] * 4
    path = file_of(url)
    if path is not None:
        assert len([name for name in os.listdir(path.parent) if BACKUP_NAME.match(name)]) == 1
    assert execute(url, "SELECT count(*), sum(count) FROM metric_summaries") == [(3, 50)]  # backfilled once
