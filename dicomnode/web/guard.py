"""What one web client may take of the server: connections per address, a
share of the workers, and time a worker waits on it per byte moved.

The rules are kept apart from cheroot's wiring (`dicomnode.web.server`), which
calls them; they count per client key (an IPv4 address, an IPv6 /64), so
one host cannot crowd out the others, however it behaves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# Bytes per second a request's body and answer must average while its
# worker waits on the client (after network_timeout seconds of grace): a
# slow but steady link keeps its transfer, a reader or sender that stalls
# loses it. 16 KiB/s is 128 kbit/s, below which the viewer is unusable anyway.
MIN_TRANSFER_RATE = 16 * 1024
NOTE_INTERVAL = 60.0  # seconds between log lines about the same kind of refusal


class Meter:
    """Bytes one request moved and seconds its worker spent blocked on the
    client: the measure of a slow reader or sender (time the app spends
    working is not the client's)."""

    __slots__ = ("moved", "since", "waited")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.moved = 0
        self.waited = 0.0
        self.since: float | None = None  # a blocking call under way since

    def begin(self) -> None:
        self.since = time.monotonic()

    def end(self, moved: int) -> None:
        if self.since is not None:
            self.waited += time.monotonic() - self.since
        self.since = None
        self.moved += moved

    def overdue(self, now: float, grace: float) -> bool:
        since = self.since
        if since is None:
            return False
        return self.waited + (now - since) > grace + self.moved / MIN_TRANSFER_RATE


class MeteredSocket:
    """The socket as a connection's buffered reader and writer see it: each
    receive and send timed on the connection's meter."""

    def __init__(self, sock: Any, meter: Meter) -> None:
        self._sock, self._meter = sock, meter

    def recv_into(self, *args: Any) -> int:
        self._meter.begin()
        count = 0
        try:
            count = self._sock.recv_into(*args)
            return count
        finally:
            self._meter.end(count)

    def send(self, *args: Any) -> int:
        self._meter.begin()
        count = 0
        try:
            count = self._sock.send(*args)
            return count
        finally:
            self._meter.end(count)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class Gate:
    """Per client key: open connections (at most ``cap``, 0 for no cap) and
    requests on workers (at most ``share``; more wait their turn here, in
    arrival order, rather than in the pool's queue where they would take
    every worker). Items carry ``key`` and ``busy``."""

    def __init__(self, cap: int, share: int) -> None:
        self.cap, self.share = cap, share
        self._lock = threading.Lock()
        self._open: Counter[str] = Counter()
        self._busy: Counter[str] = Counter()
        self._waiting: defaultdict[str, deque[Any]] = defaultdict(deque)

    def admit(self, key: str) -> bool:
        """A new connection from ``key``: counted, or refused over the cap."""
        with self._lock:
            if self.cap and self._open[key] >= self.cap:
                return False
            self._open[key] += 1
            return True

    def leave(self, item: Any) -> None:
        """A counted connection closed."""
        with self._lock:
            waiting = self._waiting.get(item.key)
            if waiting and item in waiting:
                waiting.remove(item)
            self._open[item.key] -= 1
            if self._open[item.key] <= 0:
                del self._open[item.key]

    def start(self, item: Any) -> bool:
        """Whether ``item`` may go to a worker now (else it waits its turn)."""
        with self._lock:
            if self._busy[item.key] >= self.share:
                self._waiting[item.key].append(item)
                return False
            self._busy[item.key] += 1
            item.busy = True
            return True

    def finish(self, item: Any) -> Any:
        """``item`` left its worker: the next waiting item of its key, which
        takes the freed place, or None."""
        with self._lock:
            if not item.busy:
                return None
            item.busy = False
            waiting = self._waiting.get(item.key)
            if waiting:
                following = waiting.popleft()
                following.busy = True
                return following
            self._busy[item.key] -= 1
            if self._busy[item.key] <= 0:
                del self._busy[item.key]
                self._waiting.pop(item.key, None)
            return None

    def drain(self) -> list[Any]:
        """Everything still waiting (the server is stopping)."""
        with self._lock:
            items = [item for waiting in self._waiting.values() for item in waiting]
            self._waiting.clear()
            return items


class Watchdog:
    """Cuts the requests whose workers have waited on their clients longer
    than ``grace`` plus one second per MIN_TRANSFER_RATE bytes moved."""

    def __init__(self, grace: float, cut: Callable[[Any], None], interval: float = 0.25) -> None:
        self.grace, self._cut, self._interval = grace, cut, interval
        self._items: set[Any] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="web-watchdog")

    def track(self, item: Any) -> None:
        with self._lock:
            self._items.add(item)

    def untrack(self, item: Any) -> None:
        with self._lock:
            self._items.discard(item)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            now = time.monotonic()
            with self._lock:
                late = [i for i in self._items if i.meter.overdue(now, self.grace)]
                self._items.difference_update(late)
            for item in late:
                self._cut(item)


class Notes:
    """Refusals logged at most once a minute per kind, with their count: an
    attack must not flood the log."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._last: dict[str, float] = {}

    def __call__(self, kind: str, address: str | None) -> None:
        now = time.monotonic()
        with self._lock:
            self._counts[kind] += 1
            if now - self._last.get(kind, -NOTE_INTERVAL) < NOTE_INTERVAL:
                return
            self._last[kind] = now
            count = self._counts.pop(kind)
        log.warning("web: %s (latest from %s; %d since the last report)", kind, address, count)
