"""``expsvc experiments``: list, describe, rename, tag and annotate experiments (parse, call, print)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from expsvc.cli.common import DbOption, PlainValuesGroup, WideOption, fail, open_store, output_width

if TYPE_CHECKING:
    from expsvc.store import RunStore

NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="Experiment name (or id).")]
"""The experiment a subcommand works on."""

app = typer.Typer(
    help="Experiments: list (the default), describe, rename, tag, note. Tags work in --where: \"tag = 'x'\".",
    cls=PlainValuesGroup,
    invoke_without_command=True,
    rich_markup_mode=None,
)

JsonOption = Annotated[bool, typer.Option("--json", help="JSON instead of text.")]


@contextmanager
def _store(db: str | None) -> Iterator[RunStore]:
    from expsvc.errors import ExpsvcError

    store = open_store(db)
    try:
        yield store
    except ExpsvcError as err:
        fail(str(err))
    finally:
        store.close()


def _counts(statuses: dict[str, int]) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) or "no runs"


def _list(tag: str | None, as_json: bool, wide: bool, db: str | None) -> None:
    from expsvc.analysis.render import DASH, fmt_time, text_table
    from expsvc.store import experiments as exps

    with _store(db) as store:
        infos = exps.list_experiments(store, tag=tag)
    if as_json:
        typer.echo(json.dumps([i.to_dict() for i in infos], indent=2))
        return
    if not infos:
        typer.echo("no experiments" + (f" tagged {tag!r}" if tag else "") + " yet")
        return
    rows = [[i.name, str(i.runs), _counts(i.statuses), ", ".join(i.tags) or DASH, i.description or DASH,
             str(len(i.notes)), fmt_time(i.created_at)] for i in infos]
    header = ("experiment", "runs", "status", "tags", "description", "notes", "created (UTC)")
    typer.echo(text_table(header, rows, frozenset({"runs", "notes"}), width=output_width(wide),
                          drop=("created (UTC)", "notes", "status"),
                          wrap={"experiment": None, "status": None, "tags": None, "description": 16},
                          squeeze={"experiment": 10, "tags": 8}))


@app.callback()
def experiments(
    ctx: typer.Context,
    tag: Annotated[str | None, typer.Option("--tag", help="Only experiments with this tag.")] = None,
    as_json: JsonOption = False,
    wide: WideOption = False,
    db: DbOption = None,
) -> None:
    """List experiments: runs by status, tags, description, notes (or run a subcommand)."""
    if ctx.invoked_subcommand is None:
        _list(tag, as_json, wide, db)


@app.command("list")
def list_(
    tag: Annotated[str | None, typer.Option("--tag", help="Only experiments with this tag.")] = None,
    as_json: JsonOption = False,
    wide: WideOption = False,
    db: DbOption = None,
) -> None:
    """List experiments, oldest first: runs by status, tags, description, number of notes, creation time."""
    _list(tag, as_json, wide, db)


@app.command()
def describe(
    name: NameArgument,
    description: Annotated[str | None, typer.Option("--set", metavar="TEXT", help="Set the description.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the description.")] = False,
    as_json: JsonOption = False,
    wide: WideOption = False,
    db: DbOption = None,
) -> None:
    """Show an experiment: description, tags, runs by status, notes; or set its description with --set
    (or remove it with --clear)."""

    from expsvc.analysis.render import fmt_time, prose
    from expsvc.store import experiments as exps

    if clear and description is not None:
        fail("--set and --clear contradict each other; give one")
    with _store(db) as store:
        if description is not None or clear:
            exps.set_description(store, name, None if clear else description)
        info = exps.describe(store, name)
    if as_json:
        typer.echo(json.dumps(info.to_dict(), indent=2))
        return
    width = output_width(wide)

    def say(text: str, indent: str = "") -> None:
        typer.echo(prose(text, width, indent))

    say(f"experiment {info.name} (id {info.id}), created {fmt_time(info.created_at)} UTC")
    say(f"description: {info.description or '(none; set one with --set)'}", "  ")
    say(f"tags: {', '.join(info.tags) or '(none)'}", "  ")
    say(f"runs: {info.runs} ({_counts(info.statuses)})" + (
        f", last created {fmt_time(info.last_run)} UTC" if info.last_run else ""), "  ")
    if info.notes:
        typer.echo("notes:")
        for note in info.notes:
            say(f"  {fmt_time(note.created_at)}  {note.text}", "    ")


def _change(db: str | None, change: Callable[[RunStore], str]) -> None:
    """Make one change to the store and say what it was (after the change is committed)."""
    with _store(db) as store:
        said = change(store)
    typer.echo(said)


@app.command()
def rename(
    old: NameArgument,
    new: Annotated[str, typer.Argument(help="New name (not taken).")],
    db: DbOption = None,
) -> None:
    """Rename an experiment (its runs stay with it)."""
    from expsvc.store import experiments as exps

    _change(db, lambda store: f"renamed experiment {exps.rename(store, old, new)!r} to {new.strip()!r}")


@app.command()
def tag(
    name: NameArgument,
    tags: Annotated[list[str], typer.Argument(metavar="TAG...", help="Tags to add (or remove with --remove).")],
    remove: Annotated[bool, typer.Option("--remove", help="Remove these tags instead of adding them.")] = False,
    db: DbOption = None,
) -> None:
    """Tag an experiment; its runs then match --where "tag = 'baseline'" (tags: letters, digits, _.-:/)."""
    from expsvc.store import experiments as exps

    def change(store: RunStore) -> str:
        now = exps.set_tags(store, name, add=[] if remove else tags, remove=tags if remove else [])
        return f"tags of {name!r}: {', '.join(now) or '(none)'}"

    _change(db, change)


@app.command()
def note(
    name: NameArgument,
    words: Annotated[list[str], typer.Argument(metavar="TEXT...", help="The note (quotes optional: the words "
                                                                       "are joined by single spaces).")],
    db: DbOption = None,
) -> None:
    """Add a dated note to an experiment (shown by `expsvc experiments describe`)."""
    from expsvc.analysis.render import fmt_time
    from expsvc.store import experiments as exps

    text = " ".join(words)
    _change(db, lambda store: f"noted on {name!r} at {fmt_time(exps.add_note(store, name, text).created_at)} UTC")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="experiments")
