"""Reads of studies in the audit trail ("study-view"), once per request.

DICOMweb retrievals, metadata and frame reads are each recorded (`read`):
a client asks for a study, a series or a few frames at a time, and each
request is a disclosure worth its row.

The viewer's own frame API (`viewer.frames`: /meta, /thumbnail, /frames/N,
/raw/A-B) is coalesced (`viewer_read`): it is high-volume by design. A cine
clip is read as many /raw range requests, a study page asks one thumbnail
per run, a print page one image per key image. A row for each would write
one chained audit row per request (the trail's HMAC chain makes every writer
wait for the one before it), slow every clip, and bury the fact that
matters, that this session read this study, under thousands of identical
rows. So the first read of a study by a session is recorded and the same
session's further reads of that study within ``WINDOW_SECONDS`` are not.

The memory of what was recorded is per process and bounded (``CAPACITY``
entries, the oldest forgotten first): forgetting costs one more row, never
a missing first one; several node processes each record their own first
read. Sessions are remembered by a digest of their id, never the id.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from flask import current_app, g, session

from viewer.auth import audit

WINDOW_SECONDS = 60.0
CAPACITY = 10_000  # about 1 MB: sessions x studies read within a minute
clock: Callable[[], float] = time.monotonic  # tests move time on


class Recent:
    """Keys seen within ``window`` seconds, at most ``capacity`` of them."""

    def __init__(
        self,
        capacity: int = CAPACITY,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.capacity, self.window, self._clock = capacity, window, clock
        self._seen: OrderedDict[Hashable, float] = OrderedDict()  # oldest first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def first(self, key: Hashable) -> bool:
        """Whether ``key`` was not seen within the window; it is seen now if so."""
        now = self._clock() if self._clock else clock()
        with self._lock:
            while self._seen:  # the expired, from the oldest
                oldest = next(iter(self._seen.values()))
                if now - oldest < self.window:
                    break
                self._seen.popitem(last=False)
            if key in self._seen:
                return False
            while len(self._seen) >= self.capacity:
                self._seen.popitem(last=False)
            self._seen[key] = now
            return True


def read(study: str, detail: str) -> None:
    """This request read ``study``: one record, ``detail`` saying how."""
    audit("study-view", g.user.username, obj=study, detail=detail)


def _reader() -> str:
    """Who reads: the session (a digest of its id), else the account."""
    sid = session.get("sid")
    if isinstance(sid, str) and sid:
        return "session:" + hashlib.sha256(sid.encode()).hexdigest()[:32]
    return "user:" + g.user.username


def viewer_read(study: str, detail: str) -> None:
    """The viewer read ``study``: recorded unless this session's read of it
    within the window already was."""
    recent: Recent = current_app.extensions.setdefault("recent_study_reads", Recent())
    if recent.first((_reader(), study)):
        read(study, detail)
