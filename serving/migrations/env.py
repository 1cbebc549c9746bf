"""Alembic environment of the service's database.

The schema is :data:`yuyue.serving.db.metadata` (the tables of ``serving.store`` and ``serving.auth``),
restricted to :data:`yuyue.serving.db.SCHEMA_TABLES`. There is no ``alembic.ini``: the configuration is
built by :func:`yuyue.serving.db.alembic_config`, which passes an open connection in
``config.attributes["connection"]`` (``yuyue store upgrade`` and the tests do so).

A new revision, after changing a table in ``serving/store.py`` or ``serving/auth.py``::

    .venv/bin/python -c "from alembic import command; from yuyue.serving.db import alembic_config; \\
        command.revision(alembic_config(url='sqlite:///var/yuyue.db'), 'what changed', autogenerate=True, \\
        rev_id='0003_what_changed')"

then read the generated file in ``versions/`` (autogenerate misses CHECK constraints and renames)
and run ``tests/serving/test_migrations.py``: it checks that the head revision equals the tables.
SQLite cannot alter a column in place: the revisions use ``op.batch_alter_table`` (the table is
copied), which is a plain ``ALTER TABLE`` on PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy.schema import SchemaItem

import yuyue.serving.appointments  # noqa: F401  (declares appointments)
import yuyue.serving.auth  # noqa: F401  (declares api_keys)
import yuyue.serving.knowledge  # noqa: F401  (declares hospital_knowledge)
import yuyue.serving.reviews  # noqa: F401  (declares reply_reviews)
import yuyue.serving.store  # noqa: F401  (declares events, conversations, suggestions)
import yuyue.serving.tasks  # noqa: F401  (declares tasks, task_attempts)
from yuyue.serving.db import SCHEMA_TABLES, make_engine, metadata

config = context.config


def include_object(
    obj: SchemaItem, name: str | None, type_: str, reflected: bool, compare_to: SchemaItem | None
) -> bool:
    """Only the service's tables (and what belongs to them) are under migration."""
    if type_ == "table":
        return name in SCHEMA_TABLES
    table = getattr(obj, "table", None)
    return table is None or table.name in SCHEMA_TABLES


def _configure(**kw: Any) -> None:
    context.configure(
        target_metadata=metadata,
        include_object=include_object,
        render_as_batch=True,  # SQLite alters a table by copying it
        compare_type=True,
        **kw,
    )


if context.is_offline_mode():
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
    else:
        url = config.get_main_option("sqlalchemy.url")
        if url is None:  # db.alembic_config sets it whenever it passes no connection
            raise RuntimeError("alembic: neither a connection nor sqlalchemy.url to migrate")
        engine = make_engine(url)
        try:
            with engine.begin() as connection:
                _configure(connection=connection)
                with context.begin_transaction():
                    context.run_migrations()
        finally:
            engine.dispose()
