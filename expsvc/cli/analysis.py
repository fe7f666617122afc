"""Query commands: ``runs``, ``show``, ``compare``, ``plot``, ``export``, ``rm`` (parse, call, print)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from expsvc.cli.common import DbOption, ForceOption, WideOption, check_outputs, fail, open_store, output_width

ExperimentOption = Annotated[
    str | None, typer.Option("--experiment", "-e", help="Experiment name (default: all for runs/export, the "
                                                        "latest for compare/plot).")]
WhereOption = Annotated[
    str | None, typer.Option("--where", "-w", help="Filter, e.g. \"params.lr < 0.01 and metrics.accuracy > 0.9\" "
                                                   "(fields params.K, metrics.K, min/max/last/first/mean(K), status, "
                                                   "seed, updates, epochs, duration, experiment, tag, group, id).")]
StudyOption = Annotated[
    str | None, typer.Option("--study", metavar="NAME", help="An `expsvc tune` study: its confirmation runs "
                                                            "(export: its tuning and confirmation runs).")]
COMPARE_FORMATS = ("table", "markdown", "json", "csv")
TABLE_LIMIT = 100


@contextmanager
def _errors() -> Iterator[None]:
    """Turn user-facing errors into ``fail`` (one line, exit 2, no traceback)."""
    from expsvc.errors import ExpsvcError

    try:
        yield
    except ExpsvcError as err:
        fail(str(err))


@contextmanager
def _store(db: str | None) -> Iterator[Any]:
    store = open_store(db)
    try:
        yield store
    finally:
        store.close()


def _interactive() -> bool:
    """Whether a person can answer a prompt (stdin is a terminal)."""
    return sys.stdin.isatty()


def _study_experiments(store: Any, study: str, experiment: Any, *, tuning: bool = False) -> list[str]:
    """The experiments of ``--study``: its confirmation experiment (and, with ``tuning``, its tuning one first);
    ``--experiment`` with it is refused."""
    from expsvc.store.studies import get_study

    if experiment:
        fail("--study and --experiment exclude each other; the study names its experiments")
    record = get_study(store, study)
    names = [record.tuning_experiment] if tuning else []
    names.append(record.confirmation_experiment)
    if record.confirmation_experiment is None:
        fail(f"study {study!r} has no confirmation runs yet (status {record.status}); finish it with "
             f"expsvc tune --resume {study}")
    return [n for n in names if n]


def _experiment_id(store: Any, name: str | None, *, latest: bool) -> tuple[int | None, str]:
    """The id and name of ``--experiment`` (or of the latest when ``latest``; else no filter)."""
    if name is None and not latest:
        return None, ""
    exp = store.resolve_experiment(name)
    return exp.id, exp.name


def runs(
    experiment: ExperimentOption = None,
    status: Annotated[str | None, typer.Option("--status", help="queued, running, finished, diverged, failed, "
                                                                "interrupted or stale.")] = None,
    where: WhereOption = None,
    sort: Annotated[str | None, typer.Option("--sort", help="Sort key, '-' for descending: started, "
                                                            "-metrics.test_accuracy, params.lr, min(loss)...")] = None,
    limit: Annotated[int | None, typer.Option("--limit", "-n", help=f"At most N runs (table default "
                                                                    f"{TABLE_LIMIT}).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV instead of a table.")] = False,
    wide: WideOption = False,
    db: DbOption = None,
) -> None:
    """List runs, newest first: id, experiment, the optimizer and the parameters that tell each experiment's
    configurations apart, seed, status, final loss (full training set, as in compare)... (fitted to the
    terminal; --wide for every column)."""
    from expsvc.analysis import listing, render
    from expsvc.store import read

    if as_json and as_csv:
        fail("--json and --csv exclude each other; choose one")
    if limit is not None and limit < 1:
        fail(f"--limit {limit}: must be a positive number of runs")
    table = not (as_json or as_csv)
    wanted = limit if limit is not None else (TABLE_LIMIT if table else None)
    with _errors(), _store(db) as store:
        exp_id, _ = _experiment_id(store, experiment, latest=False)
        rows = read.runs(store, where=where, experiment_ids=None if exp_id is None else [exp_id], status=status,
                         sort=sort, limit=None if wanted is None else wanted + 1)
        more = wanted is not None and len(rows) > wanted
        rows = rows[:wanted] if wanted is not None else rows
        configs = read.experiment_configs(store, {r.experiment for r in rows}) if table and rows else {}
    params = listing.identifying_params(rows, configs) if table and rows else []
    if as_json:
        typer.echo(render.runs_json(rows))
        return
    if as_csv:
        typer.echo(render.runs_csv(rows), nl=False)
        return
    if not rows:
        typer.echo("no runs match")
        return
    typer.echo(render.runs_table(rows, params, width=output_width(wide)))
    if more:
        typer.echo(f"showing the first {wanted} runs; more match (use --limit)")


def show(
    run: Annotated[str, typer.Argument(help="Run id or any unique prefix.")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of text.")] = False,
    wide: WideOption = False,
    db: DbOption = None,
) -> None:
    """One run: config, components (plugin, package, version), status and error, summaries, loss sparkline."""
    from expsvc.analysis import render
    from expsvc.store import read

    with _errors(), _store(db) as store:
        details = read.details(store, store.resolve_run(run).id)
    if as_json:
        from expsvc.files import strict_json

        typer.echo(strict_json(details.to_dict()))  # NaN and ±inf as null, like every --json
        return
    typer.echo("\n".join(render.show_text(details, width=output_width(wide))))


def _curves(store: Any, groups: list[Any], key: str = "loss") -> list[Any]:
    from expsvc.analysis.plots import CurveGroup
    from expsvc.store import read

    hist = read.histories(store, [r.id for g in groups for r in g.runs], key)
    return [CurveGroup(g.label, {r.id: hist[r.id][key] for r in g.runs if key in hist.get(r.id, {})},
                       {r.id: r.steps_per_epoch for r in g.runs}, g.count("diverged"),
                       {r.id: r.status for r in g.runs}) for g in groups]


def _check_history(store: Any, records: list[Any], key: str) -> None:
    """Refuse, in one line, a ``--metric`` that these runs do not store as a history."""
    from expsvc.errors import did_you_mean

    ids = [r.id for r in records]
    if store.point_counts(ids, key):
        return
    summaries = store.summaries(ids)
    known = sorted({k for keys in summaries.values() for k, s in keys.items() if (s.get("count") or 0) > 1})
    stored = any(key in keys for keys in summaries.values())
    why = "is stored only as a final value, not as a history (run with --eval-every N to record it per epoch)" \
        if stored else f"is not a history of these runs{did_you_mean(key, known)}"
    fail(f"--metric {key[:100]!r} {why}; histories: {', '.join(known)}")


def _by(by: str | None) -> list[str] | None:
    if by is None:
        return None
    keys = [k.strip() for k in by.split(",") if k.strip()]
    if not keys:
        fail(f"--by {by!r}: give parameter keys separated by commas, e.g. optimizer,lr")
    return keys


def compare(
    experiment: Annotated[list[str] | None, typer.Option(
        "--experiment", "-e", help="Experiment name; repeat to compare across experiments (default: the "
                                   "latest).")] = None,
    by: Annotated[str | None, typer.Option("--by", help="Group by these parameters (comma-separated) instead of "
                                                        "the whole configuration, e.g. optimizer,lr "
                                                        "('experiment' groups by experiment).")] = None,
    pool: Annotated[bool, typer.Option("--pool", help="Allow a group to pool several configurations (or "
                                                      "versions): compared without pairing, with a warning. "
                                                      "Without it such a grouping is refused.")] = False,
    metric: Annotated[list[str] | None, typer.Option("--metric", "-m", help="Metric to compare; repeatable: "
                                                     "final_loss (full training set), last_batch_loss, "
                                                     "min_loss, test_accuracy, accuracy (= test), min(loss), "
                                                     "updates, duration; ':lower'/':higher' sets the "
                                                     "direction.")] = None,
    baseline: Annotated[str | None, typer.Option("--baseline", help="Baseline group: a label, a value such as "
                                                                    "mini_bgd, settings such as 'lr=0.1' or an "
                                                                    "optimizer spec such as 'adamw(lr=0.001)' "
                                                                    "(default: the first group).")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, markdown, json or csv.")] = "table",
    target: Annotated[str | None, typer.Option(
        "--target", metavar="'METRIC <= X'", help="Time to target: per run the first update, epoch and seconds "
        "where a stored history (val_loss, test_accuracy... with --eval-every; loss per update) reaches it, "
        "'<=' or '>='; runs that never do are counted as 'k of n reached' and censored (sign test). Without "
        "--metric, shown instead of the default metrics.")] = None,
    plot: Annotated[str | None, typer.Option("--plot", help="Also draw the groups' loss curves to this PNG.",
                                             metavar="FILE")] = None,
    force: ForceOption = False,
    wide: WideOption = False,
    study: StudyOption = None,
    db: DbOption = None,
) -> None:
    """Compare the groups of an experiment with a baseline: intervals, paired/Welch tests, P(better)."""
    from expsvc.analysis import compare as cmp
    from expsvc.analysis import render

    if fmt not in COMPARE_FORMATS:
        fail(f"--format {fmt!r}: allowed: {', '.join(COMPARE_FORMATS)}")
    keys = _by(by)
    if plot is not None:
        check_outputs(db, force, ("--plot", plot, "png"))
    with _errors(), _store(db) as store:
        refs: list[str | None] = list(dict.fromkeys(experiment)) if experiment else [None]
        if study is not None:
            refs = list(_study_experiments(store, study, experiment))
        exps = [store.resolve_experiment(ref) for ref in refs]
        result, groups = cmp.compare_experiments(
            store, {e.id: e.name for e in exps}, by=keys, pool=pool, metrics=metric, baseline=baseline,
            target=target)
        if plot:
            from expsvc.analysis.plots import plot_loss_curves

            info = plot_loss_curves(_curves(store, groups), plot,
                                    title=f"{result.experiment}: training loss, mean and 95 % t band")
    if fmt == "json":
        typer.echo(render.compare_json(result))
    elif fmt == "csv":
        typer.echo(render.compare_csv(result), nl=False)
    elif fmt == "markdown":
        typer.echo(render.compare_markdown(result), nl=False)
    else:
        typer.echo(render.compare_table(result, width=output_width(wide)))
    if plot:
        typer.echo(f"wrote {info.path} ({info.lines} runs, {info.bands} bands)", err=True)


def plot(
    run: Annotated[str | None, typer.Argument(help="Run id prefix (required for --kind predictions).")] = None,
    kind: Annotated[str, typer.Option("--kind", help="loss (curves per group) or predictions (one run, "
                                                     "2-D datasets).")] = "loss",
    experiment: ExperimentOption = None,
    by: Annotated[str | None, typer.Option("--by", help="Group by these parameters (comma-separated).")] = None,
    pool: Annotated[bool, typer.Option("--pool", help="Allow a curve to pool several configurations (or "
                                                      "versions); without it such a --by is refused, as "
                                                      "in compare.")] = False,
    x: Annotated[
        str, typer.Option("--x", help="x axis: epoch (mean loss per epoch) or update (every step).")
    ] = "epoch",
    log_y: Annotated[bool, typer.Option("--log-y", help="Logarithmic loss axis (geometric mean, band from the "
                                                         "mean log loss).")] = False,
    smooth: Annotated[float, typer.Option("--smooth", help="Smooth each curve with TensorBoard's debiased EMA "
                                                           "of this weight, 0 (none) to <1, e.g. 0.9; the raw "
                                                           "mean stays faint.")] = 0.0,
    metric: Annotated[str, typer.Option(
        "--metric", "-m", help="The history to draw: loss (per update), or one stored by epoch with --eval-every "
        "such as val_loss, val_accuracy, test_loss, train_accuracy (drawn on an epoch axis).")] = "loss",
    out: Annotated[str | None, typer.Option("--out", "-o", help="PNG file (default loss.png / "
                                                                "predictions.png).", metavar="FILE")] = None,
    force: ForceOption = False,
    study: StudyOption = None,
    db: DbOption = None,
) -> None:
    """Draw loss curves (mean, 95 % band, faint seeds) — or another stored history's, such as the held-out
    val_loss per epoch — or a run's predictions and decision boundary."""
    from expsvc.analysis import plots

    if kind not in plots.KINDS:
        fail(f"--kind {kind!r}: allowed: {', '.join(plots.KINDS)}")
    if x not in plots.X_AXES:
        fail(f"--x {x!r}: allowed: {', '.join(plots.X_AXES)}")
    if kind == "predictions" and run is None:
        fail("--kind predictions needs a RUN id (e.g. expsvc plot --kind predictions 3f2a9c1d)")
    target = out or ("predictions.png" if kind == "predictions" else "loss.png")
    check_outputs(db, force, ("--out", target, "png"))
    if kind == "predictions":
        with _errors():
            from expsvc.runner.api import load_model

            loaded = load_model(run, db=db)
            info = plots.plot_predictions(loaded, target)
        typer.echo(f"wrote {info.path} ({info.points} points, {info.wrong} wrong)")
        return
    from expsvc.analysis import compare as cmp
    from expsvc.store import read

    keys = _by(by)
    with _errors(), _store(db) as store:
        run_ids = None
        if run is not None:
            r = store.resolve_run(run)
            run_ids, exp_id = [r.id], r.experiment_id
            exp_name = store.resolve_experiment(str(exp_id)).name
        else:
            if study is not None:
                experiment = _study_experiments(store, study, experiment)[0]
            exp_id_opt, exp_name = _experiment_id(store, experiment, latest=True)
            assert exp_id_opt is not None
            exp_id = exp_id_opt
        records = read.records(store, experiment_ids=[exp_id], run_ids=run_ids, summary_keys=(), versions=True)
        if not records:
            fail(f"experiment {exp_name!r} has no runs")
        cmp.resolve_params(records)
        groups = cmp.group_runs(records, keys)
        cmp.check_grouping(groups, keys, pool)  # one band per configuration, or pooled only when asked
        _check_history(store, records, metric)
        curves = _curves(store, groups, metric)
        what = "training loss" if metric == "loss" else metric
        info = plots.plot_loss_curves(curves, target, x=x, log_y=log_y, smooth=smooth, metric=metric,
                                      title=f"{exp_name}: {what}, mean and 95 % t band")
    for note in info.notes:
        typer.echo(f"note: {note}", err=True)
    for g in groups:
        if g.merged:
            typer.echo(f"note: {g.short} pools runs that differ in {', '.join(g.merged)} (--pool)", err=True)
    typer.echo(f"wrote {info.path} ({len(curves)} groups, {info.lines} runs, {info.bands} bands)")


