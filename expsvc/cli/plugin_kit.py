"""The plugin author's commands: ``expsvc check SPEC`` (the conformance checks of :mod:`expsvc.testing` on an
installed component) and ``expsvc plugin new NAME`` (a package scaffold, :mod:`expsvc.scaffold`)."""

from __future__ import annotations

from typing import Annotated

import typer

from expsvc.cli.common import PlainValuesGroup, fail

plugin_app = typer.Typer(
    help="Write plugins: `plugin new NAME` makes a package that installs and passes its own tests.",
    cls=PlainValuesGroup,
    no_args_is_help=True,
    rich_markup_mode=None,
)

KINDS_TEXT = "layer, activation, loss, optimizer, scheduler, dataset, metric"
CHECK_MAX_ENTRIES = 100_000
"""Largest layer (parameters and input entries) ``check`` differentiates numerically, one entry at a time."""


def check(
    name: Annotated[str, typer.Argument(metavar="SPEC",
                                        help="A registered component's spec, e.g. 'dropout(0.3)' or 'lion'.")],
    kind: Annotated[str | None, typer.Option(
        help=f"The component's kind when its name is registered in several ({KINDS_TEXT}).")] = None,
    shape: Annotated[str | None, typer.Option(
        help="Per-sample input shape of a layer, e.g. '3,8,8' or '5'; default: the layer's own example shape.")
    ] = None,
) -> None:
    """Run the conformance checks of a component's kind (gradients, replica independence, dtype, determinism,
    inputs untouched, shapes, pickling, arguments...); one line per property, exit 1 if any fails."""
    from expsvc.errors import ExpsvcError
    from expsvc.plugins import get_system
    from expsvc.registry import KINDS, plugin_code
    from expsvc.specs import parse
    from expsvc.testing import run_checks

    if kind is not None and kind not in KINDS:
        fail(f"--kind {kind!r} is not a kind; kinds: {KINDS_TEXT}")
    in_shape = _shape(shape)
    system = get_system()
    try:
        spec = parse(name, "check")
        kinds = [kind] if kind else list(KINDS)
        reg = system.registry.resolve(kinds, spec.name)
        if in_shape is not None and reg.kind not in ("layer", "activation"):
            fail(f"--shape applies to layers and activations; {name!r} is a {reg.kind}")
        component = system.registry.create(reg.kind, spec, "check")
        with plugin_code([(component, reg, spec)], "check", "the checks"):
            _refuse_large(component, reg.kind, in_shape, name)
            findings = run_checks(reg.kind, str(spec), in_shape=in_shape)
    except ExpsvcError as err:
        fail(str(err))
    width = max(len(f.property) for f in findings)
    for f in findings:
        verdict = "ok" if f.passed and not f.skipped else "skipped" if f.passed else "FAILED"
        detail = f" ({f.skipped})" if f.skipped else f": {f.problem}" if f.problem else ""
        typer.echo(f"  {f.property:<{width}}  {verdict}{detail}")
    failed = [f for f in findings if not f.passed]
    typer.echo(f"check {name} ({reg.kind}, plugin {reg.plugin}): "
               + (f"FAILED {len(failed)} of {len(findings)}" if failed else f"passed {len(findings)}"))
    for f in failed:
        typer.echo(f"  fix {f.property}: {f.message().split('. Fix: ', 1)[1]}")
    if failed:
        raise typer.Exit(1)


def _shape(shape: str | None) -> tuple[int, ...] | None:
    """``'3,8,8'`` as ``(3, 8, 8)``; anything else is one line, exit 2."""
    if shape is None:
        return None
    parts = [p.strip() for p in shape.strip("()").split(",") if p.strip()]
    if not parts or not all(p.isdigit() and 0 < int(p) <= 10_000 for p in parts):
        fail(f"--shape {shape!r} is not a shape: give sizes from 1 to 10000 separated by commas, e.g. '3,8,8'")
    return tuple(int(p) for p in parts)


def _refuse_large(component: object, kind: str, in_shape: tuple[int, ...] | None, name: str) -> None:
    """Refuse, before any work, a layer too large to differentiate numerically or a dataset over the memory
    budget (the checks load it several times)."""
    import math

    from expsvc.errors import ExpsvcError
    from expsvc.runner.budget import check_memory, dataset_bytes, model_shapes

    if kind in ("layer", "activation"):
        probe = in_shape or getattr(component, "gradcheck_shape", None) or (4,)
        entries = model_shapes([component], probe).params + 2 * 4 * math.prod(probe)
        if entries > CHECK_MAX_ENTRIES:
            raise ExpsvcError(f"check {name!r}: {entries:,} parameters and inputs; numeric differentiation takes "
                              f"one pass per entry, at most {CHECK_MAX_ENTRIES:,} allowed")
    if kind == "dataset":
        check_memory(f"dataset {name!r}", dataset_bytes(component))


def new(
    plugin_name: Annotated[str, typer.Argument(
        metavar="NAME", help="The plugin's name: package expsvc-NAME, module expsvc_NAME, component NAME "
                             "(lower-case letters, digits, underscores).")],
    kind: Annotated[str, typer.Option(help=f"The kind of the example component ({KINDS_TEXT}).")] = "layer",
    folder: Annotated[str | None, typer.Option(
        "--dir", metavar="DIR", help="Folder to create (must not exist or be empty; default ./expsvc-NAME).")
    ] = None,
) -> None:
    """Create a plugin package: pyproject.toml with the entry point, a module with a working example of the
    kind, tests using expsvc.testing, a README.  Never overwrites a file."""
    from pathlib import Path

    from expsvc.errors import ExpsvcError
    from expsvc.scaffold import SCAFFOLD_KINDS, check_name, default_dir, write

    name = plugin_name
    try:
        check_name(name)
        if kind not in SCAFFOLD_KINDS:
            raise ExpsvcError(f"--kind {kind!r} is not a kind; kinds: {KINDS_TEXT}")
        if folder is not None and not folder.strip():
            raise ExpsvcError("--dir: give a folder name")
        _refuse_taken(name, kind)
        target = Path(folder) if folder is not None else default_dir(name)
        written = write(target, name, kind)
    except ExpsvcError as err:
        fail(str(err))
    typer.echo(f"created {target}/ with the {kind} {name!r}: " + ", ".join(str(p.relative_to(target))
                                                                          for p in written))
    typer.echo(f"next: pip install -e {target} && pytest {target}")


def _refuse_taken(name: str, kind: str) -> None:
    """A name an installed plugin already registers in that kind would conflict once installed."""
    from expsvc.errors import ExpsvcError
    from expsvc.plugins import get_system

    kinds = ("layer", "activation") if kind in ("layer", "activation") else (kind,)
    for k in kinds:
        regs = get_system().registry.entries[k].get(name)
        if regs:
            raise ExpsvcError(f"{k} {name!r} is already registered by plugin {regs[0].plugin!r}; choose another "
                              "name (two plugins with one name conflict)")


def register(app: typer.Typer) -> None:
    """Add ``check`` and the ``plugin`` group to the command line."""
    app.command()(check)
    plugin_app.command("new")(new)
    app.add_typer(plugin_app, name="plugin")
