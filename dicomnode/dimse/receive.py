"""C-STORE data sets received into the spool once they grow large.

pynetdicom gathers a message's data set fragments in a ``BytesIO``: an
instance of a gigabyte is a gigabyte of memory before any handler runs, and
its own alternative (``STORE_RECV_CHUNKED_DATASET``) writes a named file in
the clear. Here each association's DIMSE provider gives every new message a
`SpillingBuffer` instead: a ``BytesIO`` while small, and once a C-STORE
request's data set passes the spool threshold, an encrypted spool file
(`dicomnode.media.spool`) that the rest of the data set is appended to.
The wire-size limit (`transport.GuardedSocket`) still bounds what is sent.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage

from dicomnode.media.spool import Spool, SpoolFile


class SpillingBuffer(BytesIO):
    """A message's data set: in memory up to ``threshold`` bytes; beyond, for
    a C-STORE request only, in a spool file (`spooled`)."""

    def __init__(self, message: DIMSEMessage, spool: Spool, threshold: int) -> None:
        super().__init__()
        self._message, self._spool, self._threshold = message, spool, threshold
        self.spooled: SpoolFile | None = None

    def write(self, data: Any) -> int:
        if self.spooled is not None:
            return self.spooled.write(data)
        written = super().write(data)
        # Only a C-STORE data set: a C-FIND identifier is decoded by
        # pynetdicom from this buffer, and none is that large anyway.
        if self.tell() > self._threshold and isinstance(self._message, C_STORE_RQ):
            self.spooled = self._spool.open()
            self.spooled.write(self.getbuffer())
            self.seek(0)
            self.truncate(0)
        return written

    def getvalue(self) -> bytes:
        """The data set in memory; empty once spooled (pynetdicom's log
        handlers ask, and must not pull a spooled data set back)."""
        return b"" if self.spooled is not None else super().getvalue()

    def close(self) -> None:
        if self.spooled is not None:
            self.spooled.close()
        super().close()


class SpoolingDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider with `SpillingBuffer` data sets."""

    spool: Spool
    threshold: int

    def receive_primitive(self, primitive: Any) -> None:
        if self.message is None:
            self.message = DIMSEMessage()
            self.message.data_set = SpillingBuffer(self.message, self.spool, self.threshold)
        super().receive_primitive(primitive)


def spool_large_data_sets(assoc: Any, spool: Spool, threshold: int) -> None:
    """Make ``assoc`` receive data sets above ``threshold`` bytes into ``spool``
    (before it starts: on EVT_CONN_OPEN)."""
    dimse = assoc.dimse
    dimse.__class__ = SpoolingDIMSE
    dimse.spool, dimse.threshold = spool, threshold


def received(request: Any) -> bytes | SpoolFile:
    """A C-STORE request's data set: bytes, or the spool file it was
    received into (closed with the request's buffer: `release`)."""
    buffer = request.DataSet
    if isinstance(buffer, SpillingBuffer) and buffer.spooled is not None:
        return buffer.spooled
    return buffer.getvalue() if buffer is not None else b""


def release(request: Any) -> None:
    """Drop what the request's data set holds, spool file included."""
    buffer = request.DataSet
    if buffer is not None:
        buffer.close()
