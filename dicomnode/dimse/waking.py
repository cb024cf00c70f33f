"""Incoming associations' network loop waits for work instead of polling.

pynetdicom's DUL thread loops: when it has nothing to do it sleeps 1 ms,
then looks at the socket and at what the association gave it to send. A
C-STORE request therefore waits up to a millisecond to be read, and its
response up to another to be sent, and an idle association wakes a
thousand times a second. `WakingDUL` waits instead in ``select`` on the
socket and on a wake-up socket that every primitive handed to the DUL
writes to (`WakingQueue`), at most `MAX_WAIT` (the DUL's timers and its
stop flag are looked at no less often). It hooks in where pynetdicom
sleeps (``time.sleep(self._run_loop_delay)``: the property waits, then
answers 0), so the loop itself is pynetdicom's, unchanged. Only incoming
associations (`transport.GuardedAssociation`) wait this way; the node's own
requests (C-MOVE destinations, forwarding) keep pynetdicom's loop.
"""

from __future__ import annotations

import contextlib
import queue
import select
import socket
import ssl
import threading
import time
from typing import Any

from pynetdicom.dul import DULServiceProvider

from dicomnode.dimse.batching import BatchingSend

# The longest wait unless ``poll_interval_us`` says otherwise: how late the
# DUL may see its ARTIM timer or a stop.
MAX_WAIT = 0.05


class WakingQueue(queue.Queue):
    """The DUL's queue of primitives to send, which wakes the DUL when a put
    finds it empty: the DUL waits only on an empty queue, and a clip's 1,300
    P-DATA primitives would otherwise cost as many wake-ups."""

    waker: socket.socket

    def _put(self, item: Any) -> None:
        # Called under the queue's lock, so no other put sees it empty too;
        # the item is in before the wake-up, so the DUL woken finds it.
        empty = not self.queue
        super()._put(item)
        if empty:
            with contextlib.suppress(OSError):  # full (already woken) or closed (ended)
                self.waker.send(b"\0")


class WakingDUL(BatchingSend):
    """pynetdicom's DUL, waiting on its socket and its wake-up socket (and
    sending queued P-DATA PDUs together: `dimse.batching`)."""

    _wake: tuple[socket.socket, ...] = ()  # (ours, theirs), made by install
    _longest = MAX_WAIT

    @classmethod
    def install(cls, dul: DULServiceProvider) -> None:
        """Make a DUL wait this way, in place (its association holds it),
        even one already running: all it needs is there before its class
        (and so its loop's pace) changes."""
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        theirs.setblocking(False)
        dul._longest = MAX_WAIT  # type: ignore[attr-defined]  # not pynetdicom's 1 ms
        dul._wake = (ours, theirs)  # type: ignore[attr-defined]
        dul.to_provider_queue.waker = theirs  # type: ignore[attr-defined]
        dul.to_provider_queue.__class__ = WakingQueue
        dul.__class__ = cls

    @property
    def _kill_thread(self) -> bool:
        return bool(self.__dict__.get("_kill_thread", False))

    @_kill_thread.setter
    def _kill_thread(self, value: bool) -> None:
        """Set by pynetdicom to stop the loop (``kill_dul``, ``stop_dul``):
        wake it, so it stops now, not after its longest wait."""
        self.__dict__["_kill_thread"] = value
        if value:
            with contextlib.suppress(OSError):  # closed: the loop has ended
                self._wake[1].send(b"\0")

    @property
    def _run_loop_delay(self) -> float:
        """Read where pynetdicom's loop would sleep: wait for work, sleep 0.
        Another thread reading it (pynetdicom's ``stop_dul`` waits for the
        loop to end) sleeps pynetdicom's own 1 ms."""
        if threading.current_thread() is not self:
            return 0.001
        self._wait_for_work()
        return 0.0

    @_run_loop_delay.setter
    def _run_loop_delay(self, value: float) -> None:
        """Where pynetdicom's sleep is set: here the longest wait."""
        self._longest = value

    def _wait_for_work(self) -> None:
        if self._kill_thread or not self.to_provider_queue.empty():
            return
        transport = self.socket
        raw = transport.socket if transport is not None else None
        ours = self._wake[0]
        if isinstance(raw, ssl.SSLSocket) and raw.pending():
            return  # decrypted bytes already wait in the TLS layer
        try:
            watched = [ours] if raw is None else [raw, ours]
            readable, _, _ = select.select(watched, [], [], self._longest)
        except (OSError, ValueError):  # closed under us: pynetdicom's pace until it ends
            time.sleep(0.001)
            return
        if ours in readable:
            with contextlib.suppress(OSError):
                while ours.recv(4096):
                    pass

    def close_wake(self) -> None:
        """Close the wake-up pair (the association has ended)."""
        for end in self._wake:
            end.close()
