"""Helpers shared by the CLI modules: one-line errors, the store option, output."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, NoReturn, get_args, get_origin

import typer
from typer.core import TyperGroup

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="SQLAlchemy URL of the store (default: $EXPSVC_DB or sqlite:///experiments.db)."),
]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code`` (no traceback)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def open_store(db: str | None, *, create: bool = False) -> Any:
    """Open the run store for ``db`` (or the default), turning store errors into one-line failures."""
    from expsvc.errors import ExpsvcError
    from expsvc.store import RunStore

    try:
        return RunStore.open(db or os.environ.get("EXPSVC_DB") or None, create=create)
    except ExpsvcError as err:
        fail(str(err))


WideOption = Annotated[
    bool, typer.Option("--wide", help="Every column at full width, whatever the terminal's width.")]


def output_width(wide: bool = False) -> int | None:
    """How many columns a table may use: None (no limit) with ``--wide``; else ``$COLUMNS``; else the
    terminal's width; and no limit when standard output is not a terminal (a file or a pipe gets one whole
    line per row, so it stays easy to parse; set ``COLUMNS`` to fit it anyway)."""
    if wide:
        return None
    env = os.environ.get("COLUMNS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    import shutil
    import sys

    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


_PLAIN_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")


class _PlainValues:
    """Typer's value coercion for one parameter, with the everyday cases answered without pydantic.

    Recent typer versions coerce every parameter of the invoked command through a pydantic ``TypeAdapter``
    built on first use, even the unset ones; importing pydantic and building those adapters costs about
    70 ms of every command's start-up (``expsvc runs`` has 0.5 s in all).  Here an unset value, text for a
    ``str`` parameter, repeated text for a ``list[str]`` one, a default that already has the parameter's
    type and a plain decimal for an ``int`` are returned as pydantic would return them; anything else goes
    to typer's own coercion (built lazily, as typer does), so values and error messages stay typer's.
    """

    __slots__ = ("_full", "_param")

    def __init__(self, param: Any) -> None:
        self._param = param
        self._full: Any = None

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        """The parameter's value (typer's ``RuntimeParam.coerce`` contract)."""
        multiple = param.multiple or param.nargs == -1
        if value is None:
            return () if multiple else None
        desc = self._param.type_descriptor
        info = desc.parameter_info
        plain = (param.nargs == 1 or multiple) and info.parser is None and desc.file_annotation is None
        if plain and not desc.is_path:
            ann = desc.annotation
            if not multiple:
                if type(value) is ann and ann in (str, int, float) and info.min is None and info.max is None:
                    return value
                if ann is int and type(value) is str and info.min is None and info.max is None \
                        and _PLAIN_INT.fullmatch(value):
                    return int(value)
            elif ann == list[str] and type(value) in (tuple, list) \
                    and all(type(v) is str for v in value):
                return list(value)
        if self._full is None:
            from typer._coercion import build_runtime_param

            self._full = build_runtime_param(desc)
        return self._full.coerce(value, param, ctx)


def _plain_param(param: Any) -> None:
    """Give ``param`` :class:`_PlainValues` coercion unless typer has none to replace (or built it already),
    and a readable metavar."""
    if getattr(param, "_runtime_param", False) is None and hasattr(param, "type_descriptor"):
        param._runtime_param = _PlainValues(param)
    _readable_metavar(param)


METAVARS = {str: "TEXT", int: "INT", float: "NUMBER"}
"""Metavars shown in help for option values (typer's own read ``<list[str]>`` for a repeatable option)."""


def _readable_metavar(param: Any) -> None:
    """``--opt TEXT`` rather than ``--opt <list[str]>``; an argument is shown by its name alone (``RUN``), its
    help saying what it takes."""
    if getattr(param, "param_type_name", "") == "argument" and hasattr(param, "display_type_rich"):
        param.display_type_rich = _no_type
        return
    if getattr(param, "metavar", "") is not None or getattr(param, "is_flag", False):
        return
    desc = getattr(param, "type_descriptor", None)
    if desc is None or getattr(param, "param_type_name", "") != "option":
        return
    ann = desc.annotation
    if get_origin(ann) is list:
        (ann,) = get_args(ann)
    if ann in METAVARS:
        param.metavar = METAVARS[ann]


def _no_type(ctx: Any) -> None:
    return None


HELP_DEFAULTS: dict[str, Callable[[], Mapping[str, str]]] = {}
"""Per command name, the values of the ``{key}`` placeholders in its options' help (e.g. the defaults of
``run``, from the spec's own table); filled in when the command is resolved, so that modules too costly to
import at start-up (``expsvc runs`` must stay fast) load only for that command."""


def _fill_help(name: str | None, cmd: Any) -> None:
    provider = HELP_DEFAULTS.get(name or "")
    if provider is None or getattr(cmd, "_expsvc_help_filled", False):
        return
    values = provider()
    for param in getattr(cmd, "params", ()):
        if getattr(param, "help", None) and "{" in param.help:
            param.help = param.help.format_map(values)
    if cmd.help and "{" in cmd.help:
        cmd.help = cmd.help.format_map(values)
    cmd._expsvc_help_filled = True


def plain_values(command: Any) -> None:
    """Give every parameter of ``command`` (and its subcommands) :class:`_PlainValues` coercion.

    A no-op for typer versions without lazily built runtime coercion (``_runtime_param``).
    """
    for param in getattr(command, "params", ()):
        _plain_param(param)
    for sub in getattr(command, "commands", {}).values():
        plain_values(sub)


class PlainValuesGroup(TyperGroup):
    """A typer command group whose commands' parameters (help options included) get :func:`plain_values`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        plain_values(self)

    def get_help_option(self, ctx: Any) -> Any:
        """The ``--help`` option (made on first use, so not among the parameters ``__init__`` saw)."""
        option = super().get_help_option(ctx)
        _plain_param(option)
        return option

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        """The subcommand to run, its ``--help`` option given plain coercion as well."""
        name, cmd, rest = super().resolve_command(ctx, args)
        _fill_help(name, cmd)
        # the subcommand's context inherits help_option_names from ``ctx`` unless its settings override them
        if cmd is not None and "help_option_names" not in (getattr(cmd, "context_settings", None) or {}):
            _plain_param(cmd.get_help_option(ctx))
        return name, cmd, rest
