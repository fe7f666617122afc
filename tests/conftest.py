"""Shared fixtures: every test runs in its own empty working directory with a clean expsvc environment."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent

CUBE_PLUGIN = '''
import numpy as np
from expsvc import Layer, hookimpl

class Cube(Layer):
    name = "cube"
    def forward(self, x, train=True):
        self.x = x
        return x ** 3
    def backward(self, dy):
        return dy * 3 * self.x ** 2

@hookimpl
def register_activations(register):
    register(Cube, aliases=("cubic",))
'''
"""A small third-party plugin module (an activation ``cube`` alias ``cubic``) for plugin tests."""


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Empty cwd (so the default ``experiments.db`` and ``./plugins`` are the test's own), no EXPSVC_* env."""
    for key in ("EXPSVC_DB", "EXPSVC_PLUGINS_DIR", "EXPSVC_LOAD_PLUGINS", "EXPSVC_STALE_SECONDS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    from expsvc import plugins

    plugins.reset()
    yield
    plugins.reset()


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run ``python -m expsvc ARGS`` in a real subprocess and capture its output."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("EXPSVC_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "expsvc", *args], cwd=cwd, env=full_env, capture_output=True, text=True,
        timeout=timeout, **kwargs,  # type: ignore[arg-type]
    )


def expand_chunks(rows: object) -> list[tuple]:
    """Rows ``(*head, first_step, data)`` of ``metric_chunks`` as one row per point ``(*head, step, value)``.

    ``value`` is a float (NaN stays NaN); the rows keep their order, points ascend within a chunk.
    """
    out: list[tuple] = []
    for *head, first, data in rows:  # type: ignore[attr-defined]
        values = np.frombuffer(bytes(data), dtype="<f8")
        out.extend((*head, first + i, float(v)) for i, v in enumerate(values))
    return out


# ------------------------------------------------------------------------------------ PostgreSQL

PG_ADMIN_URL = os.environ.get("EXPSVC_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
"""A superuser connection to the test server's ``postgres`` database (override with ``EXPSVC_TEST_PG_URL``)."""


def _pg_unavailable(reason: str) -> NoReturn:
    """Skip a PostgreSQL test when the server is missing, except in CI (``CI=true``), where that fails it."""
    message = f"PostgreSQL is not reachable at {PG_ADMIN_URL.split('@')[-1]}: {reason}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@contextmanager
def pg_database(prefix: str = "expsvc_test") -> Iterator[str]:
    """Create a uniquely named empty PostgreSQL database; yield its URL; drop it (and its connections) after."""
    try:
        import sqlalchemy as sa
        from sqlalchemy.pool import NullPool

        admin = sa.create_engine(PG_ADMIN_URL, poolclass=NullPool, isolation_level="AUTOCOMMIT",
                                 connect_args={"connect_timeout": 5})
        with admin.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as err:  # ImportError (no psycopg) or an unreachable server
        _pg_unavailable(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a fresh PostgreSQL database of this test's own (dropped afterwards)."""
    with pg_database() as url:
        yield url


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URL on each backend: a new SQLite file, or a fresh PostgreSQL database of this test's own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'runs.db'}"
        return
    with pg_database() as url:
        yield url
