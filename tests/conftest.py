"""Shared fixtures: every test runs in its own empty working directory with a clean expsvc environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


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
