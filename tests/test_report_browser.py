"""The report and the UI in a real headless Chromium (issue 13, "done when" 1-3 and 5).

One browser for the module.  Assertions are on the DOM and on the uPlot instances the page exposes
(``window.expsvcReport``), not on pixels; the report's screenshot is saved for the README when
``EXPSVC_UPDATE_SCREENSHOT=1``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from typer.testing import CliRunner

import expsvc
from expsvc.cli import build_app
from tests import _browser

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not _browser.available() and os.environ.get("CI") != "true",
                                 reason="needs chromium and chromium-driver (apt); .ci/run installs them")]

SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "images" / "report.png"
XSS = "<script>alert(1)</script>"
IMG = "<img src=x onerror=\"window.__pwned=1;alert(2)\">"


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    with _browser.chromium() as d:
        yield d


def _no_alert(driver: Any) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - the property raises when no alert is open
    assert driver.execute_script("return window.__pwned === undefined && !document.querySelector('[onerror]')")


def _wait(driver: Any, script: str, timeout: float = 10) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {script}")


@pytest.fixture(scope="module")
def default_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A small default-like job: mini_bgd and adamw, 5 seeds (fewer epochs than the default, same shape)."""
    folder = tmp_path_factory.mktemp("default-job")
    url = f"sqlite:///{folder / 'runs.db'}"
    expsvc.run(optimizer=["mini_bgd", "adamw"], seeds=5, epochs=60, db=url, name="default", jobs=1)
    return url, folder


def test_report_in_chromium(driver: Any, default_job: tuple[str, Path], tmp_path: Path) -> None:
    """Done when 1: zero console errors, compare's numbers, curves and bands, legend toggles, table filter."""
    url, _ = default_job
    out = tmp_path / "r.html"
    app = build_app()
    res = CliRunner().invoke(app, ["report", "--out", str(out), "--db", url])
    assert res.exit_code == 0, res.output
    expected = json.loads(CliRunner().invoke(app, ["compare", "--format", "json", "--db", url]).stdout)
    driver.get(out.as_uri())
    _wait(driver, "return window.expsvcReport && window.expsvcReport.charts.length > 0")
    assert _browser.console_errors(driver) == []
    # the comparison table: one row per group and metric, each number equal to compare --format json
    cells = driver.execute_script("""
        return Array.from(document.querySelectorAll('#compare-table tbody tr')).map(function (tr) {
          var o = {group: tr.dataset.group, metric: tr.dataset.metric};
          tr.querySelectorAll('td[data-value]').forEach(function (td) {
            o[td.dataset.key] = Number(td.dataset.value); });
          return o; });""")
    groups = {g["label"]: g for g in expected["groups"]}
    assert {c["group"] for c in cells} == set(groups) and len(groups) == 2
    assert len(cells) == 2 * len(expected["metrics"])
    checked = 0
    for c in cells:
        m = groups[c["group"]]["metrics"][c["metric"]]
        for key in ("mean", "ci", "std", "iqm"):
            if m[key] is not None:
                assert c[key] == m[key], (c, key)
                checked += 1
        vs = m["vs_baseline"]
        if vs is not None and vs["diff"] is not None:
            assert c["diff"] == vs["diff"] and c["p"] == vs["p"]
            checked += 2
    assert checked >= 8
    # each group's mean curve and band are drawn (series with data, one band per group)
    loss = driver.execute_script("""
        var c = window.expsvcReport.charts.filter(function (c) { return c.key === 'loss'; })[0];
        return {labels: c.u.series.map(function (s) { return s.label; }), bands: c.u.bands.length,
                finite: c.u.data.slice(1).map(function (d) {
                  return d.filter(function (v) { return v !== null; }).length; }),
                shown: c.u.series.map(function (s) { return s.show; }), width: c.u.width};""")
    names = [g["name"] for g in expected["groups"]]
    for name in names:
        i = loss["labels"].index(name)
        assert loss["finite"][i - 1] > 10 and loss["finite"][i] > 10 and loss["finite"][i + 1] > 10
    assert loss["bands"] == 2 and all(loss["shown"])
    # hovering the chart reads out each group's mean, band and how many runs the point averages
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).move_to_element(driver.find_element("css selector", ".chart[data-key=loss] .u-over")).perform()
    hover = _wait(driver, "var h = document.querySelector('.chart[data-key=loss] + .hover'); "
                          "return h && h.textContent.indexOf('averages') >= 0 && h.textContent")
    assert all(f"{name}: " in hover for name in [g["name"] for g in expected["groups"]]) and "averages 5 runs" in hover
    # toggling a group from the legend hides its mean, band edges; again shows them
    driver.find_element("css selector", "#legend button[data-group='0']").click()
    shown = driver.execute_script("return window.expsvcReport.charts[0].u.series.map(function (s) { return s.show; })")
    i0 = loss["labels"].index(names[0])
    assert shown[i0:i0 + 3] == [False] * 3 and all(shown[loss["labels"].index(names[1]):][:3])
    assert "off" in driver.find_element("css selector", "#legend button[data-group='0']").get_attribute("class")
    driver.find_element("css selector", "#legend button[data-group='0']").click()
    # the runs table's filter narrows the rows; selecting a run draws its own line
    rows = [r.get_attribute("data-run") for r in driver.find_elements("css selector", "#runs-table tbody tr")]
    assert len(rows) == 10
    box = driver.find_element("css selector", "#filter")
    box.send_keys("adamw")
    assert len(driver.find_elements("css selector", "#runs-table tbody tr")) == 5
    one = rows[-1]
    box.clear()
    box.send_keys(one[:8])
    narrowed = driver.find_elements("css selector", "#runs-table tbody tr")
    assert [r.get_attribute("data-run") for r in narrowed] == [one]
    narrowed[0].find_element("css selector", "input[type=checkbox]").click()
    labels = driver.execute_script(
        "return window.expsvcReport.charts[0].u.series.map(function (s) { return s.label; })")
    assert any(lbl.startswith("run ") for lbl in labels)
    box.clear()
    driver.find_element("css selector", "#log-y").click()
    driver.find_element("css selector", "#show-seeds").click()
    assert driver.execute_script("return window.expsvcReport.charts[0].u.scales.y.distr") == 3
    assert _browser.console_errors(driver) == []
    driver.find_element("css selector", "#log-y").click()
    driver.find_element("css selector", "#show-seeds").click()
    driver.find_element("css selector", "#clear-selection").click()
    _screenshot(driver, tmp_path / "report.png")


