"""One lifecycle for the node's background work: start, stop, leases, take-over.

Two shapes of work run here. A *pass* (forwarding's `Forwarder.run_once`)
is called every few seconds; it claims and leases its own rows. *Leased
work* (research exports) is rows in the index that any node process may
claim (`storage.leases`: ``FOR UPDATE SKIP LOCKED``, so never two at once):
a dispatcher claims what its free slots can take, queued rows and rows whose
process died (its lease lapsed, or on this host ``dead_here``), runs each
in a thread of its own and renews their leases, with their progress, while
they run. A renewal may say stop (cancelled, or the lease passed to another
process); `Runner.stop` asks every job to stop, gives work back to the
queue, and joins the threads within a bound. The web only adds and reads
rows; it starts no thread.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from storage.leases import process_name

log = logging.getLogger(__name__)
STOP_SECONDS = 10.0  # how long `Runner.stop` waits for the threads, in all


class Stop(Enum):
    """Why a running job was asked to stop."""

    CANCEL = "cancel"  # a user asked: the job ends as cancelled
    LOST = "lost"  # its lease passed to another process: leave the row alone
    SHUTDOWN = "shutdown"  # this runner stops: the job goes back to the queue


@dataclass
class Ticket:
    """One claimed job while it runs: its row, its progress, whether to stop."""

    key: str
    row: dict[str, Any]
    done: int = 0
    total: int = 0
    halt: threading.Event = field(default_factory=threading.Event)
    why: Stop | None = None

    def stop(self, why: Stop) -> None:
        """Ask the job to stop; the first reason given is the one kept."""
        if self.why is None:
            self.why = why
        self.halt.set()

    def progress(self, done: int, total: int) -> None:
        """Reported by the job; written to its row with the next renewal."""
        self.done, self.total = done, total


class Leased(Protocol):
    """A kind of leased work (see `dicomnode.jobs.exports.ExportWork`)."""

    name: str

    def claim(self, owner: str, limit: int) -> list[Ticket]:
        """Up to ``limit`` queued or abandoned jobs, now ``owner``'s."""
        ...

    def renew(self, ticket: Ticket, owner: str) -> Stop | None:
        """Extend the lease (with the progress); why to stop, if the job should."""
        ...

    def run(self, ticket: Ticket, owner: str) -> None:
        """Do the job, honouring ``ticket.halt``, and record its outcome
        (a job stopped for `Stop.SHUTDOWN` goes back to the queue)."""
        ...


@dataclass
class _Pool:
    """One kind of leased work on a runner: its jobs running now."""

    work: Leased
    slots: int
    poll: float
    tickets: dict[str, Ticket] = field(default_factory=dict)
    wake: threading.Event = field(default_factory=threading.Event)


class Runner:
    """The node's background threads, started and stopped together."""

    def __init__(self, owner: str | None = None) -> None:
        self.owner = owner or process_name()  # the name its leases carry
        self._stopping = threading.Event()
        self._mains: list[tuple[str, Callable[[], None]]] = []
        self._on_stop: list[Callable[[], object]] = []
        self._pools: list[_Pool] = []
        self._threads: list[threading.Thread] = []
        self._guard = threading.Lock()
        self._started = False

    def every(self, name: str, seconds: float, step: Callable[[], object]) -> None:
        """Call ``step`` every ``seconds`` (after the first wait) until stopped;
        an error is logged by kind and the next pass comes as usual."""

        def loop() -> None:
            while not self._stopping.wait(seconds):
                self._guarded(name, step)

        self._mains.append((name, loop))

    def on_stop(self, stop: Callable[[], object]) -> None:
        """Call ``stop`` when the runner stops: work that runs in a pass
        (`every`) ends it between two steps instead of after the bound."""
        self._on_stop.append(stop)

    def leased(self, work: Leased, *, slots: int, poll: float = 1.0) -> None:
        """Run ``work``'s jobs, at most ``slots`` at once; every ``poll``
        seconds renew the running ones and claim more if a slot is free."""
        pool = _Pool(work, slots, poll)
        self._pools.append(pool)

        def dispatch() -> None:
            while not self._stopping.is_set():
                self._guarded(f"{work.name} renewal", lambda: self._renew(pool))
                self._guarded(f"{work.name} claim", lambda: self._claim(pool))
                pool.wake.wait(poll)
                pool.wake.clear()

        self._mains.append((work.name, dispatch))

    def start(self) -> Runner:
        if self._started:
            raise RuntimeError("a runner starts once")
        self._started = True
        for name, main in self._mains:
            self._spawn(name, main)
        return self

    def stop(self, timeout: float = STOP_SECONDS) -> list[str]:
        """Stop every loop and job and wait at most ``timeout`` seconds in
        all; the names of threads still running then (daemons: they do not
        keep the process alive, and their rows' leases lapse)."""
        self._stopping.set()
        for stop in self._on_stop:
            self._guarded("stop", stop)
        with self._guard:
            for pool in self._pools:
                pool.wake.set()
                for ticket in pool.tickets.values():
                    ticket.stop(Stop.SHUTDOWN)
        deadline = time.monotonic() + timeout
        while (alive := self._alive()) and time.monotonic() < deadline:
            alive[0].join(max(0.0, deadline - time.monotonic()))  # a job may start meanwhile
        left = [t.name for t in self._alive()]
        if left:
            log.warning("background work still running at stop: %s", ", ".join(left))
        return left

    def running(self) -> list[str]:
        """The keys of the jobs this runner runs now."""
        with self._guard:
            return [key for pool in self._pools for key in pool.tickets]

    def _alive(self) -> list[threading.Thread]:
        with self._guard:
            return [t for t in self._threads if t.is_alive()]

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        with self._guard:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _guarded(self, what: str, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception as exc:  # the work stays in the index for the next pass
            log.error("%s failed: %s", what, type(exc).__name__)

    def _renew(self, pool: _Pool) -> None:
        with self._guard:
            tickets = list(pool.tickets.values())
        for ticket in tickets:
            why = pool.work.renew(ticket, self.owner)
            if why is not None:
                ticket.stop(why)

    def _claim(self, pool: _Pool) -> None:
        with self._guard:
            free = pool.slots - len(pool.tickets)
        if free <= 0 or self._stopping.is_set():
            return
        for ticket in pool.work.claim(self.owner, free):
            with self._guard:
                pool.tickets[ticket.key] = ticket
                if self._stopping.is_set():  # run anyway: it gives the row back
                    ticket.stop(Stop.SHUTDOWN)
            self._spawn(
                f"{pool.work.name}-{ticket.key}", functools.partial(self._run, pool, ticket)
            )

    def _run(self, pool: _Pool, ticket: Ticket) -> None:
        try:
            self._guarded(
                f"{pool.work.name} {ticket.key}", lambda: pool.work.run(ticket, self.owner)
            )
        finally:
            with self._guard:
                pool.tickets.pop(ticket.key, None)
            pool.wake.set()  # a slot is free: claim the next job now
