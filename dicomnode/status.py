"""DICOM status codes the node says, named once (PS3.4 Annex B/C, PS3.7 C).

A foundation module: the ingest pipeline, STOW-RS and the DIMSE services
all answer in these codes, so every layer imports them from here instead of
writing literals. Where PS3.4 words one code differently per service (A900
is "data set does not match" for C-STORE, "identifier does not match" for
C-FIND/MOVE/GET), the second name is an alias of the first, never a second
literal. ``Rejection`` is the protocol-neutral way to refuse with a status.
"""

from __future__ import annotations

from dataclasses import dataclass

# Success and pending (PS3.7 C; PS3.4 C.4).
SUCCESS = 0x0000
PENDING = 0xFF00  # C-FIND matches / C-MOVE, C-GET sub-operations are continuing
PENDING_WARNING = 0xFF01  # C-FIND: matches continue, an optional key was not supported
PENDING_STATUSES = frozenset({PENDING, PENDING_WARNING})
CANCEL = 0xFE00  # matching or sub-operations terminated due to a C-CANCEL
# Not a DICOM status: the node's stand-in when a peer's response carried none
# (or the exchange failed before one came), so it is never taken for success.
NO_STATUS = 0xFFFF

# General failures (PS3.7 C.4).
PROCESSING_FAILURE = 0x0110
SOP_CLASS_NOT_SUPPORTED = 0x0122
NOT_AUTHORIZED = 0x0124  # Refused: Not Authorized

# Warnings (PS3.4 B.2.3 C-STORE; PS3.18 Warning Reason).
COERCION_OF_DATA_ELEMENTS = 0xB000
ELEMENTS_DISCARDED = 0xB006
DATA_SET_DOES_NOT_MATCH_WARNING = 0xB007
# C-MOVE / C-GET: sub-operations complete, one or more failures or warnings.
SUB_OPERATIONS_WARNING = COERCION_OF_DATA_ELEMENTS
# The node's reading of B000: stored, but held in quarantine for review (or
# kept apart under UIDs of its own) instead of among the clean images.
HELD_FOR_REVIEW = COERCION_OF_DATA_ELEMENTS

# Out of resources (PS3.4 B.2.3, C.4.2, C.4.3).
OUT_OF_RESOURCES = 0xA700
OUT_OF_RESOURCES_MATCHES = 0xA701  # C-MOVE/C-GET: unable to calculate number of matches
OUT_OF_RESOURCES_SUB_OPERATIONS = 0xA702  # C-MOVE/C-GET: unable to perform sub-operations
MOVE_DESTINATION_UNKNOWN = 0xA801

# A900: for C-STORE the data set, for C-FIND/MOVE/GET the identifier, does
# not match the SOP Class.
DATA_SET_DOES_NOT_MATCH = 0xA900
IDENTIFIER_DOES_NOT_MATCH = DATA_SET_DOES_NOT_MATCH

# Cxxx: C-STORE "cannot understand", C-FIND/MOVE/GET "unable to process".
CANNOT_UNDERSTAND = 0xC000
UNABLE_TO_PROCESS = CANNOT_UNDERSTAND
# The node's own codes within Cxxx, so a sender's log says which check failed.
UNREADABLE = 0xC001  # not decodable
# C-FIND answers an unexpected failure of its query with C001, as it always
# has (C-MOVE and C-GET say C000): the same code, a C-FIND name.
FIND_UNABLE_TO_PROCESS = UNREADABLE
BAD_UID = 0xC002
UNKNOWN_SOP_CLASS = 0xC004
PIXEL_DATA_SHORT = 0xC005
# STOW-RS POST /studies/{study}: not of the study the request named
# (PS3.18 I.2.2 has no code of its own: a Cxxx one, as dcm4chee's).
DIFFERENT_STUDY = 0xC409


def is_warning(status: int) -> bool:
    """B000-BFFF (PS3.7 C.1): done, but not quite as asked."""
    return 0xB000 <= status <= 0xBFFF


@dataclass
class Rejection(Exception):
    """Refuse an instance with a status and a short comment; the comment
    never quotes a value of the dataset (comments reach logs and peers)."""

    status: int
    comment: str

    def __str__(self) -> str:
        return f"0x{self.status:04X} {self.comment}"
