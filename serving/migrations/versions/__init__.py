"""The revisions, oldest first: ``0001`` is the schema as of commit e4b9a41 (the last one without migrations)."""
