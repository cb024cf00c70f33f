"""C-MOVE and C-GET: what the unique keys name, sent on as stored.

A retrieve names what it moves (PS3.4 C.4.2.2.1, baseline hierarchical
retrieve; relational retrieve is not offered): the unique key of the level
asked and of every level above it down from the model's root, single values
above the level, one UID or a list at it, never empty and never a wildcard.
Anything else is refused with 0xA900 and an Error Comment naming the key,
before anything is sent or any association is opened. Only the calling AE's
hospitals' patients match (`find.visible_issuers`); a C-MOVE goes only to an
AE the caller's [[remote_ae]] entry allows (``move_destinations``).
Instances are read one at a time (memory holds one instance, never a study)
and sent in the syntax they are stored in, so pynetdicom encodes them back
to the archive's own bytes, unless the peer takes only uncompressed data:
then decoded for it (`retrieve_syntax`). The final response says what
failed and why (`retrieve_outcome`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import evt

from dicomnode.config import Config
from dicomnode.dimse.find import query_level, visible_issuers
from dicomnode.dimse.retrieve_outcome import Outcome, on_final_response
from dicomnode.dimse.stored import StoredFile
from dicomnode.ingest.validate import is_valid_uid, status_dataset
from dicomnode.media.transcode import TooLarge
from dicomnode.net.models import (
    PATIENT_ROOT_FIND,
    PATIENT_ROOT_GET,
    PATIENT_ROOT_MOVE,
    STUDY_ROOT_FIND,
    STUDY_ROOT_GET,
    STUDY_ROOT_MOVE,
)
from dicomnode.net.nodelay import NO_DELAY
from dicomnode.net.retrieve_syntax import (
    MISSING,
    NO_SCP_ROLE,
    TOO_LARGE,
    UNDECODABLE,
    accepted_syntaxes,
    contexts_for,
    decoded,
    plan,
    unsent,
    without_role,
)
from dicomnode.net.tls import tls_args
from dicomnode.status import CANCEL, IDENTIFIER_DOES_NOT_MATCH, MOVE_DESTINATION_UNKNOWN, PENDING
from storage.archive import Archive
from storage.audit import MINOR_FAILURE
from storage.keys import UNIQUE_KEY, Level
from storage.query import Query, QueryError

# The FIND model each retrieve model shares its query levels with.
AS_FIND: dict[str, str] = {
    PATIENT_ROOT_MOVE: PATIENT_ROOT_FIND,
    PATIENT_ROOT_GET: PATIENT_ROOT_FIND,
    STUDY_ROOT_MOVE: STUDY_ROOT_FIND,
    STUDY_ROOT_GET: STUDY_ROOT_FIND,
}
# UIDs one list-of-UID key may name: a retrieve of more is split by the SCU.
MAX_UIDS = 1000
PATIENT_ROOT = (PATIENT_ROOT_MOVE, PATIENT_ROOT_GET)
log = logging.getLogger(__name__)
# The same words for a destination this node does not know and for one the
# caller may not use: the answer does not tell which AE titles are known.
DESTINATION_REFUSED = "move destination unknown or not allowed for this AE"


class RetrieveRefused(ValueError):
    """The identifier does not name what to retrieve; the message says which
    key and why (an Error Comment: at most 64 characters, no values)."""


@dataclass(frozen=True)
class Requestor:
    """Who asks (calling AE title and address), and how the handler reaches it
    beyond what pynetdicom's handler API lets it say."""

    ae_title: str
    address: str
    # Makes the one final response pynetdicom sends next carry this status.
    reply: Callable[[Dataset], None]
    # Counts a refusal towards the association's audit record.
    refused: Callable[[], None] = lambda: None
    # Runs a function on this request's final response before it is sent.
    on_final: Callable[[Callable[[Any], None]], None] = lambda rewrite: None
    # The presentation contexts of the caller's association (C-GET stores on them).
    contexts: Callable[[], list] = lambda: []
    # The transfer syntax of the request's context (encodes response Identifiers).
    syntax: str = "1.2.840.10008.1.2"

    @classmethod
    def of(cls, event: evt.Event, refused: Callable[[], None] = lambda: None) -> Requestor:
        requestor = event.assoc.requestor
        return cls(
            requestor.ae_title.strip(),
            requestor.address,
            replier(event),
            refused,
            lambda rewrite: on_final_response(event, rewrite),
            lambda: event.assoc.accepted_contexts,
            str(event.context.transfer_syntax),
        )


