"""Alembic environment for expsvc.

Normally run programmatically by :mod:`expsvc.store.migrate`, which passes an open connection in
``config.attributes["connection"]`` (inside the transaction it owns).  Also works with the ``alembic``
command line: ``alembic -c migrations/alembic.ini -x url=sqlite:///experiments.db upgrade head``.
"""

from __future__ import annotations

from alembic import context

from expsvc.store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTERs rebuild the table
        compare_type=True,
    )


def _url() -> str:
    from expsvc.store.engine import default_url

    return (
        context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or default_url()
    )


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade --sql``)."""
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the given connection, or on a new engine for the configured URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return

    from sqlalchemy.pool import NullPool

    from expsvc.store.engine import make_engine

    engine = make_engine(_url(), foreign_keys=False, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
