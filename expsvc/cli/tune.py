"""``expsvc tune``: a fair optimizer comparison — tune each optimizer on validation data, confirm its choice on
fresh seeds, compare on test data (a study: two run plans, see :mod:`expsvc.runner.study`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from expsvc.cli.common import DbOption, ForceOption, WideOption, check_outputs, fail, output_width
from expsvc.cli.run import _data_seed, _execute, _number, _numbers


def tune(
    file: Annotated[str | None, typer.Argument(help="A TOML study file (flags override its values).")] = None,
    opt: Annotated[list[str] | None, typer.Option(
        "--opt", help="Optimizer to tune; repeat for each (its own numeric arguments may be grids, e.g. "
                      "'sgd(momentum=[0.8, 0.9])'; default: mini_bgd, adamw).")] = None,
    lr: Annotated[list[str] | None, typer.Option(
        "--lr", help="Learning-rate grid: repeat, or a range such as 'logspace(1e-4, 1, 9)'.")] = None,
    tune_seeds: Annotated[str | None, typer.Option(
        "--tune-seeds", metavar="T", help="Tuning seeds 0..T-1 per grid point (default: 3).")] = None,
    seeds: Annotated[str | None, typer.Option(
        "--seeds", metavar="N", help="Confirmation seeds T..T+N-1, fresh (default: 10).")] = None,
    seed: Annotated[list[int] | None, typer.Option(
        "--seed", help="A confirmation seed (repeatable; must not be a tuning seed).")] = None,
    select: Annotated[str | None, typer.Option(
        "--select", metavar="METRIC", help="Validation metric choosing each optimizer's point: 'min(val_loss)' "
        "(default: each run's lowest validation loss), 'max(val_accuracy)', 'val_loss' (the last value); never a "
        "test metric.")] = None,
    val_split: Annotated[str | None, typer.Option(
        "--val-split", metavar="F", help="Fraction of the training data held out as validation (default: 0.2).")
    ] = None,
    eval_every: Annotated[str | None, typer.Option(
        "--eval-every", metavar="N", help="Evaluate every N epochs (default: 1).")] = None,
    epochs: Annotated[str | None, typer.Option("--epochs", metavar="N", help="Maximum epochs (default: 200).")
                      ] = None,
    batch_size: Annotated[str | None, typer.Option("--batch-size", metavar="N", help="Batch size (default: 50).")
                          ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Layers (default: the seed net).")] = None,
    loss: Annotated[str | None, typer.Option("--loss", help="Loss spec (default: bce_with_logits).")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Dataset spec (default: points).")] = None,
    schedule: Annotated[str | None, typer.Option("--schedule", help="LR schedule (default: constant).")] = None,
    tol: Annotated[str | None, typer.Option("--tol", metavar="X", help="Early-stop tolerance (default: 1e-5).")
                   ] = None,
    shuffle: Annotated[bool | None, typer.Option(
        "--shuffle/--no-shuffle", help="Reshuffle every epoch (default: batches in order).")] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="float64 or float32.")] = None,
    data_seed: Annotated[str | None, typer.Option(
        "--data-seed", metavar="SEED|run", help="Seed of the data, as for `expsvc run`.")] = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="Study name (its experiments are NAME-tuning and NAME-confirmation).")] = None,
    plot: Annotated[str | None, typer.Option(
        "--plot", metavar="FILE", help="Also draw the learning-rate sensitivity to this PNG.")] = None,
    force: ForceOption = False,
    db: DbOption = None,
    jobs: Annotated[int | None, typer.Option("-j", "--jobs", help="Worker processes (default: cores).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or phase lines (the answer and "
                                                              "the warnings still print).")] = False,
    wide: WideOption = False,
    resume: Annotated[str | None, typer.Option(
        "--resume", metavar="NAME", help="Finish an interrupted study: its unfinished runs, then what is left.")
    ] = None,
) -> None:
    """Tune each optimizer on validation data, confirm its choice on fresh seeds, compare on test data."""
    from expsvc.errors import ExpsvcError
    from expsvc.runner import study as studies

    if jobs is not None and jobs < 1:
        fail(f"--jobs: {jobs} is not allowed; expected a positive integer")
    given = {"FILE": file, "--opt": opt, "--lr": lr, "--tune-seeds": tune_seeds, "--seeds": seeds, "--seed": seed,
             "--select": select, "--val-split": val_split, "--eval-every": eval_every, "--epochs": epochs,
             "--batch-size": batch_size, "--model": model, "--loss": loss, "--dataset": dataset,
             "--schedule": schedule, "--tol": tol, "--shuffle": shuffle, "--dtype": dtype, "--data-seed": data_seed,
             "--name": name}
    if plot is not None:
        check_outputs(db, force, ("--plot", plot, "png"))
    if resume is not None:
        flags = [flag for flag, value in given.items() if value not in (None, [])]
        if flags:
            fail(f"--resume runs the stored study again; it cannot be combined with {', '.join(flags)}")
        try:
            spec = _stored(resume, db)
        except ExpsvcError as err:
            fail(str(err))
    else:
        if seeds is not None and seed:
            fail("--seeds and --seed exclude each other; give a count or pick confirmation seeds")
        values: dict[str, Any] = {
            "optimizer": opt or None, "lr": _numbers("lr", lr, integer=False, ranges=True),
            "tune_seeds": _number("tune_seeds", tune_seeds, integer=True),
            "seeds": list(seed) if seed else _number("seeds", seeds, integer=True), "select": select,
            "val_split": _number("val_split", val_split, integer=False),
            "eval_every": _number("eval_every", eval_every, integer=True),
            "epochs": _number("epochs", epochs, integer=True),
            "batch_size": _number("batch_size", batch_size, integer=True),
            "model": model, "loss": loss, "dataset": dataset, "schedule": schedule,
            "tol": _number("tol", tol, integer=False), "shuffle": shuffle, "dtype": dtype,
            "data_seed": _data_seed(data_seed), "name": name,
        }
        values = {k: v for k, v in values.items() if v is not None}
        try:
            if file:
                from expsvc.runner.spec import load_toml

                values = {**load_toml(Path(file)), **values}
            spec = studies.from_values(values, source=Path(file).name if file else "tune")
        except ExpsvcError as err:
            fail(str(err))
    _run_study(spec, db, jobs, quiet, wide, plot, resume is not None)


def _stored(name: str, db: str | None) -> Any:
    from expsvc.runner.study import StudySpec
    from expsvc.store import RunStore
    from expsvc.store.studies import get_study

    with RunStore.open(db, create=False) as store:
        return StudySpec.from_dict(get_study(store, name).spec)


def _run_study(spec: Any, db: str | None, jobs: int | None, quiet: bool, wide: bool, plot: str | None,
               resuming: bool) -> None:
    """The study's phases (:mod:`expsvc.runner.study`) with progress bars: tuning, selection, confirmation,
    then the answer."""
    from expsvc.cli.analysis import _errors
    from expsvc.runner import study as studies
    from expsvc.runner.executors import make_executor
    from expsvc.store import RunStore

    runner = make_executor("local", jobs=jobs)
    with _errors():
        tuning = studies.start(spec, db=db, jobs=jobs, resuming=resuming)
    _phase(tuning, runner, quiet, spec, "tuning", db,
           f"{len(spec.optimizers)} optimizer(s) x grid x {len(spec.tune_seeds)} tuning seeds")
    with _errors():
        selection, confirmation = studies.choose(spec, db=db, jobs=jobs)
    _phase(confirmation, runner, quiet, spec, "confirmation", db,
           f"{len(selection.choices)} choice(s) x seeds {spec.seeds[0]}..{spec.seeds[-1]}")
    with _errors(), RunStore.open(db, create=False) as store:
        _answer(spec, selection, studies.finish(spec, store), wide, plot)


def _phase(plan: Any, runner: Any, quiet: bool, spec: Any, role: str, db: str | None, what: str) -> None:
    """Execute one phase's plan (if any; ``what`` says what it runs) and link its experiment to the study, even
    when interrupted."""
    from expsvc.runner import study as studies
    from expsvc.runner.plan import execute

    if plan is None:
        return
    if not quiet:
        typer.echo(f"study {spec.name!r}, {role}: {len(plan.runs)} runs ({what})", err=True)
    try:
        result = _execute(runner, plan.bars(), quiet, lambda progress: execute(plan, executor=runner,
                                                                                progress=progress))
    finally:
        studies.link(spec, role, db)
    if not quiet:  # no per-phase table: the tuning runs' test metrics are not shown before the answer
        typer.echo(f"{role}: {sum(result.statuses().values())} runs in experiment {result.experiment!r}: "
                   + ", ".join(f"{n} {s}" for s, n in sorted(result.statuses().items())), err=True)


def _answer(spec: Any, selection: Any, result: Any, wide: bool, plot: str | None) -> None:
    """The sensitivity table, the selection and its warnings, and compare's statistics on the test set."""
    from expsvc.analysis import render, sensitivity

    width = output_width(wide)
    typer.echo(f"study {spec.name!r}: learning-rate sensitivity on validation data "
               f"({len(spec.tune_seeds)} tuning seeds)")
    typer.echo(sensitivity.table(selection, spec.select, width=width))
    typer.echo(render.prose(f"selection rule: {selection.rule}", width, "  "))
    for c in selection.choices:
        settings = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in c.settings.items())
        typer.echo(f"chosen: {c.optimizer}: {settings} ({spec.select} {c.score:.4g})")
    for w in selection.warnings:
        typer.echo(render.prose(f"warning: {w}", width, "  "), err=True)
    typer.echo(f"\nanswer: confirmation runs (seeds {spec.seeds[0]}..{spec.seeds[-1]}) on test data")
    typer.echo(render.compare_table(result, width=width))
    if plot:
        info = sensitivity.plot(selection, plot, spec.select, title=f"{spec.name}: learning-rate sensitivity "
                                f"({len(spec.tune_seeds)} tuning seeds, mean ± 95 % t)",
                                lower_is_better=spec.metric.lower_is_better)
        typer.echo(f"wrote {info.path} ({info.lines} lines, {info.points} points)", err=True)


def register(app: typer.Typer) -> None:
    app.command("tune")(tune)
