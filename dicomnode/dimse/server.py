"""The DIMSE service: an AE described by its handlers (C-ECHO, C-STORE, C-FIND).

Handlers are thin: they turn a request into a call of `Ingestor.ingest` or
`find.find` and the result back into a DIMSE status.

Storage contexts are those of `dicomnode.media.sopclasses`: every current storage
class, the retired image classes, and (``unknown_sop_class_accepted``) any
unknown storage class a peer proposes. pynetdicom has no wildcard abstract
syntax and hands a C-STORE of a class it does not know (retired ones
included) to no handler: `StorageACSE` adds a context for an unknown class
to the one association that proposes it, and maps it and the retired classes
to the Storage Service Class for that association only (pynetdicom's own
switches, ``UNRESTRICTED_STORAGE_SERVICE`` and ``register_uid``, are
process-wide: the first accepts any non-storage class too).
"""

from __future__ import annotations

import functools
import inspect
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    HEVCM10P51,
    HEVCMP51,
    HTJ2K,
    JPEG2000,
    JPEG2000MC,
    MPEG2MPHL,
    MPEG2MPML,
    MPEG4HP41,
    MPEG4HP41BD,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import EventHandlerType
from pynetdicom.pdu_primitives import SOPClassCommonExtendedNegotiation
from pynetdicom.presentation import (
    AllStoragePresentationContexts,
    PresentationContext,
    build_context,
)

from dicomnode import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from dicomnode.config import Config
from dicomnode.dimse import retrieve
from dicomnode.dimse.access import AccessPolicy
from dicomnode.dimse.find import find, visible_issuers
from dicomnode.dimse.receive import received, release, spool_large_data_sets
from dicomnode.dimse.retrieve import AS_FIND
from dicomnode.dimse.stored import NodeAE
from dicomnode.dimse.transport import (
    GuardedACSE,
    GuardedAssociation,
    GuardedRequestHandler,
    NodeAssociationServer,
    SharedPortServer,
    node_server,
)
from dicomnode.ingest.pipeline import Incoming, Ingestor
from dicomnode.ingest.validate import status_dataset
from dicomnode.logs import quiet_libraries
from dicomnode.media import sopclasses
from dicomnode.net.models import (
    PATIENT_ROOT_FIND,
    PATIENT_ROOT_GET,
    STUDY_ROOT_FIND,
    STUDY_ROOT_GET,
    VERIFICATION,
)
from dicomnode.net.tls import server_context
from dicomnode.status import DATA_SET_DOES_NOT_MATCH, NOT_AUTHORIZED, OUT_OF_RESOURCES, SUCCESS
from storage.audit import MINOR_FAILURE

GET_MODELS = (PATIENT_ROOT_GET, STUDY_ROOT_GET)

log = logging.getLogger(__name__)

# Acceptor preference, first match wins (pynetdicom walks the acceptor's list):
# lossless compressed, then lossy compressed as sent, then uncompressed with
# explicit little endian first (deflate and big endian are rare, and choosing
# them would make a sender re-encode what it holds in little endian). A sender
# offering its stored syntax thus sends it as is; nothing is transcoded.
TRANSFER_SYNTAXES: list[str | UID] = [
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    RLELossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
    JPEG2000,
    JPEG2000MC,
    HTJ2K,
    MPEG2MPML,
    MPEG2MPHL,
    MPEG4HP41,
    MPEG4HP41BD,
    HEVCMP51,
    HEVCM10P51,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
]
RETRIEVE_MODELS = tuple(AS_FIND)
FIND_MODELS = (PATIENT_ROOT_FIND, STUDY_ROOT_FIND)
# The Storage Service Class (PS3.4 B): where pynetdicom sends a C-STORE of a
# class mapped to it by SOP Class Common Extended Negotiation.
STORAGE_SERVICE_CLASS = UID("1.2.840.10008.4.2")
# Every storage class negotiated by default, current then retired images.
STORAGE_CLASSES: tuple[str, ...] = (
    *(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts),
    *sopclasses.RETIRED_IMAGE_STORAGE,
)


def storage_context(abstract_syntax: str) -> PresentationContext:
    """A storage context as the node supports it: every transfer syntax, and
    both roles (a C-GET requestor takes the SCP role for storage)."""
    context = build_context(abstract_syntax, TRANSFER_SYNTAXES)
    context.scu_role = True
    context.scp_role = True
    return context


