"""The ``expsvc`` command line: a thin Typer layer (parse, call, print).

Commands live in small modules (``run``, ``analysis``, this file's plugin and database commands); plugins
add theirs through the ``register_commands`` hook.  Every user error is one line on stderr, exit code 2.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Annotated, Any

import typer

from expsvc.cli.common import DbOption, PlainValuesGroup, WideOption, console, fail, output_width

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


def _version(value: bool) -> None:
    if value:
        from expsvc import __version__

        typer.echo(f"expsvc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    plugins_dir: Annotated[
        str | None,
        typer.Option("--plugins-dir", help="Folder of local plugin .py files (default: ./plugins)."),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print expsvc's version and exit.")
    ] = False,
) -> None:
    """expsvc: plugin-based experiments with tracked runs."""
    if plugins_dir is not None:
        from expsvc.errors import path_problem

        problem = path_problem(plugins_dir, "a directory", directory=True)
        if problem is not None:
            fail(f"--plugins-dir: {plugins_dir!r} {problem}")


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


def _signature(cls: type) -> list[str]:
    """A component's arguments as ``name=default`` (``name`` when required)."""
    import inspect

    try:
        params = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name if p.default is p.empty else f"{p.name}={p.default!r}" for p in params
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


@app.command()
def components(
    what: Annotated[
        str | None, typer.Argument(metavar="[KIND|NAME]", help="A kind (layer, activation, loss, optimizer, "
                                   "scheduler, dataset, metric) to list, or a component's name to describe.")
    ] = None,
    wide: WideOption = False,
) -> None:
    """List registered components by kind with their arguments and defaults, or describe one (`components moons`)."""
    from expsvc.analysis.render import text_table
    from expsvc.errors import did_you_mean
    from expsvc.plugins import get_system
    from expsvc.registry import KINDS

    system = get_system()
    if what is not None and what not in KINDS:
        found = [(k, reg) for k in KINDS for reg in system.registry.registrations(k)
                 if what == reg.name or what in reg.aliases]
        if not found:
            names = sorted({n for k in KINDS for n in system.registry.names(k)})
            fail(f"unknown kind or component {what!r}{did_you_mean(what, [*KINDS, *names])}; kinds: "
                 f"{', '.join(KINDS)} (or a component's name, see `expsvc components`)")
        _describe_components(system, found, output_width(wide))
        return
    rows = []
    for k in [what] if what else list(KINDS):
        for reg in sorted(system.registry.registrations(k), key=lambda r: r.name):
            info = system.provenance(reg)
            name = reg.name + (f" ({', '.join(reg.aliases)})" if reg.aliases else "")
            rows.append([k, name, ", ".join(_signature(reg.cls)) or "-", reg.plugin, info.version or "-"])
    typer.echo(text_table(("kind", "name", "arguments (defaults)", "plugin", "version"), rows,
                          width=output_width(wide), drop=("version", "plugin"),
                          wrap={"name": None, "arguments (defaults)": 12, "plugin": None},
                          squeeze={"name": 8, "plugin": 8}))


def _describe_components(system: Any, found: list[tuple[str, Any]], width: int | None) -> None:
    """``expsvc components NAME``: kind, aliases, plugin, version, arguments with defaults, documentation."""
    import inspect

    from expsvc.analysis.render import prose

    def say(text: str, indent: str = "") -> list[str]:
        return prose(text, width, indent + "  ", first=indent).splitlines()

    out: list[str] = []
    for kind, reg in found:
        info = system.provenance(reg)
        out += say(f"{reg.name} ({kind})" + (f", also {', '.join(reg.aliases)}" if reg.aliases else ""))
        out += say(f"plugin {reg.plugin}, package {info.package or '-'}, version {info.version or '-'}", "  ")
        args = _signature(reg.cls)
        out += say("arguments: " + (", ".join(args) if args else "none"), "  ")
        doc = inspect.getdoc(reg.cls) or ""
        for paragraph in [p for p in doc.split("\n\n") if p.strip()][:3]:
            out += ["", *say(" ".join(paragraph.split()), "  ")]
        out.append("")
    typer.echo("\n".join(out).rstrip())


GRADCHECK_MAX_ENTRIES = 100_000
"""Largest number of entries (parameters and input) gradcheck differentiates numerically, one by one."""


