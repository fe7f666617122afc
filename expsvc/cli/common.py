"""Helpers shared by the CLI modules: one-line errors, the store option, output."""

from __future__ import annotations

import os
from typing import Annotated, Any, NoReturn

import typer

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


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)