def export(
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv or json.")] = "csv",
    where: WhereOption = None,
    experiment: ExperimentOption = None,
    history: Annotated[bool, typer.Option("--history", help="Include metric histories (CSV: a second file "
                                                            "NAME.history.csv in long form).")] = False,
    out: Annotated[str, typer.Option("--out", "-o", help="Output file ('-' for stdout).", metavar="FILE")] = "-",
    force: ForceOption = False,
    study: StudyOption = None,
    db: DbOption = None,
) -> None:
    """Export runs with their config, parameters and summaries (and histories) as CSV or JSON."""
    from expsvc.analysis import export as exp
    from expsvc.store import read

    if fmt not in exp.FORMATS:
        fail(f"--format {fmt!r}: allowed: {', '.join(exp.FORMATS)}")
    if out != "-":
        outputs = [("--out", out, fmt)]
        if history and fmt == "csv":
            outputs.append(("--out's history file", str(exp.history_path(Path(out))), "csv"))
        check_outputs(db, force, *outputs)
    with _errors(), _store(db) as store:
        if study is not None:
            exp_ids = [store.resolve_experiment(n).id for n in _study_experiments(store, study, experiment,
                                                                                   tuning=True)]
        else:
            exp_id, _ = _experiment_id(store, experiment, latest=False)
            exp_ids = None if exp_id is None else [exp_id]
        ids = read.run_ids(store, where=where, experiment_ids=exp_ids)
        written = exp.export_runs(store, ids, out, fmt, history=history)
    if written:
        typer.echo(f"exported {len(ids)} runs to {', '.join(written)}", err=True)


