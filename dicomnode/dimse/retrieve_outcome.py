"""What a C-MOVE / C-GET's final response says (PS3.4 C.4.2.1.5, C.4.3.1.4).

pynetdicom builds the final response itself once the handler's generator is
spent: Success 0000, Warning B000 when some sub-operations failed, Refused
A702 when all did, each with the counts and the Failed SOP Instance UID
List. Two things it cannot say, and this module makes it say:

- why: the Error Comment names the commonest reason a sub-operation was not
  attempted (no context for the class, nothing the peer takes...), or what
  happened to the destination's association;
- that a destination the node knows and the caller may use was unreachable,
  refused the association or accepted none of its contexts: pynetdicom
  answers A801 "Move Destination unknown", which sends administrators after
  a configuration problem that is not there. The node answers C000 (Unable
  to process) with the reason, every sub-operation failed and listed.

The handler API has no hook for the final response, so `on_final_response`
wraps the association's DIMSE ``send_msg`` until the response answering the
request's Message ID that is not Pending has gone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.dsutils import encode

from dicomnode.status import (
    MOVE_DESTINATION_UNKNOWN,
    OUT_OF_RESOURCES_SUB_OPERATIONS,
    PENDING_STATUSES,
    SUB_OPERATIONS_WARNING,
    UNABLE_TO_PROCESS,
)

SUB_OPERATIONS_FAILED = frozenset({SUB_OPERATIONS_WARNING, OUT_OF_RESOURCES_SUB_OPERATIONS})
MAX_COMMENT = 64  # Error Comment is LO


def on_final_response(event: evt.Event, rewrite: Callable[[Any], None]) -> None:
    """Run ``rewrite(primitive)`` on the one final response (any status but
    Pending) that answers ``event``'s request, just before it is sent."""
    dimse = event.assoc.dimse
    message_id = event.request.MessageID

    def send_msg(primitive: Any, context_id: int) -> None:
        if getattr(primitive, "MessageIDBeingRespondedTo", None) == message_id and (
            getattr(primitive, "Status", None) not in PENDING_STATUSES
        ):
            del dimse.send_msg  # one response only: back to the class's method
            rewrite(primitive)
        type(dimse).send_msg(dimse, primitive, context_id)

    # Shadows the method on this one instance, until the response is sent.
    dimse.send_msg = send_msg  # type: ignore[method-assign]


def comment(text: str) -> str:
    """An Error Comment: one line of at most 64 characters."""
    return text.replace("\\", "/")[:MAX_COMMENT]


def uid_list(uids: list[str], transfer_syntax: str) -> BytesIO:
    """A response Identifier holding only the Failed SOP Instance UID List."""
    ds = Dataset()
    ds.FailedSOPInstanceUIDList = uids
    syntax = UID(transfer_syntax)
    data = encode(ds, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    return BytesIO(data or b"")


def not_associated(destination: str, assoc: Any | None, tls: bool = False) -> str:
    """Why the association with a move destination did not come about."""
    if assoc is None:
        return f"{destination} could not be reached" + (" (TCP or TLS)" if tls else "")
    if assoc.is_rejected:
        return f"{destination} rejected the association"
    if assoc.rejected_contexts and not assoc.accepted_contexts:
        return f"{destination} accepted no presentation context"
    return f"{destination} did not accept the association"


@dataclass
class Outcome:
    """One retrieve's sub-operations as the node saw them: every UID it
    meant to send, those it did not attempt and why, and (C-MOVE) the
    association with the destination."""

    uids: list[str]
    transfer_syntax: str  # of the Query/Retrieve context: encodes the Identifier
    destination: str = ""
    tls: bool = False  # the destination is called over TLS
    skipped: Counter[str] = field(default_factory=Counter)
    store_assoc: Any | None = None

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    def captured(self, event: evt.Event) -> None:
        """EVT_CONN_OPEN of the association with the destination."""
        self.store_assoc = event.assoc

    def rewrite(self, primitive: Any) -> None:
        if self.destination and primitive.Status == MOVE_DESTINATION_UNKNOWN:
            # The destination is known and allowed (else the handler had
            # refused it): pynetdicom could not associate with it.
            primitive.Status = UNABLE_TO_PROCESS
            why = not_associated(self.destination, self.store_assoc, self.tls)
            primitive.ErrorComment = comment(why)
            primitive.NumberOfRemainingSuboperations = None
            primitive.NumberOfCompletedSuboperations = 0
            primitive.NumberOfFailedSuboperations = len(self.uids)
            primitive.NumberOfWarningSuboperations = 0
            primitive.Identifier = uid_list(self.uids, self.transfer_syntax)
        elif primitive.Status in SUB_OPERATIONS_FAILED and primitive.ErrorComment is None:
            why = self.why()
            if why:
                primitive.ErrorComment = comment(why)

    def why(self) -> str:
        assoc = self.store_assoc
        if assoc is not None and assoc.is_aborted:
            return f"{self.destination} aborted the association"
        if self.skipped:
            reason, _ = self.skipped.most_common(1)[0]
            return f"{sum(self.skipped.values())} not sent: {reason}"
        return ""
