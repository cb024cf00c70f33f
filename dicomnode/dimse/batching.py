"""P-DATA PDUs queued back to back leave in one send.

A peer's maximum PDU length is often 16 KiB (DCMTK's default), so a 20 MB
clip is some 1,300 P-DATA PDUs, and pynetdicom's DUL sends each with a
``send`` call of its own. `BatchingSend` keeps a P-DATA PDU back only while
the association has already queued the next one (up to `MOST` bytes), then
sends them together; whatever else it sends (a release, an abort) goes
after what it kept, and an empty queue sends what is kept at once, so
nothing waits for a PDU that may never come. The PDUs on the wire, their
order and their sizes are pynetdicom's.
"""

from __future__ import annotations

from typing import Any

from pynetdicom import evt
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import P_DATA_TF

# Bytes kept back at most before they are sent.
MOST = 256 << 10


class BatchingSend(DULServiceProvider):
    """pynetdicom's DUL, sending queued P-DATA PDUs together."""

    @classmethod
    def install(cls, dul: DULServiceProvider) -> None:
        """Make a DUL send this way, in place, even one already running:
        nothing is kept back until its class has changed."""
        dul.__class__ = cls

    def _kept(self) -> list[tuple[Any, bytes]]:
        """The PDUs kept back, with their bytes (the DUL's own list, made on first use)."""
        kept: list[tuple[Any, bytes]] = self.__dict__.setdefault("_kept_pdus", [])
        return kept

    def _send(self, pdu: Any) -> None:
        kept = self._kept()
        if self.socket is None:
            kept.clear()
            super()._send(pdu)  # pynetdicom says so: the connection is closed
            return
        kept.append((pdu, pdu.encode()))
        size = self.__dict__.get("_kept_bytes", 0) + len(kept[-1][1])
        self.__dict__["_kept_bytes"] = size
        if isinstance(pdu, P_DATA_TF) and size < MOST and not self.to_provider_queue.empty():
            return  # the next P-DATA is queued: it is sent with this one
        self._send_kept()

    def _send_kept(self) -> None:
        kept = self._kept()
        pdus = list(kept)
        kept.clear()
        self.__dict__["_kept_bytes"] = 0
        if not pdus or self.socket is None:
            return
        self.socket.send(b"".join(data for _, data in pdus))
        for pdu, _ in pdus:
            evt.trigger(self.assoc, evt.EVT_PDU_SENT, {"pdu": pdu})

    def _process_recv_primitive(self) -> bool:
        """pynetdicom's, and when nothing more was queued, send what is kept."""
        taken = super()._process_recv_primitive()
        if not taken and self.__dict__.get("_kept_pdus"):
            self._send_kept()
        return taken
