"""More processes on the DICOM port (``receivers``), run by `dicomnode serve`.

One Python process de-identifies about one core's worth of instances (the
GIL); more cores need more processes. `dicomnode serve` starts the others
as ``dicomnode serve --receiver``: each binds the same port with
SO_REUSEPORT (the kernel spreads new connections over them), runs the DICOM
service and the background passes (deferred OCR, forwarding, exports, all
claimed under leases), and no web app. They share the PostgreSQL index and
the storage as separate hosts would ("Several node processes" in
docs/operations.md). The first process restarts one that dies, and each
receiver ends with it, even when it is killed (the parent-death signal).
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from dicomnode.config import Config

log = logging.getLogger(__name__)
RECEIVER_FLAG = "--receiver"
# A receiver that dies is restarted after this long; one that keeps dying
# soon after its start, less and less often, up to this many seconds.
RESTART_SECONDS = 5.0
RESTART_MOST = 60.0
PR_SET_PDEATHSIG = 1


def _share(value: int, processes: int) -> int:
    return max(1, -(-value // processes))


def shared(config: Config) -> Config:
    """This process's share of the node's connection and association caps,
    so N processes together hold no more than one would."""
    processes = config.receiving_processes
    if processes <= 1:
        return config
    connections = _share(config.max_connections, processes)
    return dataclasses.replace(
        config,
        max_connections=connections,
        max_pending_per_address=min(connections, _share(config.max_pending_per_address, processes)),
        max_associations=_share(config.max_associations, processes),
    )


def die_with_parent(parent: int) -> None:
    """End with the `serve` that started this receiver (its pid, as it
    passed it), however it ends (Linux sends SIGTERM when it exits, SIGKILL
    included); at once if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it ended before the signal was asked for
        raise SystemExit("dicomnode: the serve that started this receiver has ended")


class Receivers:
    """The other receiving processes: started, restarted, stopped."""

    def __init__(self, config: Config, port: int, argv: list[str]) -> None:
        self.count = config.receiving_processes - 1
        self.env = {**os.environ, "DICOMNODE_DIMSE_PORT": str(port)}
        # The first process's own command line (`serve` last), plus the flag.
        self.command = [
            sys.executable, "-m", "dicomnode.cli", *argv, RECEIVER_FLAG, str(os.getpid())
        ]  # fmt: skip
        self._children: list[subprocess.Popen[bytes]] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def _spawn(self) -> subprocess.Popen[bytes]:
        # stdout is the first process's banner line alone; logs go to stderr.
        return subprocess.Popen(self.command, env=self.env, stdout=subprocess.DEVNULL)

    def start(self) -> Receivers:
        with self._lock:
            self._children = [self._spawn() for _ in range(self.count)]
        for slot in range(self.count):
            threading.Thread(
                target=self._watch, args=(slot,), daemon=True, name=f"receiver-{slot}"
            ).start()
        return self

    def _watch(self, slot: int) -> None:
        pause = RESTART_SECONDS
        while True:
            with self._lock:
                child = self._children[slot]
            started = time.monotonic()
            code = child.wait()
            if self._stopping.is_set():
                return
            # One that dies at once (its configuration, the index out of
            # reach) is tried less and less often, up to once a minute.
            quick = time.monotonic() - started < RESTART_MOST
            pause = min(pause * 2, RESTART_MOST) if quick else RESTART_SECONDS
            log.error(
                "receiving process %d ended (exit %s); another in %.0f s", child.pid, code, pause
            )
            if self._stopping.wait(pause):
                return
            with self._lock:
                self._children[slot] = self._spawn()

    def pids(self) -> list[int]:
        with self._lock:
            return [child.pid for child in self._children]

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM each (a receiver stops as `serve` does), SIGKILL what lingers."""
        self._stopping.set()
        with self._lock:
            children = list(self._children)
        for child in children:
            child.terminate()
        deadline = time.monotonic() + timeout
        for child in children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
