"""The ``expsvc`` command line: a thin Typer layer (parse, call, print).

Commands live in small modules (``run``, ``analysis``, this file's plugin and database commands); plugins
add theirs through the ``register_commands`` hook.  Every user error is one line on stderr, exit code 2.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

import typer

from expsvc.cli.common import DbOption, PlainValuesGroup, console, fail

app = typer.Typer(
    name="expsvc",
    cls=PlainValuesGroup,
    help="Run experiments over optimizers x seeds x hyper-parameters, track them, compare them honestly.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
db_app = typer.Typer(
    help="Database schema: upgrade to the current revision, show the revision.",
    cls=PlainValuesGroup,
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(db_app, name="db")


@app.callback()
def _root(
    plugins_dir: Annotated[
        str | None,
        typer.Option("--plugins-dir", help="Folder of local plugin .py files (default: ./plugins)."),
    ] = None,
) -> None:
    """expsvc: plugin-based experiments with tracked runs."""


@app.command()
def plugins(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """List plugins: source (builtin, package, file), version, hooks, components, status and error."""
    from expsvc.plugins import get_system

    infos = get_system().plugins
    if as_json:
        typer.echo(json.dumps([p.as_dict() for p in infos], indent=2))
        return
    from rich.table import Table

    table = Table("plugin", "source", "version", "components", "status")
    for p in infos:
        comps = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in p.components.items())
        status = p.status if p.status == "ok" else f"[red]{p.status}[/red]: {p.error}"
        table.add_row(p.name, p.source, p.version or "-", comps or "-", status)
    console().print(table)


@app.command()
def components(
    kind: Annotated[
        str | None, typer.Argument(help="layer, activation, loss, optimizer, scheduler, dataset or metric.")
    ] = None,
) -> None:
    """List registered components by kind, with the plugin that provides each and its arguments."""
    from expsvc.errors import did_you_mean
    from expsvc.plugins import get_system
    from expsvc.registry import KINDS, allowed_arguments

    if kind is not None and kind not in KINDS:
        fail(f"unknown kind {kind!r}{did_you_mean(kind, KINDS)}; allowed: {', '.join(KINDS)}")
    system = get_system()
    from rich.table import Table

    table = Table("kind", "name", "arguments", "plugin", "version")
    for k in [kind] if kind else list(KINDS):
        for reg in sorted(system.registry.registrations(k), key=lambda r: r.name):
            info = system.provenance(reg)
            name = reg.name + (f" ({', '.join(reg.aliases)})" if reg.aliases else "")
            table.add_row(k, name, ", ".join(allowed_arguments(reg.cls)) or "-", reg.plugin, info.version or "-")
    console().print(table)


@app.command()
def gradcheck(
    name: Annotated[str, typer.Argument(help="A layer, activation or loss spec, e.g. 'leaky_relu(0.2)'.")],
    tol: Annotated[float, typer.Option(help="Largest allowed relative error.")] = 1e-7,
    seed: Annotated[int, typer.Option(help="Seed of the random inputs.")] = 0,
    shape: Annotated[str | None, typer.Option(
        help="Per-sample input shape of a layer, e.g. '3,8,8' (channels, height, width) or '5'; "
             "default: the layer's own example shape.")] = None,
) -> None:
    """Check a component's backward against central differences (float64); exit 1 on failure."""
    from expsvc.core import Layer, ShapeError
    from expsvc.core import gradcheck as check
    from expsvc.errors import ExpsvcError
    from expsvc.plugins import get_system

    try:
        component = get_system().registry.create(("layer", "activation", "loss"), name, "gradcheck")
    except ExpsvcError as err:
        fail(str(err))
    kwargs: dict = {"seed": seed, "tol": tol}
    if shape is not None:
        parts = [p.strip() for p in shape.strip("()").split(",") if p.strip()]
        if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
            fail(f"--shape {shape!r} is not a shape: give positive sizes separated by commas, e.g. '3,8,8'")
        if not isinstance(component, Layer):
            fail(f"--shape applies to layers and activations; {name!r} is a loss")
        kwargs["in_shape"] = tuple(int(p) for p in parts)
    try:
        result = check(component, **kwargs)
    except ShapeError as err:
        fail(f"gradcheck {name}: {err}")
    for key, err in result.errors.items():
        typer.echo(f"  {key:<28} max relative error {err:.3e}")
    verdict = "passed" if result.passed else "FAILED"
    typer.echo(f"gradcheck {name}: {verdict} (max {result.max_error:.3e}, tolerance {tol:.0e}, "
               f"allclose {'yes' if result.allclose else 'no'})")
    if not result.passed:
        raise typer.Exit(1)


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None) -> None:
    """Create the database, or upgrade it to this expsvc's schema (SQLite files are backed up first)."""
    from expsvc.errors import ExpsvcError
    from expsvc.store import default_url, migrate

    url = db or default_url()
    try:
        before, after = migrate.upgrade(url)
    except ExpsvcError as err:
        fail(str(err))
    typer.echo(f"{url}: {before or 'empty'} -> {after}" if before != after else f"{url}: already at {after}")


@db_app.command("current")
def db_current(db: DbOption = None) -> None:
    """Show the database's schema revision and this expsvc's head revision."""
    from expsvc.errors import ExpsvcError
    from expsvc.store import default_url, migrate

    url = db or default_url()
    try:
        current = migrate.current(url)
    except ExpsvcError as err:
        fail(str(err))
    typer.echo(f"{url}: revision {current or 'none'} (head {migrate.head()})")


def _register_builtin_commands() -> None:
    from expsvc.cli import analysis, db, run

    run.register(app)
    analysis.register(app)
    db.register(db_app)


def _prescan_plugins_dir(argv: list[str]) -> None:
    """``--plugins-dir`` must be known before plugin commands are added, i.e. before Typer parses."""
    for i, arg in enumerate(argv):
        if arg == "--plugins-dir" and i + 1 < len(argv):
            os.environ["EXPSVC_PLUGINS_DIR"] = argv[i + 1]
        elif arg.startswith("--plugins-dir="):
            os.environ["EXPSVC_PLUGINS_DIR"] = arg.split("=", 1)[1]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``expsvc`` console script."""
    from expsvc.errors import ExpsvcError

    argv = list(sys.argv[1:] if argv is None else argv)
    _prescan_plugins_dir(argv)
    _register_builtin_commands()
    from expsvc.plugins import get_system, may_add_commands

    if may_add_commands():
        try:
            get_system().add_commands(app)
        except ExpsvcError as err:
            typer.echo(f"expsvc: plugins: {err}", err=True)
    try:
        app(args=argv, prog_name="expsvc")
    except ExpsvcError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
