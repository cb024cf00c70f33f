"""A cache bounded in bytes where each value is built once.

Decoding a compressed frame or parsing an instance's layout is costly, and a
cine loop asks for the same frames again and again, often from several
requests at once (prefetching tabs, two viewports). So values are kept
least-recently-used within a byte budget (memory stays bounded whatever the
clip's length), and a request that arrives while a key is being built waits
for that build instead of repeating it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

CACHE_BYTES = 256 << 20  # decoded frames kept by the server


class FrameCache:
    """Values built by key, bounded in bytes (LRU), one build per key at a time:
    a request arriving while a key is being built waits for that build."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.builds = 0  # how many builds ran (tests: concurrent requests decode once)
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._building: dict[Hashable, _Pending] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], tuple[Any, int]]) -> Any:
        """The value of ``key``; ``build`` returns (value, size in bytes)."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
            pending = self._building.get(key)
            owner = pending is None
            if owner:
                pending = self._building[key] = _Pending()
        assert pending is not None
        if not owner:
            pending.done.wait()
            if pending.error is not None:
                raise pending.error
            return pending.value
        try:
            value, size = build()
        except BaseException as exc:
            with self._lock:
                del self._building[key]
            pending.error = exc
            pending.done.set()
            raise
        with self._lock:
            del self._building[key]
            self.builds += 1
            if size <= self.max_bytes:  # a value larger than the whole cache is not kept
                self._items[key] = (value, size)
                self.size += size
                while self.size > self.max_bytes:
                    self.size -= self._items.popitem(last=False)[1][1]
        pending.value = value
        pending.done.set()
        return value

    def drop(self, key: Hashable) -> None:
        with self._lock:
            if key in self._items:
                self.size -= self._items.pop(key)[1]


class _Pending:
    """A build in progress: the requests waiting for it get its value or error."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
