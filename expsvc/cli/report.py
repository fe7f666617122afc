"""``expsvc report`` (one self-contained HTML file) and ``expsvc ui`` (a read-only local server)."""

from __future__ import annotations

from typing import Annotated

import typer

from expsvc.cli.analysis import StudyOption, WhereOption, _by, _errors, _store
from expsvc.cli.common import DbOption, ForceOption, check_outputs, fail


def report(
    experiment: Annotated[str | None, typer.Option("--experiment", "-e", help="Experiment name (default: the "
                                                                              "latest).")] = None,
    study: StudyOption = None,
    where: WhereOption = None,
    by: Annotated[str | None, typer.Option("--by", help="Group by these parameters (comma-separated), as "
                                                        "compare does.")] = None,
    pool: Annotated[bool, typer.Option("--pool", help="Allow groups that pool configurations (as compare).")] = False,
    metric: Annotated[list[str] | None, typer.Option("--metric", "-m", help="Metric to compare; repeatable "
                                                                            "(as compare).")] = None,
    baseline: Annotated[str | None, typer.Option("--baseline", help="Baseline group (as compare; default: the "
                                                                    "first group).")] = None,
    out: Annotated[str, typer.Option("--out", "-o", help="HTML file to write.", metavar="FILE")] = "report.html",
    force: ForceOption = False,
    db: DbOption = None,
) -> None:
    """Write one self-contained HTML report: compare's answer, curves with 95 % bands, sensitivity, runs, provenance."""
    from expsvc.files import atomic_open
    from expsvc.report import data, html

    keys = _by(by)
    if study is not None:
        given = [f for f, v in (("--experiment", experiment), ("--where", where), ("--by", by), ("--pool", pool),
                                ("--metric", metric), ("--baseline", baseline)) if v]
        if given:
            fail(f"--study reports the study's own comparison; it cannot be combined with {', '.join(given)}")
    check_outputs(db, force, ("--out", out, "html"))
    selection = data.Selection(experiment=experiment, where=where, by=keys, pool=pool, metrics=metric,
                               baseline=baseline)
    with _errors(), _store(db) as store:
        built = data.build_study(store, study) if study is not None else data.build(store, selection)
        page = html.render(built)
        with atomic_open(out, "w", option="--out", encoding="utf-8") as fh:
            fh.write(page)
    typer.echo(f"wrote {out} ({len(page.encode()) / 1e6:.2f} MB); open it in any browser, no network needed")


def ui(
    host: Annotated[str, typer.Option("--host", help="Address to bind (default: localhost only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (0: any free port).", min=0, max=65535)] = 8000,
    refresh: Annotated[int, typer.Option("--refresh", help="Seconds between reloads of a page whose experiment "
                                                           "has queued or running runs.", min=1, max=3600)] = 5,
    db: DbOption = None,
) -> None:
    """Serve the experiments and their reports from the store, read-only (no write action exists)."""
    from expsvc.report import server

    try:
        address = server.check_host(host)
    except server.ServeError as err:
        fail(str(err))
    with _errors():
        store = server.open_read_only(db)
    try:
        httpd = server.make_server(store, address, port, refresh=refresh)
    except OSError as err:
        store.close()
        fail(f"--host {host!r} --port {port}: cannot listen ({err.strerror or err})")
    bound_host, bound_port = httpd.server_address[:2]
    if not server.is_loopback(address):
        typer.echo(f"warning: serving on {host}, reachable from other machines: anyone who can reach this port "
                   f"can read every experiment in the store", err=True)
    typer.echo(f"expsvc ui: serving {store!r} read-only at http://{server.url_host(str(bound_host))}:{bound_port}/ "
               f"(Ctrl-C stops)", err=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        typer.echo("stopped", err=True)
    finally:
        httpd.server_close()
        store.close()


def register(app: typer.Typer) -> None:
    """Add ``report`` and ``ui`` to the ``expsvc`` app."""
    app.command("report")(report)
    app.command("ui")(ui)
