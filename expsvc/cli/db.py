"""``expsvc db copy``: move experiments between stores (e.g. a laptop's SQLite file into the team's PostgreSQL)."""

from __future__ import annotations

from typing import Annotated

import typer

from expsvc.cli.common import fail


def copy(
    source: Annotated[str, typer.Option("--from", help="SQLAlchemy URL of the store to copy from.", metavar="URL")],
    target: Annotated[
        str, typer.Option("--to", help="SQLAlchemy URL of the store to copy into (created if missing).", metavar="URL")
    ],
    experiment: Annotated[
        list[str] | None,
        typer.Option("--experiment", "-e", help="Only this experiment; repeatable (default: all).", metavar="NAME"),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the final line.")] = False,
) -> None:
    """Copy experiments with all their finished runs; runs already in the target are never duplicated."""
    from expsvc.errors import ExpsvcError
    from expsvc.store.copy import copy_experiments

    echo = None if quiet else (lambda line: typer.echo(line, err=True))
    try:
        report = copy_experiments(source, target, experiment or None, echo=echo)
    except ExpsvcError as err:
        fail(str(err))
    typer.echo(report.summary())


def register(db_app: typer.Typer) -> None:
    """Add ``copy`` to the ``expsvc db`` group."""
    db_app.command("copy")(copy)
