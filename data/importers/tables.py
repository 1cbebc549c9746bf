"""Streaming rows out of a chat-tool export (.csv or .xlsx).

Rows come out as ``(row_number, cells)`` with the row number as a spreadsheet
shows it (first row 1), blank rows included so the numbering never drifts.
CSV text encoding is detected by trying UTF-8 (with or without BOM) and then
GB18030, the superset of the GBK that Chinese Windows tools write.
"""

from __future__ import annotations

import codecs
import csv
import sys
import zipfile
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from yuyue.data.importers.errors import ImportError_
from yuyue.data.importers.mapping import ImportMapping

Row = tuple[int, list[Any]]

_CHUNK = 1 << 20
# A long chat can exceed csv's default cell limit of 128 KiB.
_CSV_FIELD_LIMIT = min(sys.maxsize, 64 << 20)


def detect_encoding(path: Path) -> str:
    """``utf-8-sig`` if the whole file decodes as UTF-8, else ``gb18030`` if it decodes as that."""
    for encoding in ("utf-8-sig", "gb18030"):
        decoder = codecs.getincrementaldecoder(encoding)()
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    decoder.decode(chunk)
                decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            continue
        except OSError as exc:
            raise ImportError_(f"{path}: cannot read: {exc.strerror or exc}") from None
        return encoding
    raise ImportError_(f"{path}: not UTF-8 or GB18030/GBK text; save the export as CSV UTF-8 or .xlsx")


def _csv_rows(path: Path, mapping: ImportMapping) -> Generator[Row, None, None]:
    encoding = detect_encoding(path) if mapping.csv.encoding == "auto" else mapping.csv.encoding
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    try:
        with open(path, encoding=encoding, newline="") as fh:
            reader = csv.reader(fh, delimiter=mapping.csv.delimiter)
            row_number = 0
            while True:
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    raise ImportError_(f"{path}: row {row_number + 1}: broken CSV: {exc}") from None
                row_number += 1
                yield row_number, cells
    except UnicodeDecodeError as exc:
        raise ImportError_(f"{path}: not valid {encoding} text (byte {exc.start} of a chunk)") from None
    except OSError as exc:
        raise ImportError_(f"{path}: cannot read: {exc.strerror or exc}") from None


@contextmanager
def _xlsx_rows(path: Path, mapping: ImportMapping) -> Iterator[Iterator[Row]]:
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ImportError_(f"{path}: not a readable .xlsx workbook ({exc})") from None
    except OSError as exc:
        raise ImportError_(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        if mapping.sheet is not None:
            if mapping.sheet not in book.sheetnames:
                raise ImportError_(
                    f"{path}: no sheet {mapping.sheet!r} (mapping key 'sheet'); sheets are {book.sheetnames}"
                )
            sheet = book[mapping.sheet]
        else:
            sheet = book.worksheets[0]
        # Tools often write wrong dimensions; without this read-only mode may cut rows off.
        if hasattr(sheet, "reset_dimensions"):
            sheet.reset_dimensions()

        def rows() -> Iterator[Row]:
            try:
                for row_number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
                    yield row_number, list(values)
            except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
                raise ImportError_(f"{path}: cannot read the sheet: {exc}") from None

        yield rows()
    finally:
        book.close()


@contextmanager
def open_rows(path: Path, mapping: ImportMapping) -> Iterator[Iterator[Row]]:
    """Open an export and give an iterator of its rows; the file is closed on leaving."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        csv_rows = _csv_rows(path, mapping)
        try:
            yield csv_rows
        finally:
            csv_rows.close()
    elif suffix in (".xlsx", ".xlsm"):
        with _xlsx_rows(path, mapping) as rows:
            yield rows
    elif suffix == ".xls":
        raise ImportError_(f"{path}: old .xls workbooks are not read; open it and save as .xlsx or CSV UTF-8")
    else:
        raise ImportError_(f"{path}: unknown export type {path.suffix!r}; expected .csv or .xlsx")
