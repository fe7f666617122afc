"""``expsvc report``: one self-contained file, compare's numbers, escaping, one-line errors (no browser here;
``test_report_browser.py`` loads the pages in Chromium)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import expsvc
from expsvc.cli import build_app
from expsvc.report import data, html

URL = re.compile(r"(?i)\b(?:https?|ftp|wss?)://|//[a-z0-9-]+\.[a-z]{2,}/|\bsrc\s*=|@import|\burl\(")
"""Anything that would make a page load something: absolute URLs, protocol-relative ones, src=, CSS imports."""
HOSTILE = "<script>alert(1)</script><!--</script>"


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("report")
    url = f"sqlite:///{folder / 'runs.db'}"
    expsvc.run(optimizer=["adamw", "mini_bgd"], seeds=3, epochs=15, db=url, name="exp", jobs=1)
    expsvc.run(optimizer=["adamw"], seeds=2, epochs=3, db=url, name=HOSTILE, jobs=1)
    return url


def _report(store_url: str, *args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(build_app(), ["report", "--db", store_url, *args])
    return res.exit_code, res.stdout, res.stderr


def _data(page: str) -> dict:
    raw = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    assert raw is not None
    return json.loads(raw.group(1))


def test_report_is_one_file_with_compare_numbers(store_url: str, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    code, _, stderr = _report(store_url, "-e", "exp", "--out", str(out))
    assert code == 0, stderr
    page = out.read_text()
    assert not URL.search(page), URL.search(page)
    assert page.count("<script") == 3 and "<link" not in page
    res = CliRunner().invoke(build_app(), ["compare", "-e", "exp", "--format", "json", "--db", store_url])
    assert _data(page)["compare"] == json.loads(res.stdout)
    assert len(page.encode()) < 500_000


def test_where_narrows_the_runs_and_the_comparison(store_url: str, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    code, _, stderr = _report(store_url, "-e", "exp", "--where", "seed < 2", "--out", str(out))
    assert code == 0, stderr
    d = _data(out.read_text())
    assert len(d["table"]["rows"]) == 4
    assert all(g["n_expected"] == 2 for g in d["compare"]["groups"])


def test_stored_names_cannot_end_the_script(store_url: str, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    code, _, stderr = _report(store_url, "-e", HOSTILE, "--out", str(out))
    assert code == 0, stderr
    page = out.read_text()
    assert HOSTILE not in page and "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the title, escaped
    assert _data(page)["experiment"] == HOSTILE  # the data, intact after JSON decoding


def test_script_json_escapes_every_breakout() -> None:
    text = html.script_json({"a": "</script><!--<script>", "b": "\u2028&", "c": float("nan")})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"a": "</script><!--<script>", "b": "\u2028&", "c": None}


def test_downsample_keeps_extremes_and_widest_band() -> None:
    import numpy as np

    xs = np.arange(10_000, dtype=float)
    ys = np.sin(xs / 50)
    ys[1234] = 40.0
    low, high = ys - 1, ys + 1
    low[777] = -30.0
    kx, (ky, kl, kh) = data.downsample(xs, [ys, low, high], 400, ["at", "min", "max"])
    assert kx.size <= 400 and 1234.0 in kx.tolist()
    assert ky.max() == 40.0 and kl.min() == -30.0 and kh.max() == 41.0
    assert np.all(np.diff(kx) > 0)


@pytest.mark.parametrize(("args", "expected"), [
    (["-e", "nope"], "nope"),
    (["-e", "exp", "--where", "params.lr <"], "params.lr"),
    (["-e", "exp", "--where", "seed > 99"], "no run"),
    (["-e", "exp", "--by", "nope"], "--by 'nope'"),
    (["-e", "exp", "--metric", "nope"], "nope"),
    (["-e", "exp", "--out", "."], "directory"),
])
def test_bad_input_is_one_line_and_writes_nothing(store_url: str, tmp_path: Path, args: list[str],
                                                  expected: str) -> None:
    code, _, stderr = _report(store_url, *args)
    assert code == 2 and len(stderr.splitlines()) == 1 and expected in stderr, stderr
    assert not (tmp_path / "report.html").exists()


@pytest.mark.slow
def test_ui_command_serves_read_only_and_warns_off_localhost(store_url: str) -> None:
    """``expsvc ui`` as a real process: any free port, the list and a report, 405 for writes, a warning when
    bound beyond localhost, one line and exit 2 for a bad host."""
    import os
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPSVC_")}
    bad = subprocess.run([sys.executable, "-m", "expsvc", "ui", "--host", "no such host", "--db", store_url],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1 and "--host" in bad.stderr
    proc = subprocess.Popen([sys.executable, "-m", "expsvc", "ui", "--host", "0.0.0.0", "--port", "0", "--db",
                             store_url], stderr=subprocess.PIPE, text=True, env=env)
    try:
        warning = proc.stderr.readline()  # type: ignore[union-attr]
        serving = proc.stderr.readline()  # type: ignore[union-attr]
        assert warning.startswith("warning: serving on 0.0.0.0, reachable from other machines")
        port = int(serving.split("read-only at http://0.0.0.0:")[1].split("/")[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
            assert '<a href="/experiment?name=exp">exp</a>' in r.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/experiment?name=exp", timeout=30) as r:
            assert r.status == 200 and "nonce-" in r.headers["Content-Security-Policy"]
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/", method="DELETE"), timeout=30)
        assert err.value.code == 405
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_ui_store_refuses_writes_even_below_the_store_api(store_url: str) -> None:
    """``open_read_only``: the store's own writes are refused, and so is raw SQL on its engine (``mode=ro``)."""
    import sqlalchemy as sa

    from expsvc.errors import ExpsvcError
    from expsvc.report import server
    from expsvc.store import read

    store = server.open_read_only(store_url)
    try:
        before = read.row_counts(store)
        with pytest.raises(ExpsvcError, match="read-only"):
            store.delete_runs(read.run_ids(store))
        with pytest.raises(sa.exc.OperationalError, match="readonly"), store.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM runs"))
        assert read.row_counts(store) == before
    finally:
        store.close()
