"""Sender-chosen text made harmless where the node writes it out.

A login name, an AE title or a DICOM attribute is whatever the sender typed.
Written into a CSV, a cell starting with ``=``, ``+``, ``-``, ``@``, tab or
carriage return is run as a formula when the file is opened in a spreadsheet
(OWASP "CSV injection"); written into the log or a terminal, a line break
forges a line of its own and an escape sequence rewrites the screen. One
function for each, used by every writer, so no writer forgets a case.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# OWASP's list, and a line feed: a naive reader splits the cell there.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")

# C0 and C1 controls, DEL, the Unicode line and paragraph separators and the
# bidirectional overrides and isolates (they reorder what a reader sees).
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def csv_cell(value: Any) -> Any:
    """``value`` as a spreadsheet will show it and never run it: text that a
    spreadsheet would take for a formula gets a leading ``'`` (the value
    stays readable); numbers and other non-text values pass as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_row(values: Iterable[Any]) -> list[Any]:
    return [csv_cell(value) for value in values]


def csv_text(rows: Iterable[Mapping[str, Any]], fields: Sequence[str]) -> str:
    """A header and ``rows`` (dicts) as CSV, every cell through `csv_cell`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(csv_row(fields))
    for row in rows:
        writer.writerow(csv_row(row.get(field, "") for field in fields))
    return buffer.getvalue()


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def escape_controls(text: str) -> str:
    """``text`` on one line with no control character: each is written as
    its Python escape (``\\n``, ``\\x1b``, ``\\u2028``); printable text of
    any script is unchanged."""
    return _CONTROLS.sub(_escaped, text)
