"""A UID taken from a URL path: one exact UID, never a matching key.

Query matching (`storage.matching`) gives ``*`` (everything), ``?`` and
``\\`` (a list of UIDs) a meaning, so a path segment handed to it as a key
would let ``/studies/*`` name the whole archive, or ``a\\b`` two children's
studies at once. A path UID is therefore checked against PS3.5's UI form
(9.1) before it goes near a query: digits and dots, each component without
leading zeros (but "0" itself), at most 64 characters. What passes holds no
wildcard and no separator, so matching it is plain equality.
"""

from __future__ import annotations

import re

from flask import abort

MAX_LENGTH = 64
_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")  # ASCII digits only


def is_uid(text: str) -> bool:
    return len(text) <= MAX_LENGTH and _UID.fullmatch(text) is not None


def exact_uid(text: str, keyword: str) -> str:
    """``text`` if it is one UID, else 400 naming the attribute (``keyword``)."""
    if not is_uid(text):
        abort(
            400,
            description=f"{keyword} in the path is not a UID: one UID of digits and dots, "
            "at most 64 characters, without wildcards or lists",
        )
    return text
