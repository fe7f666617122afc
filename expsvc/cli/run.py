"""``expsvc run``: an experiment from flags or a TOML file, seeds vectorised, groups spread over cores."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from expsvc.cli.common import HELP_DEFAULTS, DbOption, WideOption, console, fail, output_width


def _numbers(key: str, values: list[str] | None, integer: bool, ranges: bool = False) -> list[Any] | None:
    """Parse repeated numeric flags ourselves so a bad value gets the spec's one-line error; with ``ranges``
    a value may be ``logspace(a, b, n)`` or ``linspace(a, b, n)`` (passed on as text, expanded by the spec)."""
    if not values:
        return None
    out: list[Any] = []
    for raw in values:
        if ranges and raw.strip().startswith(("logspace", "linspace")):
            out.append(raw)
            continue
        try:
            out.append(int(raw) if integer else float(raw))
        except ValueError:
            kind = "an integer" if integer else "a number"
            also = " or a range such as 'logspace(1e-4, 0.1, 4)'" if ranges else ""
            fail(f"--{key.replace('_', '-')}: {raw!r} is not {kind}{also}")
    return out


def _number(key: str, raw: str | None, integer: bool) -> Any:
    """One numeric flag (None when not given), parsed as :func:`_numbers` does."""
    return None if raw is None else (_numbers(key, [raw], integer) or [None])[0]


def _data_seed(raw: str | None) -> int | str | None:
    """``--data-seed``: ``run`` or an integer (checked further by the spec)."""
    if raw is None or raw == "run":
        return raw
    try:
        return int(raw)
    except ValueError:
        fail(f"--data-seed: {raw!r} is not allowed; expected 'run' or an integer seed >= 0")


def _summary(result: Any, wide: bool = False) -> None:
    from expsvc.analysis.render import run_summary

    groups = []
    for group in result.groups:
        counts: dict[str, int] = {}
        for o in group.outcomes:
            counts[o.status] = counts.get(o.status, 0) + 1
        done = [o for o in group.outcomes if o.final_loss is not None and o.status == "finished"]
        groups.append((
            group.label, ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
            [o.final_loss for o in done],
            [o.metrics["test_accuracy"] for o in done if o.metrics.get("test_accuracy") is not None],
            [float(o.updates) for o in done if o.updates is not None],
        ))
    typer.echo(run_summary(f"experiment {result.experiment}", groups, width=output_width(wide)))


def run(
    file: Annotated[str | None, typer.Argument(help="A TOML experiment file (flags override its values).")] = None,
    opt: Annotated[list[str] | None, typer.Option(
        "--opt", help="Optimizer spec; repeat for a grid, or give a list or range of numbers as an argument: "
                      "'sgd(momentum=[0.8, 0.9])', 'adamw(weight_decay=logspace(1e-4, 0.01, 3))' "
                      "(default: {optimizer}).")
    ] = None,
    seeds: Annotated[int | None, typer.Option(
        "--seeds", help="Run seeds 0..N-1 (default: {seeds}). A seed sets the initial weights and the batch "
                        "order; the data is the same for every seed unless --data-seed says otherwise.")] = None,
    seed: Annotated[list[int] | None, typer.Option("--seed", help="Run this seed; repeatable.")] = None,
    lr: Annotated[list[str] | None, typer.Option(
        "--lr", help="Learning rate; repeat for a grid, or a range: 'logspace(1e-4, 0.1, 9)', 'linspace(0.1, 1, 10)' "
                     "(default: the optimizer's own, 1e-3 for the built-ins).")] = None,
    epochs: Annotated[list[str] | None, typer.Option(
        "--epochs", help="Maximum epochs; repeatable (default: {epochs}).")] = None,
    batch_size: Annotated[list[str] | None, typer.Option(
        "--batch-size", help="Batch size; repeatable (default: {batch_size}).")] = None,
    model: Annotated[list[str] | None, typer.Option(
        "--model", help="Layers; repeatable (default: '{model}').")] = None,
    loss: Annotated[list[str] | None, typer.Option(
        "--loss", help="Loss spec; repeatable (default: {loss}).")] = None,
    dataset: Annotated[list[str] | None, typer.Option(
        "--dataset", help="Dataset spec; repeatable (default: {dataset}; see `expsvc components dataset`).")] = None,
    schedule: Annotated[list[str] | None, typer.Option(
        "--schedule", help="LR schedule spec; repeatable (default: {schedule}).")] = None,
    tol: Annotated[str | None, typer.Option(
        "--tol", help="Stop when the last update's loss changes less than this between epochs (default: {tol}; "
                      "0: never stop early).")] = None,
    shuffle: Annotated[bool | None, typer.Option(
        "--shuffle/--no-shuffle", help="Reshuffle every epoch (default: batches in order).")] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="float64 or float32 (default: {dtype}).")] = None,
    data_seed: Annotated[str | None, typer.Option(
        "--data-seed", metavar="SEED|run", help="Seed of the data. Default: the dataset's own seed argument (0 "
        "unless the dataset spec says otherwise), the same data for every run seed, so seeds are paired. "
        "An integer draws every run's data with it; 'run' resamples the data with each run's seed (seeds then "
        "train one by one).")] = None,
    val_split: Annotated[str | None, typer.Option(
        "--val-split", metavar="F", help="Hold out this fraction of the training data as validation (0 <= F < 1; "
        "drawn once per experiment, the same for every configuration and seed; default 0: no validation).")] = None,
    eval_every: Annotated[str | None, typer.Option(
        "--eval-every", metavar="N", help="Every N epochs, evaluate loss and metrics on validation, test and "
        "training data and store them as histories by epoch (default 0: only at the end).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Experiment name (runs are added to it).")] = None,
    db: DbOption = None,
    jobs: Annotated[int | None, typer.Option("-j", "--jobs", help="Worker processes (default: cores).")] = None,
    no_vectorize: Annotated[bool, typer.Option("--no-vectorize", help="Run every run on its own.")] = False,
    group_by_config: Annotated[bool, typer.Option(
        "--group-by-config", help="Vectorise only the seeds of one configuration (the older grouping; by default "
                                  "grid points that differ only in numeric optimizer and schedule arguments train "
                                  "together).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars, no table.")] = False,
    wide: WideOption = False,
    executor: Annotated[str, typer.Option("--executor", help="local (processes here) or dask.")] = "local",
    scheduler: Annotated[
        str | None, typer.Option("--scheduler", help="Dask scheduler, e.g. tcp://host:8786 (default: a LocalCluster).")
    ] = None,
    resume: Annotated[
        str | None, typer.Option("--resume", help="Run again the unfinished runs of this experiment.", metavar="NAME")
    ] = None,
) -> None:
    """Run an experiment: every optimizer x lr x ... configuration over every seed, recorded in the store."""
    from expsvc.errors import ExpsvcError
    from expsvc.runner.api import Experiment
    from expsvc.runner.executors import make_executor

    if jobs is not None and jobs < 1:
        fail(f"--jobs: {jobs} is not allowed; expected a positive integer")
    try:
        runner = make_executor(executor, jobs=jobs, scheduler=scheduler)
    except ExpsvcError as err:
        fail(f"--executor: {err}" if executor not in ("local", "dask") else str(err))
    if resume is not None:
        grid = {"FILE": file, "--opt": opt, "--seeds": seeds, "--seed": seed, "--lr": lr, "--epochs": epochs,
                "--batch-size": batch_size, "--model": model, "--loss": loss, "--dataset": dataset,
                "--schedule": schedule, "--tol": tol, "--shuffle": shuffle, "--dtype": dtype, "--name": name,
                "--data-seed": data_seed, "--val-split": val_split, "--eval-every": eval_every}
        given = [flag for flag, value in grid.items() if value not in (None, [])]
        if given:
            fail(f"--resume runs the stored configurations again; it cannot be combined with {', '.join(given)}")
        _resume(resume, db, jobs, not no_vectorize, quiet, runner, wide, group_by_config)
        return
    if seeds is not None and seed:
        fail("--seeds and --seed exclude each other; give a count or pick seeds")
    values: dict[str, Any] = {
        "optimizer": opt or None,
        "seeds": list(seed) if seed else seeds,
        "lr": _numbers("lr", lr, integer=False, ranges=True),
        "epochs": _numbers("epochs", epochs, integer=True),
        "batch_size": _numbers("batch_size", batch_size, integer=True),
        "model": model or None,
        "loss": loss or None,
        "dataset": dataset or None,
        "schedule": schedule or None,
        "tol": _number("tol", tol, integer=False),
        "shuffle": shuffle,
        "dtype": dtype,
        "name": name,
        "data_seed": _data_seed(data_seed),
        "val_split": _number("val_split", val_split, integer=False),
        "eval_every": _number("eval_every", eval_every, integer=True),
    }
    values = {k: v for k, v in values.items() if v is not None}
    from expsvc.runner.plan import execute, from_spec

    try:
        experiment = Experiment.from_file(file, **values) if file else Experiment(**values)
        plan = from_spec(experiment.spec, db=db, vectorize=not no_vectorize, group_by_config=group_by_config,
                         jobs=jobs)
    except ExpsvcError as err:
        fail(str(err))
    result = _execute(runner, plan.bars(), quiet, lambda progress: execute(plan, executor=runner, progress=progress))
    _report(result, db, quiet, wide)


def _resume(name: str, db: str | None, jobs: int | None, vectorize: bool, quiet: bool, runner: Any,
            wide: bool = False, group_by_config: bool = False) -> None:
    """``expsvc run --resume NAME``: run again what did not finish, with the stored configs and seeds."""
    from expsvc.errors import ExpsvcError
    from expsvc.runner.plan import execute, from_store

    try:
        plan = from_store(name, db=db, vectorize=vectorize, group_by_config=group_by_config, jobs=jobs)
    except ExpsvcError as err:
        fail(str(err))
    total = sum(plan.counts.values())
    if not plan.runs:
        if not quiet:
            typer.echo(f"nothing to resume: all {total} runs of experiment {plan.experiment!r} ended ("
                       + ", ".join(f"{n} {s}" for s, n in sorted(plan.counts.items())) + ")")
        return
    if not quiet:
        typer.echo(f"resuming {len(plan.run_ids)} of {total} runs of experiment {plan.experiment!r}", err=True)
    result = _execute(runner, plan.bars(), quiet, lambda progress: execute(plan, executor=runner, progress=progress))
    _report(result, db, quiet, wide)


def _execute(runner: Any, bars: list[tuple[str, int]], quiet: bool, call: Any) -> Any:
    """Start the executor, run ``call(progress)`` (with progress bars on a terminal), stop the executor."""
    from expsvc.errors import ExpsvcError

    show = not quiet and sys.stderr.isatty()
    try:
        with _started(runner), _stopping_notice():
            return _with_progress(bars, call) if show else call(None)
    except KeyboardInterrupt:
        typer.echo("interrupted: unfinished runs are marked 'interrupted'; logged steps are kept", err=True)
        raise typer.Exit(130) from None
    except ExpsvcError as err:
        fail(str(err))


@contextmanager
def _stopping_notice() -> Iterator[None]:
    """At the first Ctrl-C, say at once that expsvc is stopping (the clean-up can take a moment)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stopping(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # one notice; the executor handles the rest
        typer.echo("stopping: interrupting the running groups; queued groups will not start...", err=True)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, stopping)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _started(runner: Any) -> Iterator[None]:
    """Start the executor (connect to Dask...) before any run is recorded, and stop it at the end."""
    start = getattr(runner, "start", None)
    if start is not None:
        start()
    try:
        yield
    finally:
        close = getattr(runner, "close", None)
        if close is not None:
            close()