def replier(event: evt.Event) -> Callable[[Dataset], None]:
    """A refusal with its own status and Error Comment, sent without opening
    any association.

    pynetdicom answers a C-MOVE whose handler yields no destination with
    0xA801 and a C-GET with no sub-operations with 0x0000, both without an
    Error Comment, and its handler API has no other way to fail before the
    C-STORE association is opened. So the handler arranges for that one
    response (the one answering this request's Message ID) to carry
    ``status`` instead, then yields the destination-less / zero answer."""

    def reply(status: Dataset) -> None:
        def rewrite(primitive: Any) -> None:
            primitive.Status = status.Status
            primitive.ErrorComment = status.get("ErrorComment")

        on_final_response(event, rewrite)

    return reply


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _unique_key(identifier: Dataset, keyword: str, many: bool) -> str:
    """The value of one unique key as the retrieve must give it, else
    RetrieveRefused naming the key (never its value: a PatientID is one)."""
    if keyword not in identifier:
        raise RetrieveRefused(f"{keyword} is required at this level")
    try:
        text = _text(identifier[keyword].value)
    except Exception:  # a value pydicom cannot decode
        raise RetrieveRefused(f"{keyword}: unreadable value") from None
    values = [v.strip("\x00 ") for v in text.split("\\")]
    if not any(values):
        raise RetrieveRefused(f"{keyword} is empty (universal matching)")
    if any("*" in v or "?" in v for v in values):
        raise RetrieveRefused(f"{keyword}: no wildcards in a retrieve")
    if len(values) > 1 and not many:
        raise RetrieveRefused(f"{keyword}: one value only at this level")
    if len(values) > MAX_UIDS:
        raise RetrieveRefused(f"{keyword}: more than {MAX_UIDS} UIDs")
    if keyword != "PatientID" and not all(map(is_valid_uid, values)):
        raise RetrieveRefused(f"{keyword}: a value that is not a UID")
    return "\\".join(values)


def retrieve_query(identifier: Dataset, model: str, issuers: frozenset[str] | None) -> Query:
    """The instances a C-MOVE / C-GET identifier names, among ``issuers``'
    patients (None: all).

    Baseline hierarchical retrieve: the unique key of each level from the
    model's root down to the level asked (PatientID single-valued, a UID list
    at the level itself). Other attributes do not narrow a retrieve and are
    ignored (SCUs often copy a C-FIND response into the request)."""
    try:
        level = query_level(identifier, AS_FIND[model])
    except QueryError as exc:
        raise RetrieveRefused(str(exc)) from None
    top = Level.PATIENT if model in PATIENT_ROOT else Level.STUDY
    keys = {
        UNIQUE_KEY[lv]: _unique_key(
            identifier, UNIQUE_KEY[lv], many=lv is level and lv is not Level.PATIENT
        )
        for lv in Level
        if top.depth <= lv.depth <= level.depth
    }
    keys.update(
        SOPInstanceUID=keys.get("SOPInstanceUID", ""), SOPClassUID="", AvailableTransferSyntaxUID=""
    )
    return Query(level=Level.IMAGE, keys=keys, issuers=issuers)


def matching_instances(
    archive: Archive, identifier: Dataset, model: str, issuers: frozenset[str] | None
) -> list[dict[str, Any]]:
    """Every stored instance the identifier names that ``issuers`` may see."""
    return list(archive.index.find(retrieve_query(identifier, model, issuers)))


def _unsendable(instance: dict[str, Any]) -> Dataset:
    """What stands for a sub-operation the node does not attempt.

    pynetdicom counts a sub-operation as failed, and lists its SOP Instance
    UID in the final response, when sending the yielded data set raises; a
    data set without File Meta Information raises before anything is sent."""
    stub = Dataset()
    stub.SOPClassUID = instance["SOPClassUID"]
    stub.SOPInstanceUID = instance["SOPInstanceUID"]
    return stub


