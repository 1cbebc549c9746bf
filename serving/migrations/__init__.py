"""Alembic migrations of the service's database (the event store and the API keys).

Run them with ``yuyue store upgrade``; ``serving.db.prepare_schema`` creates a fresh database at
the head revision and refuses a database behind the code. See ``env.py`` for writing a new revision.
"""
