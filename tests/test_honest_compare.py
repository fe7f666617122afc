"""``compare`` never misleads (issue 15, findings 1-7): each finding reproduced on a real store written by real
``expsvc run`` processes, then read through the real CLI.

1. ``--by`` merging configurations is refused (naming the settings) unless ``--pool``; duplicated seeds are
   reported and counted once.  2. Several ``-e``; ``--baseline`` matches resolved settings; labels show what
   differs, resolved.  3. Mixed versions are refused inside a group and reported between groups.  4. Censored
   "updates to converge"; duration is not a default metric.  5. "final loss" is the full-training-set loss.
   7. Classification metrics of a regression loss on binary targets.  (6 is in ``test_grammar.py``.)
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from expsvc.store import RunStore, read

RUN = ("--epochs", "3", "--batch-size", "32", "-q", "-j", "1")


def expsvc(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([sys.executable, "-m", "expsvc", *args], capture_output=True, text=True, timeout=300)
    if ok:
        assert res.returncode == 0, res.stderr + res.stdout
    return res


def run_and_read(url: str, *args: str) -> list[Any]:
    """``expsvc run --db url ARGS -q -j 1``, then every run of the store as the read API returns it."""
    expsvc("run", "--db", url, *args, "-q", "-j", "1")
    with RunStore.open(url) as store:
        return read.records(store)


def compare_json(url: str, *args: str) -> dict[str, Any]:
    return json.loads(expsvc("compare", "--db", url, "--format", "json", *args).stdout)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> str:
    """sgd and adam × lr 0.01 and 0.1 × seeds 0-2 ("sweep"); the same sgd/adam seeds run twice ("twice");
    sgd alone in "only-sgd", adamw and sgd(momentum=0.9) in "specs"."""
    url = f"sqlite:///{tmp_path_factory.mktemp('honest') / 'runs.db'}"
    expsvc("run", "--db", url, "--name", "sweep", "--opt", "sgd", "--opt", "adam", "--lr", "0.01", "--lr", "0.1",
           "--seeds", "3", *RUN)
    for _ in range(2):
        expsvc("run", "--db", url, "--name", "twice", "--opt", "sgd", "--opt", "adam", "--seeds", "2", *RUN)
    expsvc("run", "--db", url, "--name", "only-sgd", "--opt", "sgd", "--seeds", "2", *RUN)
    expsvc("run", "--db", url, "--name", "specs", "--opt", "adamw(lr=0.001)", "--opt", "sgd(momentum=0.9)",
           "--opt", "sgd", "--seeds", "2", *RUN)
    return url


# ------------------------------------------------------------------------------------------ finding 1
def test_by_merging_configurations_is_refused_naming_the_settings(sweep: str) -> None:
    res = expsvc("compare", "--db", sweep, "-e", "sweep", "--by", "optimizer", ok=False)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    message = res.stderr + res.stdout
    assert "lr" in message and "--pool" in message and "--by optimizer,lr" in message
    assert "0.01" in message and "0.1" in message


def test_pool_pools_with_a_stated_warning_and_no_pairing(sweep: str) -> None:
    data = compare_json(sweep, "-e", "sweep", "--by", "optimizer", "--pool")
    assert data["pooled"] is True
    for g in data["groups"]:
        assert g["configurations"] == 2 and g["merged_settings"] == {"lr": [0.01, 0.1]} and g["pooled"]
        assert g["metrics"]["final loss"]["n"] == 6  # 2 configurations × 3 seeds, each its own observation
    adam = data["groups"][1]["metrics"]["final loss"]["vs_baseline"]
    assert adam["method"] == "welch"  # never paired by seed across merged configurations
    assert any("pooled 2 configuration(s) that differ in lr" in w for w in data["warnings"])
    table = expsvc("compare", "--db", sweep, "-e", "sweep", "--by", "optimizer", "--pool").stdout
    assert "warning: sgd: pooled 2 configuration(s) that differ in lr" in " ".join(table.split())


def test_by_on_every_differing_setting_pairs_by_seed(sweep: str) -> None:
    data = compare_json(sweep, "-e", "sweep", "--by", "optimizer,lr")
    assert not data["pooled"] and not data["warnings"]
    assert [g["metrics"]["final loss"]["vs_baseline"]["method"] for g in data["groups"][1:]] == ["paired"] * 3


def test_duplicated_seeds_are_reported_and_counted_once(sweep: str) -> None:
    data = compare_json(sweep, "-e", "twice")
    for g in data["groups"]:
        assert g["seeds"] == [0, 0, 1, 1] and g["n_completed"] == 4
        assert g["duplicate_seeds"] == [0, 1]
        assert g["metrics"]["final loss"]["n"] == 2
    assert any("seed(s) 0, 1 ran more than once" in w and "the repeats agree" in w for w in data["warnings"])
    table = " ".join(expsvc("compare", "--db", sweep, "-e", "twice").stdout.split())
    assert "ran more than once in the same configuration" in table


# ------------------------------------------------------------------------------------------ finding 2
def test_several_experiments_are_compared_together(sweep: str) -> None:
    data = compare_json(sweep, "-e", "only-sgd", "-e", "specs")
    assert data["experiments"] == ["only-sgd", "specs"]
    names = [g["name"] for g in data["groups"]]
    assert len(names) == 3 and "adamw" in names  # specs' groups; only-sgd's sgd is the same configuration
    sgd = next(g for g in data["groups"] if g["name"] == "sgd, momentum=0")
    assert sgd["n_expected"] == 4 and sgd["duplicate_seeds"] == [0, 1]  # the same seeds in both experiments
    split = compare_json(sweep, "-e", "only-sgd", "-e", "specs", "--by", "experiment,optimizer_spec")
    assert len(split["groups"]) == 4


def test_baseline_spec_matches_resolved_settings_and_labels_are_resolved(sweep: str) -> None:
    data = compare_json(sweep, "-e", "specs", "--baseline", "adamw(lr=0.001)")
    base = next(g for g in data["groups"] if g["baseline"])
    assert base["name"] == "adamw"
    labels = [g["label"] for g in data["groups"]]
    assert "optimizer=sgd, optimizer.momentum=0.9" in labels and "optimizer=sgd, optimizer.momentum=0" in labels
    assert not any("None" in label for label in labels)
    assert compare_json(sweep, "-e", "specs", "--baseline", "sgd(momentum=0)")["baseline"] == (
        "optimizer=sgd, optimizer.momentum=0")
    assert compare_json(sweep, "-e", "sweep", "--baseline", "optimizer=adam, lr=0.1")["baseline"] == (
        "optimizer=adam, lr=0.1")
    res = expsvc("compare", "--db", sweep, "-e", "specs", "--baseline", "adamw(lr=0.5)", ok=False)
    assert res.returncode == 2 and "matches no group" in res.stderr


def test_labels_show_every_setting_that_differs(sweep: str) -> None:
    data = compare_json(sweep, "-e", "sweep")
    assert [g["name"] for g in data["groups"]] == ["sgd, lr=0.01", "sgd, lr=0.1", "adam, lr=0.01", "adam, lr=0.1"]


# ------------------------------------------------------------------------------------------ finding 3
def _set_versions(url: str, sql: str) -> None:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        conn.execute(sql)


def test_mixed_versions_refused_in_a_group_and_reported_between_groups(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'v.db'}"
    expsvc("run", "--db", url, "--name", "v", "--opt", "sgd", "--opt", "adam", "--seeds", "2", *RUN)
    with RunStore.open(url) as store:
        runs = read.records(store, versions=True)
    sgd = sorted(r.id for r in runs if r.params["optimizer"] == "sgd")
    # one sgd seed ran with another expsvc release: the group is not one configuration any more
    _set_versions(url, f"UPDATE runs SET expsvc_version = '0.0.9' WHERE id = '{sgd[0]}'")
    res = expsvc("compare", "--db", url, "-e", "v", ok=False)
    assert res.returncode == 2 and "expsvc version" in res.stderr and "--pool" in res.stderr
    pooled = compare_json(url, "-e", "v", "--pool")
    group = next(g for g in pooled["groups"] if g["name"] == "sgd")
    assert sorted(group["versions"]["expsvc"])[0] == "0.0.9" and "expsvc version" in group["merged_settings"]
    # the whole sgd group on the other release: allowed (comparing versions may be the point) and said
    _set_versions(url, f"UPDATE runs SET expsvc_version = '0.0.9' WHERE id = '{sgd[1]}'")
    _set_versions(url, f"UPDATE run_components SET version = '0.2.0' WHERE run_id IN ('{sgd[0]}', '{sgd[1]}')")
    data = compare_json(url, "-e", "v")
    text = " ".join(data["warnings"])
    assert "different expsvc versions: " in text and "0.0.9 (sgd)" in text
    assert "different package expsvc versions" in text


# ------------------------------------------------------------------------------------------ finding 4
def test_never_converged_is_censored_and_duration_is_not_a_default(sweep: str, tmp_path: Path) -> None:
    default = compare_json(sweep, "-e", "sweep", "--by", "optimizer,lr")
    fields = [m["field"] for m in default["metrics"]]
    assert "duration" not in fields and "updates" not in fields  # no run converged: nothing to say by default
    data = compare_json(sweep, "-e", "sweep", "--by", "optimizer,lr", "-m", "updates")
    updates = data["groups"][0]["metrics"]["updates"]
    assert updates["n_censored"] == 3 and updates["mean"] is None  # 3 epochs, tol 1e-5: nobody converged
    vs = data["groups"][1]["metrics"]["updates"]["vs_baseline"]
    assert vs["method"] == "sign" and vs["n"] == 0 and vs["diff"] is None  # both censored: order unknown
    assert "neither is ahead" in data["groups"][1]["metrics"]["updates"]["sentence"]
    table = " ".join(expsvc("compare", "--db", sweep, "-e", "sweep", "--by", "optimizer,lr", "-m", "updates",
                            "--wide").stdout.split())  # unwrapped cells, whatever the terminal's width
    assert "censored: 3 of 3 never converged" in table
    timed = compare_json(sweep, "-e", "sweep", "--by", "optimizer,lr", "--metric", "duration")
    assert any("not independent measurements" in w for w in timed["warnings"])


def test_partly_censored_group_has_no_mean(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    runs = run_and_read(url, "--name", "c", "--opt", "adam", "--lr", "0.1", "--opt", "sgd", "--seeds", "3",
                        "--tol", "0.002", "--epochs", "10")
    assert {r.converged for r in runs} == {True, False}  # adam converges, sgd at lr 0.001 does not
    assert "updates to converge" in [m["label"] for m in compare_json(url, "-e", "c")["metrics"]]
    data = compare_json(url, "-e", "c")
    for g in data["groups"]:
        m = g["metrics"]["updates to converge"]
        converged = [r for r in runs if r.params["optimizer"] == g["name"] and r.converged]
        assert m["n_censored"] == 3 - len(converged)
        assert (m["mean"] is None) == (m["n_censored"] > 0)
    sgd = next(g for g in data["groups"] if g["name"] == "sgd")["metrics"]["updates to converge"]
    if sgd["vs_baseline"] is not None:  # adam converged; sgd never did: sgd is behind wherever that is certain
        bound = min(r.updates for r in runs if r.params["optimizer"] == "sgd")
        ahead = sum(r.updates < bound for r in runs if r.params["optimizer"] == "adam")
        vs = sgd["vs_baseline"]
        assert (vs["method"], vs["wins"], vs["losses"]) == ("sign", 0, ahead)
        assert "exact sign test" in sgd["sentence"]


def test_plot_by_refuses_to_merge_configurations_unless_pooled(sweep: str, tmp_path: Path) -> None:
    """``plot --by optimizer`` on an lr sweep once drew one band over two learning rates, titled a mean of
    runs of one configuration; like compare it now refuses, naming lr, or pools with a note (``--pool``)."""
    out = tmp_path / "merged.png"
    res = expsvc("plot", "--db", sweep, "-e", "sweep", "--by", "optimizer", "--out", str(out), ok=False)
    assert res.returncode == 2 and "lr" in res.stderr and "--pool" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not out.exists()
    res = expsvc("plot", "--db", sweep, "-e", "sweep", "--by", "optimizer", "--pool", "--out", str(out))
    assert "pools runs that differ in lr" in res.stderr and out.stat().st_size > 10_000
    assert expsvc("plot", "--db", sweep, "-e", "sweep", "--by", "optimizer,lr", "--out", str(tmp_path / "b.png"))


# ------------------------------------------------------------------------------------------ finding 5
def test_final_loss_is_the_full_training_set_loss(sweep: str) -> None:
    data = compare_json(sweep, "-e", "sweep", "--by", "optimizer,lr")
    final = data["metrics"][0]
    assert final["label"] == "final loss" and final["field"] == "metrics.train_loss"
    assert "full training set" in final["definition"]
    assert any("final loss: the loss on the full training set" in line for line in data["method"])
    with RunStore.open(sweep) as store:
        runs = [r for r in read.records(store) if r.experiment == "sweep" and r.params["optimizer"] == "sgd"
                and r.params["lr"] == 0.01]
    want = float(np.mean([r.summaries["train_loss"]["last"] for r in runs]))
    assert data["groups"][0]["metrics"]["final loss"]["mean"] == pytest.approx(want, rel=1e-12)
    batch = compare_json(sweep, "-e", "sweep", "--by", "optimizer,lr", "-m", "last_batch_loss")
    assert batch["metrics"][0]["field"] == "metrics.loss" and "last minibatch" in batch["metrics"][0]["definition"]
    # ``runs`` calls the same number "final loss" (it once showed the last minibatch's loss under that name)
    listed = json.loads(expsvc("runs", "--db", sweep, "--json", "--where",
                               "experiment = 'sweep' and params.optimizer = 'sgd' and params.lr = 0.01").stdout)
    by_id = {r.id: r.summaries["train_loss"]["last"] for r in runs}
    assert sorted(r["id"] for r in listed) == sorted(by_id)
    assert all(r["final_loss"] == by_id[r["id"]] for r in listed)


# ------------------------------------------------------------------------------------------ finding 7
def test_mse_on_binary_moons_has_honest_accuracy(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    runs = run_and_read(url, "--name", "m", "--loss", "mse", "--dataset", "moons", "--opt", "adam", "--lr", "0.01",
                        "--epochs", "20", "--seeds", "2")
    for r in runs:
        assert r.summaries["test_accuracy"]["last"] > 0.7
        assert r.summaries["train_f1"]["last"] > 0.7
