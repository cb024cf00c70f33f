"""Which transfer syntax a retrieved instance travels in, and the decoding
that gets it there.

Every DICOM application accepts Implicit VR Little Endian (PS3.5 §10.1),
and most retrieve clients at their defaults accept nothing compressed. So
beside each stored syntax the node proposes (C-MOVE) or takes (C-GET) the
uncompressed ones, sends an instance as stored when the peer accepted that
syntax, and otherwise decodes its pixel data once, for that peer, to
Explicit VR Little Endian (``dicomnode.media.transcode.decompressed``, the
node's one decoder); pynetdicom then encodes it in whichever uncompressed
little endian syntax the peer accepted. Nothing is re-encoded lossily and
the archive's file is never changed. Decoding is bounded: an instance that
decodes to more than ``transcode_max_mb`` is not sent (``TOO_LARGE``), and
one instance is decoded at a time in the process. C-GET, C-MOVE and forwarding share
these rules.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pynetdicom.presentation import PresentationContext, build_context

from dicomnode.media.transcode import UNCOMPRESSED_PREFERRED, decodable, decompressed
from dicomnode.net.models import VERIFICATION

decoded = decompressed  # the node's one decoder, by the name retrieve uses

# pynetdicom's (and PS3.8's) limit on presentation contexts in one association.
MAX_CONTEXTS = 128
UNCOMPRESSED: list[str | UID] = list(UNCOMPRESSED_PREFERRED)  # a context's transfer syntaxes
# What pynetdicom converts an Explicit VR Little Endian data set to by itself.
LITTLE_ENDIAN_NATIVE = frozenset({*UNCOMPRESSED, DeflatedExplicitVRLittleEndian})

# Why a sub-operation was not attempted: said in the log per instance and,
# counted, in the final response's Error Comment ("65535 not sent: " and one
# of these fit its 64 characters).
NO_CONTEXT = "no presentation context for the SOP class"
NO_SCP_ROLE = "requestor took no SCP role for the SOP class"
NOT_MADE_HERE = "peer takes the SOP class only in other syntaxes"
UNDECODABLE = "pixel data could not be decompressed"
MISSING = "instance file missing from the archive"
TOO_LARGE = "decoded size over this node's transcode limit"


def contexts_for(instances: Iterable[dict[str, Any]]) -> list[PresentationContext]:
    """What the node proposes to a C-MOVE destination (or a forwarding peer).

    One context per SOP class with both uncompressed little endian syntaxes
    (the acceptor picks one): every class gets one before any other context,
    so that everything can be sent somehow. Then one context per (class,
    other stored syntax), the syntaxes most instances are in first, while
    the 128 contexts last: those instances go as stored, bit for bit."""
    counts = Counter((i["SOPClassUID"], i["AvailableTransferSyntaxUID"]) for i in instances)
    if not counts:  # nothing to send, but the association still needs a context
        return [build_context(VERIFICATION)]
    classes = sorted({sop_class for sop_class, _ in counts})
    contexts = [build_context(sop_class, UNCOMPRESSED) for sop_class in classes]
    others = sorted(
        ((n, pair) for pair, n in counts.items() if pair[1] not in UNCOMPRESSED),
        key=lambda item: (-item[0], item[1]),
    )
    contexts += [build_context(sop_class, syntax) for _, (sop_class, syntax) in others]
    return contexts[:MAX_CONTEXTS]


def accepted_syntaxes(contexts: Iterable[PresentationContext], sop_class: str) -> set[str]:
    """The syntaxes the peer accepted for ``sop_class`` with the node as the
    storage SCU (in a C-GET, the contexts the requestor proposed with the SCP
    role for itself)."""
    return {
        str(cx.transfer_syntax[0])
        for cx in contexts
        if cx.abstract_syntax == sop_class and cx.as_scu and cx.transfer_syntax
    }


def without_role(contexts: Iterable[PresentationContext], sop_class: str) -> bool:
    """A context for ``sop_class`` whose roles do not let the node send on
    it: a C-GET requestor that proposed the class but not SCP/SCU Role
    Selection (PS3.7 D.3.3.4) with the SCP role for itself."""
    return any(cx.abstract_syntax == sop_class and not cx.as_scu for cx in contexts)


@dataclass(frozen=True)
class Plan:
    """How one instance goes: as stored, decoded, or not at all (and why)."""

    send: bool
    decode: bool = False
    reason: str = ""


AS_STORED = Plan(send=True)


def plan(stored: str, accepted: set[str]) -> Plan:
    """Send as stored when the peer took that syntax (or one pynetdicom
    converts an uncompressed little endian data set to); decode compressed
    pixel data when the peer took an uncompressed little endian syntax and a
    decoder is installed; otherwise say why not."""
    if not accepted:
        return Plan(send=False, reason=NO_CONTEXT)
    if stored in accepted:
        return AS_STORED
    if accepted & LITTLE_ENDIAN_NATIVE:
        syntax = UID(stored)
        if syntax in LITTLE_ENDIAN_NATIVE:
            return AS_STORED
        if syntax.is_transfer_syntax and syntax.is_compressed:
            if not decodable(syntax):
                return Plan(send=False, reason=UNDECODABLE)
            return Plan(send=True, decode=True)
    # Big endian (or a syntax the node does not know) stored and not
    # accepted, or only syntaxes the node does not encode to accepted.
    return Plan(send=False, reason=NOT_MADE_HERE)


def unsent(stored: str, accepted: Iterable[str]) -> str:
    """What was stored and what the peer took, by syntax name only."""
    names = ", ".join(sorted(UID(s).name for s in accepted)) or "nothing"
    return f"stored {UID(stored).name}; accepted {names}"