def _report(result: Any, db: str | None, quiet: bool, wide: bool = False) -> None:
    if not quiet:
        _summary(result, wide)
        from expsvc.analysis.render import prose

        hint = "expsvc compare" + (f" --db {_shown(db)}" if db else "")
        text = (f"{sum(result.statuses().values())} runs in experiment {result.experiment!r}: "
                + ", ".join(f"{n} {s}" for s, n in sorted(result.statuses().items())) + f". Next: {hint}")
        typer.echo(prose(text, output_width(wide)))
    if result.statuses().get("failed"):
        _failure_reasons(result)
        raise typer.Exit(1)


def _failure_reasons(result: Any) -> None:
    """One line per distinct reason runs failed (the traceback stays in ``expsvc show``)."""
    from expsvc.errors import one_line

    reasons: dict[str, list[str]] = {}
    for group in result.groups:
        for o in group.outcomes:
            if o.status == "failed":
                reasons.setdefault(o.error or "unknown error", []).append(o.run_id)
    total = sum(len(g.outcomes) for g in result.groups)
    for reason, ids in reasons.items():
        typer.echo(one_line(f"error: {len(ids)} of {total} runs failed: {reason} "
                            f"(traceback: expsvc show {ids[0][:8]})"), err=True)


def _shown(db: str) -> str:
    """The URL for the next-step hint, password hidden."""
    from expsvc.errors import ExpsvcError
    from expsvc.store.engine import display_url

    try:
        return display_url(db)
    except ExpsvcError:
        return db


def _with_progress(bars: list[tuple[str, int]], call: Any) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console(stderr=True), transient=True) as bar:
        ids = [bar.add_task(description, total=total) for description, total in bars]

        def progress(index: int, epochs_done: int, active: int) -> None:
            bar.update(ids[index], completed=epochs_done)

        result = call(progress)
        for task_id in ids:
            bar.update(task_id, completed=bar.tasks[task_id].total)
    return result


def _help_defaults() -> dict[str, str]:
    """The ``{key}`` values of ``run``'s help: the spec's defaults (lists joined with commas)."""
    from expsvc.runner.spec import DEFAULTS

    return {k: ", ".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in DEFAULTS.items()}


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    HELP_DEFAULTS["run"] = _help_defaults
