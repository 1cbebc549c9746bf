"""Errors of the importer: one for a whole file, one for a single row."""

from __future__ import annotations


class ImportError_(ValueError):  # noqa: N801 - trailing underscore keeps clear of the builtin ImportError
    """The export or the mapping cannot be used at all (unreadable, invalid, a required column missing)."""


class RowProblem(ValueError):
    """One row cannot be turned into a conversation; the message names the column and the problem."""
