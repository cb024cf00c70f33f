"""Which storage SOP classes the node accepts, in one place.

Negotiation (`dicomnode.dimse.server`), validation of what arrives by any door
(`dicomnode.ingest.validate`) and the conformance statement's table
(``python -m dicomnode.dimse.conformance``) all read these lists, so they cannot
disagree.

- every current storage class pynetdicom knows;
- the retired storage classes that are images (older echo machines still
  send Ultrasound Image Storage (Retired) and its multi-frame sibling): they
  are de-identified, shown and retrieved like their successors;
- by ``unknown_sop_class_accepted`` (off by default, as Orthanc's
  ``UnknownSopClassAccepted``), any storage class the node does not know: a
  private class, or one the standard added after pydicom's dictionary.

Retired storage classes that are not images are refused, each with its
reason (`REFUSED_RETIRED`), whatever the setting says: the node knows them
and knows it cannot use them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydicom._uid_dict import UID_dictionary
from pynetdicom.presentation import AllStoragePresentationContexts, PresentationContext
from pynetdicom.sop_class import _STORAGE_CLASSES

# The standard's root of storage SOP classes (PS3.6 Annex A): a class under
# it that pydicom does not know is one added to the standard since.
STORAGE_ROOT = "1.2.840.10008.5.1.4.1.1."
DICOM_ROOT = "1.2.840.10008."
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")

CURRENT_STORAGE: frozenset[str] = frozenset(
    str(cx.abstract_syntax) for cx in AllStoragePresentationContexts
)

# Retired (PS3.6 Table A-1) and still sent by equipment in service; each is
# an image IOD the de-identification, the pixel checks and the viewer handle
# like its current successor.
RETIRED_IMAGE_STORAGE: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.6": "Ultrasound Image Storage (Retired)",
    "1.2.840.10008.5.1.4.1.1.3": "Ultrasound Multi-frame Image Storage (Retired)",
    "1.2.840.10008.5.1.4.1.1.5": "Nuclear Medicine Image Storage (Retired)",
    "1.2.840.10008.5.1.4.1.1.12.3": "X-Ray Angiographic Bi-Plane Image Storage (Retired)",
    "1.2.840.10008.5.1.4.1.1.77.1": "VL Image Storage - Trial (Retired)",
    "1.2.840.10008.5.1.4.1.1.77.2": "VL Multi-frame Image Storage - Trial (Retired)",
}

_NO_IMAGE = "not an image: nothing of it is left once curves and overlays are removed"
_PRINT = "a print (film) object, not an acquisition"
_TRIAL_SR = "pre-standard trial SR: not an image, superseded by the SR classes"
# Retired storage classes the node refuses, and why (the reason is logged
# and audited when a peer proposes one).
REFUSED_RETIRED: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.9": _NO_IMAGE,  # Standalone Curve
    "1.2.840.10008.5.1.4.1.1.8": _NO_IMAGE,  # Standalone Overlay
    "1.2.840.10008.5.1.4.1.1.129": _NO_IMAGE,  # Standalone PET Curve
    "1.2.840.10008.5.1.4.1.1.10": "not an image: a LUT for images held elsewhere",
    "1.2.840.10008.5.1.4.1.1.11": "not an image: a LUT for images held elsewhere",
    "1.2.840.10008.5.1.1.27": _PRINT,  # Stored Print
    "1.2.840.10008.5.1.1.29": _PRINT,  # Hardcopy Grayscale Image
    "1.2.840.10008.5.1.1.30": _PRINT,  # Hardcopy Color Image
    "1.2.840.10008.5.1.4.1.1.88.1": _TRIAL_SR,
    "1.2.840.10008.5.1.4.1.1.88.2": _TRIAL_SR,
    "1.2.840.10008.5.1.4.1.1.88.3": _TRIAL_SR,
    "1.2.840.10008.5.1.4.1.1.88.4": _TRIAL_SR,
    "1.2.840.10008.5.1.4.1.1.9.1": "trial waveform: not an image",
    "1.2.840.10008.5.1.4.34.1": "trial RT instruction: not an image",
    "1.2.840.10008.5.1.4.1.1.12.77": "retired without a name in PS3.6: content unknown",
    "1.2.840.10008.5.1.4.1.1.40": "retired without a name in PS3.6: content unknown",
}

ACCEPTED_STORAGE: frozenset[str] = CURRENT_STORAGE | frozenset(RETIRED_IMAGE_STORAGE)


def is_known(uid: str) -> bool:
    """A UID pydicom's dictionary (PS3.6) names: a class the node knows."""
    return str(uid) in UID_dictionary or str(uid) in CURRENT_STORAGE


def is_unknown_storage(uid: str) -> bool:
    """A well-formed UID the node does not know that may name a storage class:
    private (outside the standard's root) or under the standard's storage
    root. A standard UID elsewhere (a service, a transfer syntax, a future
    non-storage class) never is."""
    uid = str(uid)
    if len(uid) > 64 or not _UID.fullmatch(uid) or is_known(uid):
        return False
    return uid.startswith(STORAGE_ROOT) or not uid.startswith(DICOM_ROOT)