@app.command()
def gradcheck(
    name: Annotated[str, typer.Argument(help="A layer, activation or loss spec, e.g. 'leaky_relu(0.2)'.")],
    tol: Annotated[float, typer.Option(help="Largest allowed relative error.", min=0.0)] = 1e-7,
    seed: Annotated[int, typer.Option(help="Seed of the random inputs.", min=0, max=2**31 - 1)] = 0,
    shape: Annotated[str | None, typer.Option(
        help="Per-sample input shape of a layer, e.g. '3,8,8' (channels, height, width) or '5'; "
             "default: the layer's own example shape.")] = None,
) -> None:
    """Check a component's backward against central differences (float64); exit 1 on failure."""
    from expsvc.core import Layer, ShapeError
    from expsvc.core import gradcheck as check
    from expsvc.errors import ExpsvcError
    from expsvc.plugins import get_system
    from expsvc.registry import plugin_code
    from expsvc.specs import parse

    in_shape: tuple[int, ...] | None = None
    if shape is not None:
        parts = [p.strip() for p in shape.strip("()").split(",") if p.strip()]
        if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
            fail(f"--shape {shape!r} is not a shape: give positive sizes separated by commas, e.g. '3,8,8'")
        in_shape = tuple(int(p) for p in parts)
    system = get_system()
    kinds = ("layer", "activation", "loss")
    try:
        spec = parse(name, "gradcheck")
        other = [k for k in ("optimizer", "scheduler", "dataset", "metric") if spec.name in system.registry.entries[k]]
        if other and not any(spec.name in system.registry.entries[k] for k in kinds):
            kind = ("an " if other[0][0] in "aeiou" else "a ") + other[0]
            fail(f"gradcheck: {spec.name!r} is {kind}, which has no backward to check; "
                 f"`expsvc check {name!r}` runs its conformance checks")
        reg = system.registry.resolve(kinds, spec.name)
        component = system.registry.create(kinds, spec, "gradcheck")
        if in_shape is not None and not isinstance(component, Layer):
            fail(f"--shape applies to layers and activations; {name!r} is a loss")
        kwargs: dict[str, object] = {"seed": seed, "tol": tol}
        entries = 0
        if isinstance(component, Layer):
            from expsvc.runner.budget import model_shapes

            probe = in_shape or getattr(component, "gradcheck_shape", None) or (4,)
            with plugin_code([(component, reg, spec)], "gradcheck", "build", passthrough=(ShapeError,)):
                entries = model_shapes([component], probe).params + 2 * 3 * math.prod(probe)
            if in_shape is not None:
                kwargs["in_shape"] = in_shape
        if entries > GRADCHECK_MAX_ENTRIES:
            raise ExpsvcError(f"gradcheck {name!r}: {entries:,} parameters and inputs; numeric differentiation "
                              f"takes one pass per entry, at most {GRADCHECK_MAX_ENTRIES:,} allowed")
        with plugin_code([(component, reg, spec)], "gradcheck", "gradcheck", passthrough=(ShapeError,)):
            result = check(component, **kwargs)
    except ShapeError as err:
        fail(f"gradcheck {name}: {err}")
    except ExpsvcError as err:
        fail(str(err))
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


_REGISTERED: list[bool] = []


def _register_builtin_commands() -> None:
    if _REGISTERED:
        return
    from expsvc.cli import analysis, db, experiments, plugin_kit, report, run, tune

    run.register(app)
    tune.register(app)
    plugin_kit.register(app)
    analysis.register(app)
    report.register(app)
    experiments.register(app)
    db.register(db_app)
    _REGISTERED.append(True)


def build_app() -> typer.Typer:
    """The app with every built-in command (what ``main`` runs; tests invoke it in-process)."""
    _register_builtin_commands()
    return app


def _prescan_plugins_dir(argv: list[str]) -> None:
    """``--plugins-dir`` must be known before plugin commands are added, i.e. before Typer parses."""
    for i, arg in enumerate(argv):
        if arg == "--plugins-dir" and i + 1 < len(argv):
            os.environ["EXPSVC_PLUGINS_DIR"] = argv[i + 1]
        elif arg.startswith("--plugins-dir="):
            os.environ["EXPSVC_PLUGINS_DIR"] = arg.split("=", 1)[1]


def main(argv: list[str] | None = None) -> None:
    """Run the command line (the ``expsvc`` console script enters through :mod:`expsvc.__main__`)."""
    from expsvc import interrupts
    from expsvc.errors import ExpsvcError, one_line

    argv = list(sys.argv[1:] if argv is None else argv)
    _prescan_plugins_dir(argv)
    _register_builtin_commands()
    interrupts.install()  # from here on Ctrl-C raises KeyboardInterrupt: runs are marked, commands say so
    from expsvc.plugins import get_system, may_add_commands

    if may_add_commands():
        try:
            get_system().add_commands(app)
        except ExpsvcError as err:
            typer.echo(f"expsvc: plugins: {one_line(str(err))}", err=True)
    app(args=argv, prog_name="expsvc")