def _prepared(
    archive: Archive, instance: dict[str, Any], contexts: list, outcome: Outcome, limit: int
) -> Dataset:
    """The instance as the peer can take it (one in memory at a time), or a
    stand-in that fails its sub-operation, the reason logged and counted."""
    uid, sop_class = instance["SOPInstanceUID"], instance["SOPClassUID"]
    stored = instance["AvailableTransferSyntaxUID"]
    accepted = accepted_syntaxes(contexts, sop_class)
    how = plan(stored, accepted)
    reason = NO_SCP_ROLE if not accepted and without_role(contexts, sop_class) else how.reason
    detail = ""
    if how.send:
        key = archive.index.instance_blob(uid)
        if key:
            if stored in accepted:  # the bytes as stored, from the file when there is one
                handle = archive.blobs.open_file(key)
                if handle is not None:
                    return StoredFile(handle, sop_class, uid)
            ds = dcmread(BytesIO(archive.blobs.read(key)))
            if not how.decode:
                return ds
            try:
                return decoded(ds, limit)
            except TooLarge as exc:
                reason, detail = TOO_LARGE, str(exc)
            except ValueError as exc:
                reason, detail = UNDECODABLE, str(exc)
        else:
            reason = MISSING
    outcome.skip(reason)
    detail = detail or unsent(stored, accepted)
    log.warning(
        "%s: %s not sent to %s: %s (%s)",
        "C-MOVE" if outcome.destination else "C-GET",
        uid,
        outcome.destination or "the requestor",
        reason,
        detail,
    )
    return _unsendable(instance)


def _datasets(
    archive: Archive,
    instances: list[dict[str, Any]],
    is_cancelled: Any,
    contexts: Callable[[], list],
    outcome: Outcome,
    limit: int,
) -> Iterator:
    for instance in instances:
        if is_cancelled():
            yield CANCEL, None
            return
        yield PENDING, _prepared(archive, instance, contexts(), outcome, limit)


def move(
    config: Config,
    archive: Archive,
    identifier: Dataset,
    model: str,
    destination: str,
    is_cancelled: Any,
    requestor: Requestor,
) -> Iterator:
    """What pynetdicom's C-MOVE handler yields: destination, count, then files."""
    remote = config.remote(destination)
    caller = config.remote(requestor.ae_title)
    if remote is None or caller is None or destination not in caller.destinations:
        requestor.refused()
        archive.index.audit.record(
            "access-denied",
            user=requestor.ae_title,
            role="DICOM AE",
            source=requestor.address,
            obj=destination,
            detail="C-MOVE to a destination not among this AE's move_destinations",
            outcome=MINOR_FAILURE,
        )
        requestor.reply(status_dataset(MOVE_DESTINATION_UNKNOWN, DESTINATION_REFUSED))
        yield None, None
        return
    try:
        instances = matching_instances(
            archive, identifier, model, visible_issuers(config, requestor.ae_title)
        )
    except RetrieveRefused as exc:
        requestor.refused()
        requestor.reply(status_dataset(IDENTIFIER_DOES_NOT_MATCH, str(exc)))
        yield None, None
        return
    uids = [i["SOPInstanceUID"] for i in instances]
    outcome = Outcome(uids, requestor.syntax, destination, tls=remote.tls)
    requestor.on_final(outcome.rewrite)
    kwargs: dict[str, Any] = {
        "contexts": contexts_for(instances),
        "evt_handlers": [*NO_DELAY, (evt.EVT_CONN_OPEN, outcome.captured)],
    }
    if remote.tls:
        kwargs["tls_args"] = tls_args(config, remote)
    yield remote.host, remote.port, kwargs
    yield len(instances)

    def accepted() -> list:
        return [] if outcome.store_assoc is None else outcome.store_assoc.accepted_contexts

    limit = config.transcode_max_mb << 20
    yield from _datasets(archive, instances, is_cancelled, accepted, outcome, limit)


def get(
    config: Config,
    archive: Archive,
    identifier: Dataset,
    model: str,
    is_cancelled: Any,
    requestor: Requestor,
) -> Iterator:
    """What pynetdicom's C-GET handler yields: count, then files."""
    try:
        instances = matching_instances(
            archive, identifier, model, visible_issuers(config, requestor.ae_title)
        )
    except RetrieveRefused as exc:
        requestor.refused()
        requestor.reply(status_dataset(IDENTIFIER_DOES_NOT_MATCH, str(exc)))
        yield 0
        return
    outcome = Outcome([i["SOPInstanceUID"] for i in instances], requestor.syntax)
    requestor.on_final(outcome.rewrite)
    yield len(instances)
    limit = config.transcode_max_mb << 20
    yield from _datasets(archive, instances, is_cancelled, requestor.contexts, outcome, limit)
