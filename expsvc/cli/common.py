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


ForceOption = Annotated[bool, typer.Option("--force", help="Replace an existing output file that holds another "
                                                         "kind of data (never the store or a folder).")]
"""Every command with an output option (``metavar="FILE"``) has ``--force`` and calls :func:`check_outputs`."""


def check_outputs(db: str | None, force: bool, *outputs: tuple[str, str, str]) -> None:
    """Refuse, before any work, outputs ``(option, path, format)`` that would destroy something (one line, exit 2).

    See :func:`expsvc.files.check_output`: never the store ``db`` or its files, a folder or a FIFO; a file of
    another kind only with ``force``; the outputs of one command must be different files.
    """
    from expsvc.errors import ExpsvcError
    from expsvc.files import check_output

    paths = [path for _, path, _ in outputs]
    try:
        for i, (option, path, fmt) in enumerate(outputs):
            check_output(path, option=option, fmt=fmt, force=force, db=db, others=paths[:i])
    except ExpsvcError as err:
        fail(str(err))


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr (one line, long values shortened) and exit with ``code``."""
    from expsvc.errors import one_line

    typer.echo(f"error: {one_line(message)}", err=True)
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


def click_exceptions() -> Any:
    """The exceptions module of the click that typer uses (recent typers vendor their own click)."""
    import importlib

    return importlib.import_module(typer.BadParameter.__module__)


def _number_kind(annotation: Any) -> type | None:
    """``int`` or ``float`` for a numeric parameter (``list[int]``, ``int | None``... included), else None."""
    import typing

    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (list, tuple) or len(args) == 1:
        return _number_kind(args[0]) if args else None
    return annotation if annotation in (int, float) else None


def _range_text(kind: type, low: Any, high: Any) -> str:
    noun = "an integer" if kind is int else "a number"
    if low is not None and high is not None:
        return f"{noun} from {low:,} to {high:,}"
    return f"{noun} >= {low:,}" if low is not None else f"{noun} <= {high:,}" if high is not None else noun


def bad_number_message(value: Any, annotation: Any, low: Any = None, high: Any = None) -> str | None:
    """The one-line reason a numeric option's ``value`` was refused (``'abc' is not an integer``), in the
    style of every expsvc error, or None for a non-numeric option (typer's own message stays)."""
    kind = _number_kind(annotation)
    if kind is None:
        return None
    for raw in value if isinstance(value, list | tuple) else [value]:
        try:
            number = kind(str(raw).strip())
        except ValueError:
            return f"{str(raw)!r} is not {_range_text(kind, None, None)}"
        if kind is float and number != number:
            return f"{str(raw)!r} is not {_range_text(kind, low, high)}"
        if (low is not None and number < low) or (high is not None and number > high):
            return f"{str(raw)!r} is not allowed; expected {_range_text(kind, low, high)}"
    return f"{str(value)!r} is not {_range_text(kind, low, high)}"


def _flag(param: Any) -> str:
    """How a parameter is named in an error line: its long option (``--seeds``) or its metavar (``FILE``)."""
    opts = list(getattr(param, "opts", None) or [])
    if getattr(param, "param_type_name", "") == "argument" or not opts:
        return str(getattr(param, "metavar", None) or getattr(param, "name", "") or "value").upper()
    return max(opts, key=lambda o: (o.startswith("--"), len(o)))


def usage_line(err: Any) -> str:
    """One line for a usage error of the command line parser (click's own is four lines)."""
    exceptions = click_exceptions()
    ctx = getattr(err, "ctx", None)
    see = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    if isinstance(err, exceptions.BadParameter) and not isinstance(err, exceptions.MissingParameter) \
            and err.param is not None:
        return f"{_flag(err.param)}: {str(err.message).rstrip('.')}"
    if isinstance(err, exceptions.NoSuchOption):
        from expsvc.errors import did_you_mean

        return f"no such option {err.option_name!r}{did_you_mean(err.option_name, err.possibilities or ())}{see}"
    message = err.format_message().rstrip(".")
    return message[:1].lower() + message[1:] + (see if isinstance(err, exceptions.UsageError) else "")


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
        if value == "" or (isinstance(value, list | tuple) and "" in value):
            raise click_exceptions().BadParameter("an empty value is not allowed", ctx=ctx, param=param)
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
        try:
            return self._full.coerce(value, param, ctx)
        except click_exceptions().BadParameter:
            message = bad_number_message(value, desc.annotation, info.min, info.max)
            if message is None:
                raise
            raise click_exceptions().BadParameter(message, ctx=ctx, param=param) from None


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
    """A typer command group whose commands' parameters (help options included) get :func:`plain_values`,
    whose usage errors are one line (``error: --seeds: 'abc' is not an integer``, exit 2) and whose
    commands, interrupted by Ctrl-C, say so on one line and exit 130."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        """Click's ``main``, with every error printed as one line (never a traceback, never four lines)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        import sys

        from expsvc.errors import ExpsvcError, one_line

        exceptions = click_exceptions()
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except exceptions.NoArgsIsHelpError as err:
            err.show()
            sys.exit(err.exit_code)
        except exceptions.ClickException as err:
            typer.echo(f"error: {one_line(usage_line(err))}", err=True)
            sys.exit(err.exit_code)
        except typer.Abort:
            typer.echo("error: aborted (no input)", err=True)
            sys.exit(1)
        except ExpsvcError as err:
            typer.echo(f"error: {one_line(str(err))}", err=True)
            sys.exit(err.exit_code)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: Any) -> Any:
        """Run the subcommand; Ctrl-C (not already reported by it) prints one line and exits 130."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            from expsvc import interrupts

            typer.echo(interrupts.MESSAGE, err=True)
            raise typer.Exit(interrupts.EXIT_CODE) from None

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