def services_of(abstract_syntax: str) -> frozenset[str]:
    """Which permissions a presentation context serves (see config.SERVICES).

    Storage contexts also serve C-GET, whose requestor receives on them."""
    if abstract_syntax == VERIFICATION:
        return frozenset({"echo"})
    if abstract_syntax in FIND_MODELS:
        return frozenset({"find"})
    if abstract_syntax in GET_MODELS:
        return frozenset({"get"})
    if abstract_syntax in RETRIEVE_MODELS:
        return frozenset({"move"})
    return frozenset({"store", "get"})


def _heard(event: evt.Event) -> None:
    """The association's idle timer restarted, as if the peer had just spoken
    (pynetdicom's timer; it has no public way to restart it)."""
    timer = getattr(event.assoc.dul, "_idle_timer", None)
    if timer is not None:
        timer.restart()


def answering(handler: Callable[[evt.Event], Any]) -> Callable[[evt.Event], Any]:
    """``handler`` with the association's idle timer restarted as it answers.
    pynetdicom's network timeout runs from the peer's last PDU, and a peer
    waiting for the node's answer sends none: an ingest or a retrieve that
    took longer than ``network_timeout`` on a loaded machine was aborted
    right after its Success, failing the peer's next instance. The timeout
    is for a silent peer, not a busy node."""
    if inspect.isgeneratorfunction(handler):

        @functools.wraps(handler)
        def answers(event: evt.Event) -> Iterator[Any]:
            try:
                for answer in handler(event):  # each pending response
                    _heard(event)
                    yield answer
            finally:
                _heard(event)

        return answers

    @functools.wraps(handler)
    def answered(event: evt.Event) -> Any:
        try:
            return handler(event)
        finally:
            _heard(event)

    return answered


def affected_sop_class(event: evt.Event) -> str:
    """The request's Affected SOP Class UID (pynetdicom hands a handler only
    a request that has one: ``is_valid_request``)."""
    uid = event.request.AffectedSOPClassUID
    assert uid is not None, "checked by pynetdicom"
    return uid


def wait_for_send_queue(assoc: Any, depth: int = 8) -> None:
    """Back-pressure for streamed responses.

    pynetdicom queues every response for its network thread without waiting,
    so a large C-FIND would be encoded whole into memory before the first one
    left, and a C-CANCEL would arrive when nothing was left to cancel. Waiting
    while more than ``depth`` responses are queued keeps both bounded.
    """
    queue = assoc.dul.to_provider_queue
    while queue.qsize() > depth and assoc.is_established:
        time.sleep(0.0005)