def rm(
    runs_: Annotated[list[str] | None, typer.Argument(metavar="[RUN]...", help="Run ids or unique prefixes.")] = None,
    where: WhereOption = None,
    experiment: Annotated[str | None, typer.Option("--experiment", "-e", help="Delete every run of this "
                                                                              "experiment.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    db: DbOption = None,
) -> None:
    """Delete runs (by id, --where or --experiment) with everything that belongs to them."""
    from expsvc.store import read

    modes = sum(bool(m) for m in (runs_, where, experiment))
    if modes != 1:
        fail("rm: give run ids, or --where EXPR, or --experiment NAME (exactly one of them)")
    with _errors(), _store(db) as store:
        if runs_:
            ids = list(dict.fromkeys(store.resolve_run(r).id for r in runs_))
        else:
            exp_id, _ = _experiment_id(store, experiment, latest=False)
            ids = read.run_ids(store, where=where, experiment_ids=None if exp_id is None else [exp_id])
        if not ids:
            typer.echo("no runs match; nothing deleted")
            return
        preview = ", ".join(i[:8] for i in ids[:10]) + (", ..." if len(ids) > 10 else "")
        if not yes:
            if not _interactive():
                fail(f"refusing to delete {len(ids)} run(s) without confirmation (stdin is not a terminal); "
                     f"pass --yes")
            if not typer.confirm(f"Delete {len(ids)} run(s) ({preview}) and their history?", default=False):
                typer.echo("nothing deleted")
                raise typer.Exit(1)
        deleted = store.delete_runs(ids)
    typer.echo(f"deleted {deleted} run(s): {preview}")


def register(app: typer.Typer) -> None:
    """Add the query commands to the ``expsvc`` app."""
    app.command("runs")(runs)
    app.command("show")(show)
    app.command("compare")(compare)
    app.command("plot")(plot)
    app.command("export")(export)
    app.command("rm")(rm)
