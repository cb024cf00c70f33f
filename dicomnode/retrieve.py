"""C-MOVE and C-GET: what a query matches, sent on as stored.

The matching is the C-FIND translation (`find.query_from_identifier`) taken
down to the instance level. Instances are read one at a time (memory holds
one instance, never a study) and offered in the syntax they are stored in,
so pynetdicom encodes them back to the archive's own bytes.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from io import BytesIO
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from dicomnode.config import Config
from dicomnode.find import query_from_identifier
from dicomnode.tls import tls_args
from dicomnode.validate import status_dataset
from storage.archive import Archive
from storage.keys import Level
from storage.query import Query, QueryError

PENDING, CANCELLED = 0xFF00, 0xFE00
UNKNOWN_DESTINATION = 0xA801
IDENTIFIER_MISMATCH = 0xA900
# The FIND model each retrieve model shares its query levels with.
AS_FIND = {
    PatientRootQueryRetrieveInformationModelMove: "1.2.840.10008.5.1.4.1.2.1.1",
    PatientRootQueryRetrieveInformationModelGet: "1.2.840.10008.5.1.4.1.2.1.1",
    StudyRootQueryRetrieveInformationModelMove: "1.2.840.10008.5.1.4.1.2.2.1",
    StudyRootQueryRetrieveInformationModelGet: "1.2.840.10008.5.1.4.1.2.2.1",
}
MAX_CONTEXTS = 128


def _no_delay(event: evt.Event) -> None:
    """Small DIMSE messages must not wait for Nagle and a delayed ACK (~40 ms
    each); the node's own outgoing sockets get what its accepted ones have."""
    sock = event.assoc.dul.socket.socket
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


NO_DELAY = [(evt.EVT_CONN_OPEN, _no_delay)]


def matching_instances(archive: Archive, identifier: Dataset, model: str) -> list[dict[str, Any]]:
    """Every stored instance under what the identifier matches."""
    query = query_from_identifier(identifier, AS_FIND[model])
    keys = {k: v for k, v in query.keys.items() if v}  # only the matching keys count
    keys.update(
        SOPInstanceUID=keys.get("SOPInstanceUID", ""), SOPClassUID="", AvailableTransferSyntaxUID=""
    )
    return list(archive.index.find(Query(level=Level.IMAGE, keys=keys)))


def contexts_for(instances: list[dict[str, Any]]) -> list:
    """One context per (SOP class, stored syntax): instances go as stored."""
    pairs = sorted({(i["SOPClassUID"], i["AvailableTransferSyntaxUID"]) for i in instances})
    if not pairs:  # nothing to send, but the association still needs a context
        return [build_context(Verification)]
    return [build_context(sop_class, syntax) for sop_class, syntax in pairs[:MAX_CONTEXTS]]


def _paths(archive: Archive, instances: list[dict[str, Any]], is_cancelled: Any) -> Iterator:
    for instance in instances:
        if is_cancelled():
            yield CANCELLED, None
            return
        key = archive.index.instance_blob(instance["SOPInstanceUID"])
        yield PENDING, dcmread(BytesIO(archive.blobs.read(key))) if key else None


def move(
    config: Config,
    archive: Archive,
    identifier: Dataset,
    model: str,
    destination: str,
    is_cancelled: Any,
) -> Iterator:
    """What pynetdicom's C-MOVE handler yields: destination, count, then files."""
    remote = config.remote(destination)
    if remote is None:
        yield None, None  # pynetdicom answers A801: move destination unknown
        return
    try:
        instances = matching_instances(archive, identifier, model)
    except QueryError as exc:
        yield remote.host, remote.port, {}
        yield 0
        yield status_dataset(IDENTIFIER_MISMATCH, str(exc)), None
        return
    kwargs: dict[str, Any] = {"contexts": contexts_for(instances), "evt_handlers": NO_DELAY}
    if remote.tls:
        kwargs["tls_args"] = tls_args(config, remote)
    yield remote.host, remote.port, kwargs
    yield len(instances)
    yield from _paths(archive, instances, is_cancelled)


def get(archive: Archive, identifier: Dataset, model: str, is_cancelled: Any) -> Iterator:
    """What pynetdicom's C-GET handler yields: count, then files."""
    try:
        instances = matching_instances(archive, identifier, model)
    except QueryError as exc:
        yield 0
        yield status_dataset(IDENTIFIER_MISMATCH, str(exc)), None
        return
    yield len(instances)
    yield from _paths(archive, instances, is_cancelled)