def node_ae(config: Config) -> AE:
    """The node's AE and every context it supports (the conformance
    statement's tables are generated from it: `dicomnode.dimse.conformance`)."""
    ae = NodeAE(ae_title=config.ae_title)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    # Limits are the access policy's, counted on established associations
    # only; pynetdicom's own count includes idle, unassociated sockets.
    ae.maximum_associations = 100_000
    ae.maximum_pdu_size = config.max_pdu_size
    ae.network_timeout = config.network_timeout
    ae.acse_timeout = config.acse_timeout
    ae.dimse_timeout = config.dimse_timeout
    ae.add_supported_context(VERIFICATION)
    for sop_class in STORAGE_CLASSES:
        # Both roles: a C-GET requestor takes the SCP role for storage.
        ae.add_supported_context(sop_class, TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
    for model in (*FIND_MODELS, *RETRIEVE_MODELS):
        ae.add_supported_context(model, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    return ae


class DicomServer:
    """One pynetdicom AE serving C-ECHO, C-STORE and C-FIND for the archive."""

    def __init__(self, config: Config, ingestor: Ingestor) -> None:
        self.config = config
        self.ingestor = ingestor
        self.archive = ingestor.archive
        self._server: NodeAssociationServer | None = None
        self.policy = AccessPolicy(config)
        # Outcomes and requests per open association, logged and audited as
        # one record when it closes.
        self._tallies: dict[int, Counter[str]] = {}
        self._tallies_lock = threading.Lock()
        # Bytes received per calling AE with a quota (loaded from the index once).
        self._quota_used: dict[str, int] = {}
        quiet_libraries()

    def build_ae(self) -> AE:
        return node_ae(self.config)

    def _tally(self, event: evt.Event, key: str) -> None:
        with self._tallies_lock:
            self._tallies.setdefault(id(event.assoc), Counter())[key] += 1

    def _over_quota(self, ae_title: str, size: int) -> bool:
        remote = self.config.remote(ae_title)
        if remote is None or not remote.quota_mb:
            return False
        with self._tallies_lock:
            if ae_title not in self._quota_used:
                self._quota_used[ae_title] = self.archive.index.bytes_from(ae_title)
            if self._quota_used[ae_title] + size > remote.quota_mb << 20:
                return True
            self._quota_used[ae_title] += size
        return False

    def handle_store(self, event: evt.Event) -> Dataset | int:
        request = event.request
        assert isinstance(request, C_STORE), "EVT_C_STORE"
        calling = event.assoc.requestor.ae_title
        if "store" not in getattr(event.assoc, "node_services", ()):
            self._tally(event, "refused")
            return status_dataset(NOT_AUTHORIZED, "this AE may not store here")
        if request.AffectedSOPClassUID != event.context.abstract_syntax:
            return status_dataset(
                DATA_SET_DOES_NOT_MATCH, "SOP Class differs from the presentation context"
            )
        # In memory, or (a large one) in the spool: `receive.SpillingBuffer`.
        data = received(request)
        try:
            if self._over_quota(calling, len(data)):
                self._tally(event, "over quota")
                return status_dataset(OUT_OF_RESOURCES, "storage quota of this sender is used up")
            result = self.ingestor.ingest(
                Incoming(
                    data=data,
                    transfer_syntax=event.context.transfer_syntax,
                    calling_ae=calling,
                    expected_sop_class=event.context.abstract_syntax,
                    expected_sop_instance=request.AffectedSOPInstanceUID,
                )
            )
        finally:
            release(request)
        self._tally(event, result.outcome.value)
        if result.status != SUCCESS:  # a failure or a warning says why
            return status_dataset(result.status, result.comment)
        return result.status

    def handle_close(self, event: evt.Event) -> None:
        self.policy.release(id(event.assoc))
        with self._tallies_lock:
            tally = self._tallies.pop(id(event.assoc), None)
        if tally:
            calling = event.assoc.requestor.ae_title
            summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(tally.items()))
            log.info("association from %s closed: %s", calling, summary)
            self.archive.index.audit.record(
                "association",
                user=calling,
                role="DICOM AE",
                source=event.assoc.requestor.address,
                detail=summary,
                outcome=MINOR_FAILURE if tally["rejected"] or tally["refused"] else 0,
            )

    def on_class_refused(self, assoc: Any, sop_class: str, why: str) -> None:
        """A proposed storage class the node does not take: its context is
        rejected (result 3, abstract syntax not supported: PS3.8 has no room
        for a reason), so the log says why and the association's audit
        record counts it."""
        log.warning(
            "association from %s: SOP class %s (%s) refused: %s",
            assoc.requestor.ae_title,
            sop_class,
            sopclasses.name_of(sop_class),
            why,
        )
        with self._tallies_lock:
            self._tallies.setdefault(id(assoc), Counter())["SOP class refused"] += 1

    def on_reject(self, calling: str, address: str, why: str) -> None:
        self.archive.index.audit.record(
            "association-rejected",
            user=calling,
            role="DICOM AE",
            source=address,
            detail=why,
            outcome=MINOR_FAILURE,
        )

    def handle_find(self, event: evt.Event) -> Any:
        self._tally(event, "find")

        def cancelled() -> bool:
            wait_for_send_queue(event.assoc)
            return event.is_cancelled

        yield from find(
            self.archive,
            event.identifier,
            affected_sop_class(event),
            retrieve_ae=self.config.ae_title,
            issuers=visible_issuers(self.config, event.assoc.requestor.ae_title),
            limit=self.config.max_find_results,
            is_cancelled=cancelled,
        )

    def handle_move(self, event: evt.Event) -> Any:
        destination = event.move_destination
        assert destination is not None, "pynetdicom passes on no C-MOVE without one"
        self._tally(event, "move")
        yield from retrieve.move(
            self.config,
            self.archive,
            event.identifier,
            affected_sop_class(event),
            destination.strip(),
            lambda: event.is_cancelled,
            retrieve.Requestor.of(event, lambda: self._tally(event, "refused")),
        )

    def handle_get(self, event: evt.Event) -> Any:
        self._tally(event, "get")
        yield from retrieve.get(
            self.config,
            self.archive,
            event.identifier,
            affected_sop_class(event),
            lambda: event.is_cancelled,
            retrieve.Requestor.of(event, lambda: self._tally(event, "refused")),
        )

    def handle_echo(self, event: evt.Event) -> int:
        self._tally(event, "echo")
        return SUCCESS

    def handle_open(self, event: evt.Event) -> None:
        # pynetdicom's knob for its loop's 1 ms sleep (issue #650; no public
        # setter): here the longest wait of one that wakes for work (`waking`).
        event.assoc.dul._run_loop_delay = self.config.poll_interval_us / 1e6
        spool_large_data_sets(event.assoc, self.ingestor.spool, self.ingestor.threshold)

    def start(self) -> NodeAssociationServer:
        handlers: list[EventHandlerType] = [
            (evt.EVT_C_ECHO, answering(self.handle_echo)),
            (evt.EVT_C_STORE, answering(self.handle_store)),
            (evt.EVT_C_FIND, answering(self.handle_find)),
            (evt.EVT_C_MOVE, answering(self.handle_move)),
            (evt.EVT_C_GET, answering(self.handle_get)),
            (evt.EVT_CONN_OPEN, self.handle_open),
            (evt.EVT_CONN_CLOSE, self.handle_close),
        ]
        ae = self.build_ae()
        server = node_server(
            ae.make_server(
                (self.config.dimse_host, self.config.dimse_port),
                ssl_context=server_context(self.config) if self.config.dimse_tls else None,
                evt_handlers=handlers,
                server_class=(
                    SharedPortServer
                    if self.config.receiving_processes > 1
                    else NodeAssociationServer
                ),
                request_handler=StorageRequestHandler,
            )
        )
        server.policy = self.policy
        max_pdu = self.config.max_pdu_size or (1 << 32)
        server.limits = (max_pdu, self.config.max_instance_mb << 20)
        server.max_connections = self.config.max_connections
        server.max_pending_per_address = self.config.max_pending_per_address
        server.association_request_seconds = self.config.association_request_seconds
        server.services_of = services_of
        server.on_reject = self.on_reject
        server.unknown_sop_class_accepted = self.config.unknown_sop_class_accepted
        server.on_class_refused = self.on_class_refused
        ae._servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True, name="dimse-accept").start()
        self._server = server
        # Small responses (C-STORE-RSP) must not wait for Nagle / delayed ACK;
        # Linux passes this option on to every accepted connection.
        server.listening.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log.info(
            "DICOM %s listening on %s:%d",
            self.config.ae_title,
            self.config.dimse_host,
            self.port,
        )
        return server

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