def refusal(uid: str, unknown_accepted: bool) -> str | None:
    """Why a storage SOP class is not accepted, or None when it is: at most
    64 characters (an Error Comment), naming no value of the instance."""
    uid = str(uid)
    if uid in ACCEPTED_STORAGE:
        return None
    if uid in REFUSED_RETIRED:
        return "retired SOP class the node does not store (not an image)"
    if is_unknown_storage(uid):
        if unknown_accepted:
            return None
        return "unknown SOP class: set unknown_sop_class_accepted to accept it"
    return "SOP Class UID is not a storage SOP class"


def name_of(uid: str) -> str:
    """The class's name: PS3.6's, else pynetdicom's keyword spelt out."""
    uid = str(uid)
    if uid in RETIRED_IMAGE_STORAGE:
        return RETIRED_IMAGE_STORAGE[uid]
    if entry := UID_dictionary.get(uid):
        return str(entry[0]) or f"(no name in PS3.6, retired {entry[2].strip('()')})"
    keyword = next((k for k, v in _STORAGE_CLASSES.items() if v == uid), "")
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", keyword) or "(unknown)"


def _syntaxes(uids: Sequence[str]) -> str:
    return "<br>".join(f"{name_of(ts)} `{ts}`" for ts in uids)


def conformance_tables(contexts: list[PresentationContext]) -> str:
    """The conformance statement's SOP class tables, markdown, from the
    contexts the node's AE supports (`dicomnode.dimse.server.node_ae`)."""
    storage = [cx for cx in contexts if str(cx.abstract_syntax) in ACCEPTED_STORAGE]
    others = [cx for cx in contexts if str(cx.abstract_syntax) not in ACCEPTED_STORAGE]
    storage_syntaxes = {tuple(cx.transfer_syntax) for cx in storage}
    assert len(storage_syntaxes) == 1, "every storage class has the same transfer syntaxes"
    (syntaxes,) = storage_syntaxes
    lines = [
        "<!-- Generated by `python -m dicomnode.dimse.conformance` from the node's AE:",
        "     do not edit by hand, regenerate. -->",
        "",
        "### Verification and Query/Retrieve (SCP)",
        "",
        "| SOP Class | UID | Transfer syntaxes |",
        "|---|---|---|",
        *(
            f"| {name_of(str(cx.abstract_syntax))} | `{cx.abstract_syntax}` "
            f"| {_syntaxes(cx.transfer_syntax)} |"
            for cx in others
        ),
        "",
        f"### Storage SOP classes ({len(storage)})",
        "",
        "SCP of the Storage Service Class for every class below. Within C-GET",
        "the node is the C-STORE SCU on the requestor's contexts (it accepts the",
        "SCP role a requestor proposes by SCP/SCU Role Selection); within C-MOVE",
        "it proposes the stored class to the destination. The retired classes",
        "are images de-identified, shown and retrieved like their successors.",
        "",
        "Transfer syntaxes, the same for every storage class, in the node's order",
        "of preference (the first one the sender also proposes is chosen, so a",
        "sender offering its stored syntax sends it unchanged):",
        "",
        *(f"{n}. {name_of(ts)} `{ts}`" for n, ts in enumerate(syntaxes, 1)),
        "",
        "| SOP Class | UID | |",
        "|---|---|---|",
        *(
            f"| {name_of(uid)} | `{uid}` | {'retired' if uid in RETIRED_IMAGE_STORAGE else ''} |"
            for uid in sorted(
                (str(cx.abstract_syntax) for cx in storage),
                key=lambda u: (name_of(u).lower(), u),
            )
        ),
        "",
        "### Unknown storage SOP classes (`unknown_sop_class_accepted`, off by default)",
        "",
        "With the setting on, a storage class the node does not know (a UID",
        "outside the standard's root, as a vendor's private class, or under",
        f"`{STORAGE_ROOT}*` and newer than the node's dictionary) is accepted",
        "with the transfer syntaxes above, both roles, for the association that",
        "proposes it. Its instances are de-identified by the same rules as any",
        "other (private attributes removed, every sequence walked) and their",
        "pixels are always read by OCR (the header of an unknown class vouches",
        "for nothing): the setting needs `ocr = true`. With the setting off, or",
        "for a retired class below, the presentation context is rejected",
        "(result 3, abstract syntax not supported), and the log names the class",
        "and why; STOW-RS and import answer status C004 with the same reason.",
        "",
        "### Retired storage SOP classes refused",
        "",
        "| SOP Class | UID | Why refused |",
        "|---|---|---|",
        *(f"| {name_of(uid)} | `{uid}` | {why} |" for uid, why in sorted(REFUSED_RETIRED.items())),
        "",
    ]
    return "\n".join(lines)