def _screenshot(driver: Any, path: Path) -> None:
    """The whole page as a PNG (the README's figure when EXPSVC_UPDATE_SCREENSHOT=1)."""
    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(1280, min(height + 80, 3000))
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1000)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("EXPSVC_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SCREENSHOT)


def test_sweep_gets_its_sensitivity_view(driver: Any, tmp_path: Path) -> None:
    """Done when 3: 3 optimizers × 9 learning rates × 5 seeds: metric against lr per optimizer, chosen marked."""
    from expsvc.report import data, html
    from expsvc.store import RunStore

    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    lrs = [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0]
    res = expsvc.run(optimizer=["sgd", "adamw", "mini_bgd"], lr=lrs, seeds=5, epochs=3, model="linear(1)", db=url,
                     name="sweep", jobs=1)
    assert len(res.run_ids) == 135
    with RunStore.open(url) as store:  # the data model marks a study's chosen values (report --study supplies them)
        page = html.render(data.build(store, data.Selection("sweep"), chosen={"adamw": {"lr": 0.01}}))
    out = tmp_path / "sweep.html"
    out.write_text(page)
    driver.get(out.as_uri())
    _wait(driver, "return window.expsvcReport && window.expsvcReport.charts.length > 1")
    assert _browser.console_errors(driver) == []
    view = driver.execute_script("""
        var c = window.expsvcReport.charts.filter(function (c) { return c.key === 'sensitivity:lr'; })[0];
        return {x: c.u.data[0], labels: c.u.series.map(function (s) { return s.label; }),
                counts: c.u.data.slice(1).map(function (d) {
                  return d.filter(function (v) { return v !== null; }).length; }),
                hidden: document.getElementById('sensitivity').hidden, bands: c.u.bands.length};""")
    assert not view["hidden"] and view["x"] == lrs and view["bands"] == 3
    for opt in ("sgd", "adamw", "mini_bgd"):
        assert view["counts"][view["labels"].index(opt) - 1] == 9
    chosen = view["labels"].index("adamw chosen")
    assert view["counts"][chosen - 1] == 1
    assert len(driver.find_elements("css selector", "#parallel-svg polyline")) == 135


def test_a_study_report_shows_its_rule_and_marks_each_choice(driver: Any, tmp_path: Path) -> None:
    """``expsvc report --study``: the selection rule and choices on the page, the tuning's sensitivity with one
    chosen point per optimizer, no console error."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    res = CliRunner().invoke(build_app(), ["tune", "-q", "--opt", "mini_bgd", "--opt", "adamw", "--lr",
                                           "logspace(0.01, 1, 3)", "--epochs", "5", "--tune-seeds", "2", "--seeds", "2",
                                           "--name", "st", "--db", url])
    assert res.exit_code == 0, res.output
    out = tmp_path / "study.html"
    res = CliRunner().invoke(build_app(), ["report", "--study", "st", "--db", url, "--out", str(out)])
    assert res.exit_code == 0, res.output
    driver.get(out.as_uri())
    _wait(driver, "return window.expsvcReport && window.expsvcReport.charts.length > 1")
    assert _browser.console_errors(driver) == []
    study = driver.find_element("id", "study").text
    assert "Selection rule: per optimizer" in study and "st-tuning" in study and "st-confirmation" in study
    assert len(driver.find_elements("css selector", "#study-choices li")) == 2
    view = driver.execute_script("""
        var c = window.expsvcReport.charts.filter(function (c) { return c.key === 'sensitivity:lr'; })[0];
        return {labels: c.u.series.map(function (s) { return s.label; }),
                counts: c.u.data.slice(1).map(function (d) {
                  return d.filter(function (v) { return v !== null; }).length; })};""")
    for opt in ("mini_bgd", "adamw"):
        assert view["counts"][view["labels"].index(f"{opt} chosen") - 1] == 1
        assert view["counts"][view["labels"].index(opt) - 1] == 3


# --------------------------------------------------------------------------------------------------- ui


@pytest.fixture()
def ui(default_job: tuple[str, Path], tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    """``expsvc ui`` on a free port over a copy of the default job's store, plus a hostile experiment."""
    from expsvc.report import server
    from expsvc.store import RunStore
    from expsvc.store.experiments import set_description

    url, folder = default_job
    db = tmp_path / "ui.db"
    with RunStore.open(url):
        pass
    shutil.copy(folder / "runs.db", db)
    db_url = f"sqlite:///{db}"
    expsvc.run(optimizer=["adamw"], seeds=2, epochs=3, db=db_url, name=XSS + IMG, jobs=1,
               model="linear(2), tanh, linear(1)")
    with RunStore.open(db_url) as store:
        set_description(store, XSS + IMG, IMG + "</script><!--")
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store = server.open_read_only(db_url)
    httpd = server.make_server(store, "127.0.0.1", 0, refresh=1, quiet=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", db, db_url
    finally:
        httpd.shutdown()
        httpd.server_close()
        store.close()


def _fingerprint(db: Path) -> tuple[str, ...]:
    return tuple(hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else "-"
                 for p in (db, Path(f"{db}-wal")))


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_ui_lists_serves_and_survives_hostile_requests(driver: Any, ui: tuple[str, Path, str]) -> None:
    """Done when 2: the list, a report page, ≥ 30 hostile requests; no script runs, no traceback, store unchanged."""
    from expsvc.store import RunStore, read

    base, db, db_url = ui
    before = _fingerprint(db)
    with RunStore.open(db_url, mark_stale=False) as store:
        rows_before = read.row_counts(store)
    driver.get(base + "/")
    links = driver.find_elements("css selector", "#experiments a")
    assert {a.text for a in links} == {"default", XSS + IMG}
    _no_alert(driver)
    links[0].click()
    _wait(driver, "return window.expsvcReport && window.expsvcReport.charts.length > 0")
    assert _browser.console_errors(driver) == []
    assert len(driver.find_elements("css selector", "#compare-table tbody tr")) >= 2
    where = driver.find_element("css selector", "nav input[name=where]")  # the page's --where form
    where.send_keys("params.optimizer = 'adamw' and seed < 3")
    where.submit()
    _wait(driver, "return window.expsvcReport && window.expsvcReport.data.table.rows.length === 3")
    driver.get(base + "/experiment?name=default&by=lr")  # a grouping compare refuses: said, curves still drawn
    _wait(driver, "return window.expsvcReport && window.expsvcReport.charts.length > 0")
    assert "compare refused this grouping" in driver.find_element("css selector", "#refusal").text
    assert _browser.console_errors(driver) == []
    hostile_name = quote(XSS + IMG, safe="")
    paths = [
        "/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2fetc%2fpasswd", "//etc/passwd",
        "/experiment/../../../etc/passwd", "/static/../../runs.db", "/ui.db", "/experiment?name=../../etc/passwd",
        f"/experiment?name={hostile_name}", f"/experiment?name={quote(XSS, safe='')}",
        "/experiment?name=default&where=" + quote("params.lr = 1; DROP TABLE runs; --"),
        "/experiment?name=default&where=" + quote("1=1) OR (1=1"),
        "/experiment?name=default&where=" + quote("params.optimizer = 'x'' OR ''1''=''1'"),
        "/experiment?name=default&where=" + quote(XSS),
        "/experiment?name=default&where=" + quote("status = '" + XSS + "'"),
        "/experiment?name=default&by=" + quote(XSS), "/experiment?name=default&baseline=" + quote(IMG),
        "/experiment?name=default&metric=" + quote(XSS), "/experiment?name=default&pool=" + quote(XSS),
        "/experiment?name=" + "x" * 100_000, "/experiment?name=default&where=" + quote("seed > " + "9" * 5000),
        "/experiment?name=default&" + "&".join(f"a{i}=1" for i in range(200)),
        "/experiment?name=default&name=other", "/experiment?name=", "/experiment?name=%00", "/experiment?name=%ff%fe",
        "/experiment?name=default&where=" + quote("params.lr < (((((((((((1"),
        "/?" + quote(XSS), "/" + quote(XSS), "/experiment?" + quote(XSS) + "=1", "/%0d%0aSet-Cookie:%20x=1",
        "/experiment?name=default&where=" + quote("tag = '" + "'" * 1000 + "'"),
        "/experiment?name=%E2%80%A8%3C%2Fscript%3E",
    ]
    assert len(paths) >= 30
    for path in paths:
        status, body = _get(base + path)
        assert status in (200, 400, 404, 414), (path[:80], status)
        assert "Traceback" not in body and 'File "' not in body, path[:80]
        assert XSS not in body and "<img src=x" not in body, path[:80]
        if status != 200:
            assert body.count("<script") == 0, path[:80]
    for host in ("evil.example", "127.0.0.1.evil.example:80", ""):  # DNS rebinding: a foreign Host is refused
        req = urllib.request.Request(base + "/", headers={"Host": host})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        assert err.value.code == 403 and "Traceback" not in err.value.read().decode()
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        req = urllib.request.Request(base + "/experiment?name=default", method=method, data=b"x=1")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        assert err.value.code == 405
    for path in (f"/experiment?name={hostile_name}", "/", "/experiment?name=default&where=" + quote(XSS),
                 "/" + quote(IMG)):
        driver.get(base + path)
        time.sleep(0.3)
        _no_alert(driver)
    driver.get(base + f"/experiment?name={hostile_name}")
    _wait(driver, "return window.expsvcReport && window.expsvcReport.charts.length > 0")
    assert driver.find_element("css selector", "#title").text == "expsvc report: " + XSS + IMG
    assert driver.execute_script("return document.scripts.length") == 3
    _no_alert(driver)
    assert _fingerprint(db) == before
    with RunStore.open(db_url, mark_stale=False) as store:
        assert read.row_counts(store) == rows_before


def test_ui_page_of_a_running_experiment_updates(driver: Any, ui: tuple[str, Path, str]) -> None:
    """Done when 2: a page whose experiment has running runs reloads and shows runs added meanwhile."""
    base, db, db_url = ui
    _browser.console_errors(driver)  # drop what earlier tests' refused requests logged
    with sqlite3.connect(db) as conn:  # one run of "default" is still running, in this (live) process
        conn.execute("UPDATE runs SET status = 'running', pid = ?, host = ? WHERE id = "
                     "(SELECT r.id FROM runs r JOIN experiments e ON e.id = r.experiment_id WHERE e.name = 'default' "
                     "ORDER BY r.id LIMIT 1)", (os.getpid(), socket.gethostname()))
    driver.get(base + "/experiment?name=default")
    _wait(driver, "return window.expsvcReport && window.expsvcReport.data.running === 1")
    assert driver.execute_script("return window.expsvcReport.data.refresh") == 1
    rows = len(driver.find_elements("css selector", "#runs-table tbody tr"))
    driver.find_element("css selector", "#legend button[data-group='1']").click()  # kept across the reloads
    expsvc.run(optimizer=["mini_bgd", "adamw"], seed=[7], epochs=60, db=db_url, name="default", jobs=1)
    _wait(driver, f"return window.expsvcReport && window.expsvcReport.data.table.rows.length === {rows + 2}", 15)
    assert len(driver.find_elements("css selector", "#runs-table tbody tr")) == rows + 2
    assert "off" in driver.find_element("css selector", "#legend button[data-group='1']").get_attribute("class")
    assert _browser.console_errors(driver) == []