class StorageACSE(GuardedACSE):
    """Negotiates the storage classes no fixed list holds: an unknown class a
    peer proposes gets a context of its own (setting on) or a logged refusal
    (setting off, or a retired class the node refuses)."""

    # Classes this association serves that pynetdicom's table does not map
    # to the Storage Service Class.
    unlisted_storage: tuple[str, ...] = ()

    def _negotiate_as_acceptor(self) -> None:
        server = node_server(self.assoc._server)
        accept_unknown = server.unknown_sop_class_accepted
        request = self.requestor.primitive
        assert request is not None, "negotiated once the A-ASSOCIATE-RQ is in"
        supported = {str(cx.abstract_syntax) for cx in self.acceptor.supported_contexts}
        proposed = {str(cx.abstract_syntax) for cx in request.presentation_context_definition_list}
        refused: dict[str, str] = {}
        extra: list[str] = []
        for uid in sorted(proposed - supported):
            why = sopclasses.refusal(uid, accept_unknown)
            if why is None:
                extra.append(uid)
            elif uid in sopclasses.REFUSED_RETIRED or sopclasses.is_unknown_storage(uid):
                refused[uid] = sopclasses.REFUSED_RETIRED.get(uid, why)
        retired = proposed & set(sopclasses.RETIRED_IMAGE_STORAGE)
        self.unlisted_storage = (*sorted(retired), *extra)
        if extra:
            # At most 128 (a request has no more contexts); per association only.
            self.acceptor.supported_contexts = [
                *self.acceptor.supported_contexts,
                *(storage_context(uid) for uid in extra),
            ]
        super()._negotiate_as_acceptor()
        if self.assoc.is_established:
            for uid, why in refused.items():
                server.on_class_refused(self.assoc, uid, why)

    def _check_sop_class_common_extended(self) -> dict[UID, SOPClassCommonExtendedNegotiation]:
        """Each retired or unknown class proposed here is served by the Storage
        Service Class (the acceptor's own table: nothing of it is sent to the
        peer)."""
        items = super()._check_sop_class_common_extended()
        for uid in self.unlisted_storage:
            item = SOPClassCommonExtendedNegotiation()
            item.sop_class_uid = UID(uid)
            item.service_class_uid = STORAGE_SERVICE_CLASS
            items[UID(uid)] = item
        return items


class StorageRequestHandler(GuardedRequestHandler):
    """The guarded connection, negotiated by `StorageACSE`."""

    def _create_association(self) -> GuardedAssociation:
        assoc = super()._create_association()
        assoc.acse = StorageACSE(assoc)
        return assoc
