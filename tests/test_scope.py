"""Hospitals see their own: C-FIND, C-MOVE, C-GET and the web viewer show a
hospital's AEs and accounts only their own patients; a retrieve names what
it moves by its unique keys; a C-MOVE goes only where the caller may send.

One node (web app through Flask's test client) holds a child of hospital A
and one of hospital B; the regional centre's AE and accounts see both."""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from flask import Flask
from flask.testing import FlaskClient
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, AllStoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    XRayAngiographicImageStorage,
)
from sqlalchemy import text
from werkzeug.security import generate_password_hash

from dicomnode.config import RemoteAE
from dicomnode.ingest.pipeline import Outcome
from dicomnode.node import Node
from dicomnode.ops.samples import PATIENTS, UID_ROOT, xa_instance
from storage.accounts import ALL
from storage.index import Index, create_index_engine
from storage.keys import Level
from storage.migrate import _config
from storage.query import Query
from tests.conftest import incoming, make_config
from viewer import create_app

A, B, CENTRE = "Hospital A", "Hospital B", "Regional Centre"
PASSWORD = "correct horse battery"
STUDY_ROOT = (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
)
PATIENT_ROOT = (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
)
SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


@dataclass
class Child:
    """What the index holds of one hospital's child."""

    patient: str
    study: str
    series: str
    instances: list[str]


@dataclass
class Receiver:
    """A storage SCP standing in for a remote AE: what reached it."""

    ae_title: str
    port: int
    connections: int = 0
    stored: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self) -> None:
        with self.lock:
            self.connections, self.stored = 0, []


@dataclass
class World:
    node: Node
    app: Flask
    children: dict[str, Child]
    receivers: dict[str, Receiver]


def _child(node: Node, issuer: str) -> Child:
    rows = list(
        node.archive.index.find(
            Query(
                Level.IMAGE,
                {
                    "IssuerOfPatientID": issuer,
                    "PatientID": "",
                    "StudyInstanceUID": "",
                    "SeriesInstanceUID": "",
                    "SOPInstanceUID": "",
                },
            )
        )
    )
    assert len(rows) == 2, issuer
    return Child(
        rows[0]["PatientID"],
        rows[0]["StudyInstanceUID"],
        rows[0]["SeriesInstanceUID"],
        sorted(r["SOPInstanceUID"] for r in rows),
    )


def _receiver(ae_title: str) -> tuple[Receiver, Any]:
    receiver = Receiver(ae_title, 0)  # the port its server binds, below

    def opened(_event: evt.Event) -> None:
        with receiver.lock:
            receiver.connections += 1

    def store(event: evt.Event) -> int:
        with receiver.lock:
            receiver.stored.append(event.request.AffectedSOPInstanceUID)
        return 0x0000

    scp = AE(ae_title=ae_title)
    scp.supported_contexts = AllStoragePresentationContexts  # a plan's SR too
    scp.add_supported_context("1.2.840.10008.1.1")
    server = scp.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[(evt.EVT_CONN_OPEN, opened), (evt.EVT_C_STORE, store)],
    )
    receiver.port = server.server_address[1]
    return receiver, server


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp_path = tmp_path_factory.mktemp("scope")
    receivers, servers = {}, []
    for title in ("A_ECHO", "A_PACS", "B_ECHO", "CENTRE"):
        receiver, server = _receiver(title)
        receivers[title], servers = receiver, [*servers, server]
    port = {title: r.port for title, r in receivers.items()}
    remotes = (
        RemoteAE("A_ECHO", "127.0.0.1", port["A_ECHO"], A),
        RemoteAE("A_PACS", "127.0.0.1", port["A_PACS"], A, move_destinations=("A_ECHO", "A_PACS")),
        RemoteAE("B_ECHO", "127.0.0.1", port["B_ECHO"], B),
        RemoteAE(
            "CENTRE",
            "127.0.0.1",
            port["CENTRE"],
            CENTRE,
            query_issuers=("*",),
            move_destinations=("CENTRE", "A_ECHO", "B_ECHO"),
        ),
    )
    config = make_config(tmp_path, remote_aes=remotes, require_known_ae=True)
    node = Node(config, web=False).__enter__()
    try:
        for n, (calling, patient) in enumerate((("A_ECHO", PATIENTS[0]), ("B_ECHO", PATIENTS[1]))):
            study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
            for number in (1, 2):
                ds = xa_instance(
                    patient,
                    frames=2,
                    rows=32,
                    cols=32,
                    seed=10 * n + number,
                    transfer_syntax=ExplicitVRLittleEndian,
                    study_uid=study,
                    series_uid=series,
                    instance_number=number,
                )
                result = node.ingestor.ingest(incoming(ds, calling_ae=calling))
                assert result.outcome is Outcome.STORED, result
        children = {A: _child(node, A), B: _child(node, B)}
        accounts = node.archive.index.accounts
        hashed = generate_password_hash(PASSWORD)
        accounts.add("aigul", hashed, "cardiologist", A)  # sees A (the default)
        accounts.add("bakyt", hashed, "cardiologist", B)
        accounts.add("centre", hashed, "cardiologist", CENTRE, sees=ALL)
        accounts.add("old", hashed, "cardiologist")  # no hospital: sees all
        accounts.add("ra", hashed, "researcher", A)
        accounts.add("admin_a", hashed, "admin", A)
        app = create_app(config, node.archive, b"k" * 32)
        world = World(node, app, children, receivers)
        # A plan in B's study (its SR is stored in a series of its own), so
        # B's plan pages have something to show.
        plan = {"defect": "PDA", "slots": []}
        saved = client_of(world, "bakyt").post(
            f"/api/studies/{children[B].study}/plans", json=plan, headers={"X-CSRF-Token": "token"}
        )
        assert saved.status_code == 201, saved.json
        yield world
    finally:
        node.__exit__(None, None, None)
        for server in servers:
            server.shutdown()


# ---------------------------------------------------------------- DIMSE


def associate(world: World, calling: str, *contexts: str, get: bool = False):
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = 30
    for context in contexts:
        ae.add_requested_context(context, SYNTAXES)
    roles = []
    if get:
        ae.add_requested_context(XRayAngiographicImageStorage, SYNTAXES)
        roles = [build_role(XRayAngiographicImageStorage, scp_role=True)]
    received: list[str] = []

    def store(event: evt.Event) -> int:
        received.append(event.request.AffectedSOPInstanceUID)
        return 0x0000

    assoc = ae.associate(
        "127.0.0.1",
        world.node.dicom.port,
        ae_title="CHDNODE",
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, store)],
    )
    assert assoc.is_established
    assoc.received = received  # type: ignore[attr-defined]
    return assoc


def identifier(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def find(world: World, calling: str, model: str, query: Dataset) -> list[Dataset]:
    assoc = associate(world, calling, model)
    try:
        found = []
        for status, answer in assoc.send_c_find(query, model):
            assert status and status.Status in (0x0000, 0xFF00), status
            if status.Status == 0xFF00:
                found.append(answer)
        return found
    finally:
        assoc.release()


def move(world: World, calling: str, destination: str, query: Dataset, model: str) -> Dataset:
    """The final C-MOVE response's status."""
    assoc = associate(world, calling, model)
    try:
        statuses = [s for s, _ in assoc.send_c_move(query, destination, model) if s]
        return statuses[-1]
    finally:
        assoc.release()


def get(world: World, calling: str, query: Dataset, model: str) -> tuple[Dataset, list[str]]:
    """The final C-GET response's status and what arrived."""
    assoc = associate(world, calling, model, get=True)
    try:
        statuses = [s for s, _ in assoc.send_c_get(query, model) if s]
        return statuses[-1], assoc.received
    finally:
        assoc.release()


def universal(level: str) -> Dataset:
    keys = {"PatientID": "", "IssuerOfPatientID": "", "StudyInstanceUID": ""}
    if level in ("SERIES", "IMAGE"):
        keys["SeriesInstanceUID"] = ""
    if level == "IMAGE":
        keys["SOPInstanceUID"] = ""
    if level == "PATIENT":
        del keys["StudyInstanceUID"]
    return identifier(level, **keys)


FIND_CASES = [
    (PatientRootQueryRetrieveInformationModelFind, "PATIENT"),
    *(
        (model, level)
        for model in (PATIENT_ROOT[0], STUDY_ROOT[0])
        for level in ("STUDY", "SERIES", "IMAGE")
    ),
]


@pytest.mark.parametrize(("model", "level"), FIND_CASES)
def test_c_find_at_every_level_shows_a_hospital_its_own_children(
    world: World, model: str, level: str
) -> None:
    a, b = world.children[A], world.children[B]
    for calling, child in (("A_ECHO", a), ("A_PACS", a), ("B_ECHO", b)):
        found = find(world, calling, model, universal(level))
        assert found, (calling, level)
        assert {str(r.PatientID) for r in found} == {child.patient}, (calling, level)
        assert {str(r.IssuerOfPatientID) for r in found} <= {A if child is a else B}
    # Asked by B's pseudonym or by B's hospital: nothing, not "refused".
    by_id = universal(level)
    by_id.PatientID = b.patient
    assert find(world, "A_ECHO", model, by_id) == []
    by_issuer = universal(level)
    by_issuer.IssuerOfPatientID = B
    assert find(world, "A_ECHO", model, by_issuer) == []
    # The centre sees both.
    assert {str(r.PatientID) for r in find(world, "CENTRE", model, universal(level))} == {
        a.patient,
        b.patient,
    }


def b_identifiers(world: World) -> list[tuple[str, Dataset]]:
    """Exact identifiers for B's child at every level of both models."""
    b = world.children[B]
    study = {"StudyInstanceUID": b.study}
    series = {**study, "SeriesInstanceUID": b.series}
    image = {**series, "SOPInstanceUID": "\\".join(b.instances)}
    return [
        (PATIENT_ROOT[1], identifier("PATIENT", PatientID=b.patient)),
        (PATIENT_ROOT[1], identifier("STUDY", PatientID=b.patient, **study)),
        (STUDY_ROOT[1], identifier("STUDY", **study)),
        (STUDY_ROOT[1], identifier("SERIES", **series)),
        (STUDY_ROOT[1], identifier("IMAGE", **image)),
    ]


def _as(model: str, kind: str) -> str:
    """The MOVE or GET model of the same root as ``model``."""
    root = PATIENT_ROOT if model in PATIENT_ROOT else STUDY_ROOT
    return root[1] if kind == "move" else root[2]


def test_c_move_and_c_get_of_another_hospitals_child_send_nothing(world: World) -> None:
    receiver = world.receivers["A_ECHO"]
    for model, query in b_identifiers(world):
        receiver.clear()
        status = move(world, "A_ECHO", "A_ECHO", query, _as(model, "move"))
        # As for a UID nobody stored: success, nothing to send (existence not told).
        assert status.Status == 0x0000 and status.NumberOfCompletedSuboperations == 0
        assert receiver.stored == [] and receiver.connections == 0, query.QueryRetrieveLevel
        status, received = get(world, "A_ECHO", query, _as(model, "get"))
        assert status.Status == 0x0000 and received == [], query.QueryRetrieveLevel
    # The centre may move B's study to A's echo lab (its own move_destinations).
    receiver.clear()
    study = identifier("STUDY", StudyInstanceUID=world.children[B].study)
    assert move(world, "CENTRE", "A_ECHO", study, STUDY_ROOT[1]).Status == 0x0000
    assert set(world.children[B].instances) < set(receiver.stored)  # and the plan's SR


@pytest.mark.slow
def test_a_hospital_retrieves_its_own_child_at_every_level(world: World) -> None:
    a = world.children[A]
    receiver = world.receivers["A_ECHO"]
    study = {"StudyInstanceUID": a.study}
    series = {**study, "SeriesInstanceUID": a.series}
    cases = [
        (PATIENT_ROOT, identifier("PATIENT", PatientID=a.patient), a.instances),
        (PATIENT_ROOT, identifier("STUDY", PatientID=a.patient, **study), a.instances),
        (STUDY_ROOT, identifier("STUDY", **study), a.instances),
        (STUDY_ROOT, identifier("SERIES", **series), a.instances),
        (STUDY_ROOT, identifier("IMAGE", **series, SOPInstanceUID=a.instances[1]), a.instances[1:]),
        (
            STUDY_ROOT,
            identifier("IMAGE", **series, SOPInstanceUID="\\".join(a.instances)),
            a.instances,
        ),
    ]
    for root, query, expected in cases:
        receiver.clear()
        assert move(world, "A_PACS", "A_ECHO", query, root[1]).Status == 0x0000
        assert sorted(receiver.stored) == expected, query.QueryRetrieveLevel
        status, received = get(world, "A_ECHO", query, root[2])
        assert status.Status == 0x0000 and sorted(received) == expected


def test_c_move_to_a_destination_the_caller_may_not_use_is_refused(world: World) -> None:
    a = world.children[A]
    query = identifier("STUDY", StudyInstanceUID=a.study)
    for calling, destination in (
        ("A_ECHO", "B_ECHO"),  # its own child, to another hospital
        ("A_ECHO", "A_PACS"),  # not in its move_destinations (default: itself)
        ("A_PACS", "CENTRE"),
        ("A_ECHO", "NOWHERE"),  # not known at all: the same answer
    ):
        for receiver in world.receivers.values():
            receiver.clear()
        status = move(world, calling, destination, query, STUDY_ROOT[1])
        assert status.Status == 0xA801, (calling, destination)
        assert status.ErrorComment == "move destination unknown or not allowed for this AE"
        assert all(r.connections == 0 for r in world.receivers.values()), destination
    denied = [
        (r["user"], r["object"])
        for r in world.node.archive.index.audit.rows()
        if r["event"] == "access-denied" and r["role"] == "DICOM AE"
    ]
    assert {("A_ECHO", "B_ECHO"), ("A_ECHO", "NOWHERE"), ("A_PACS", "CENTRE")} <= set(denied)


def _refusals(world: World) -> list[tuple[str, Dataset, str]]:
    a = world.children[A]
    s, p = STUDY_ROOT[1], PATIENT_ROOT[1]
    no_level = Dataset()
    no_level.StudyInstanceUID = a.study
    return [
        (s, identifier("STUDY"), "StudyInstanceUID is required"),  # the attack's "empty"
        (s, identifier("STUDY", StudyInstanceUID=""), "StudyInstanceUID is empty"),
        (s, identifier("STUDY", StudyInstanceUID="*"), "StudyInstanceUID: no wildcards"),
        (s, identifier("STUDY", StudyInstanceUID="2.25.*"), "StudyInstanceUID: no wildcards"),
        (s, identifier("STUDY", StudyInstanceUID="2.25.?"), "StudyInstanceUID: no wildcards"),
        (s, identifier("STUDY", StudyInstanceUID=f"{a.study}\\"), "StudyInstanceUID: a value"),
        (s, identifier("STUDY", StudyInstanceUID="Hospital-B"), "StudyInstanceUID: a value"),
        (s, identifier("STUDY", PatientID=a.patient), "StudyInstanceUID is required"),
        (s, identifier("SERIES", SeriesInstanceUID=a.series), "StudyInstanceUID is required"),
        (s, identifier("IMAGE", SOPInstanceUID=a.instances[0]), "StudyInstanceUID is required"),
        (
            s,
            identifier(
                "SERIES", StudyInstanceUID=f"{a.study}\\{a.study}", SeriesInstanceUID=a.series
            ),
            "StudyInstanceUID: one value only",
        ),
        (
            s,
            identifier("SERIES", StudyInstanceUID=a.study, SeriesInstanceUID=""),
            "SeriesInstanceUID is empty",
        ),
        (
            s,
            identifier("STUDY", StudyInstanceUID="\\".join(f"2.25.{n}" for n in range(1001))),
            "StudyInstanceUID: more than 1000 UIDs",
        ),
        (s, identifier("PATIENT", PatientID=a.patient), "query level PATIENT"),
        (s, no_level, "query level (none)"),
        (p, identifier("PATIENT"), "PatientID is required"),
        (p, identifier("PATIENT", PatientID=""), "PatientID is empty"),
        (p, identifier("PATIENT", PatientID="*"), "PatientID: no wildcards"),
        (p, identifier("PATIENT", PatientID="CHD-*"), "PatientID: no wildcards"),
        (p, identifier("PATIENT", PatientID=f"{a.patient}\\x"), "PatientID: one value only"),
        (p, identifier("STUDY", StudyInstanceUID=a.study), "PatientID is required"),
    ]


@pytest.mark.slow
def test_a_retrieve_must_name_what_it_moves(world: World) -> None:
    """Missing, empty, universal and wildcard unique keys: 0xA900 naming the
    key, nothing sent and no association opened to the destination."""
    receiver = world.receivers["A_ECHO"]
    for model, query, why in _refusals(world):
        receiver.clear()
        status = move(world, "A_ECHO", "A_ECHO", query, model)
        assert status.Status == 0xA900, (why, hex(status.Status))
        assert str(status.ErrorComment).startswith(why), status.ErrorComment
        assert receiver.connections == 0 and receiver.stored == [], why
        status, received = get(world, "A_ECHO", query, _as(model, "get"))
        assert status.Status == 0xA900 and str(status.ErrorComment).startswith(why), why
        assert received == [], why
    # The association carries on: the next, exact request is served.
    receiver.clear()
    exact = identifier("STUDY", StudyInstanceUID=world.children[A].study)
    assert move(world, "A_ECHO", "A_ECHO", exact, STUDY_ROOT[1]).Status == 0x0000
    assert len(receiver.stored) == 2


@pytest.mark.slow
def test_an_ae_the_table_does_not_list_sees_no_one(tmp_path: Path) -> None:
    """With require_known_ae = false a stranger may associate; it finds and
    retrieves nothing, and may move nowhere."""
    receiver, server = _receiver("STRANGER")
    config = make_config(
        tmp_path,
        require_known_ae=False,
        remote_aes=(RemoteAE("A_ECHO", "127.0.0.1", receiver.port, A),),
    )
    try:
        with Node(config, web=False) as node:
            ds = xa_instance(
                PATIENTS[0], frames=2, rows=32, cols=32, transfer_syntax=ExplicitVRLittleEndian
            )
            assert node.ingestor.ingest(incoming(ds, calling_ae="A_ECHO")).status == 0
            (study,) = {
                r["StudyInstanceUID"]
                for r in node.archive.index.find(Query(Level.STUDY, {"StudyInstanceUID": ""}))
            }
            world = World(node, Flask(__name__), {}, {})
            for model, level in FIND_CASES:
                assert find(world, "STRANGER", model, universal(level)) == []
            query = identifier("STUDY", StudyInstanceUID=study)
            status, received = get(world, "STRANGER", query, STUDY_ROOT[2])
            assert status.Status == 0x0000 and received == []
            assert move(world, "STRANGER", "A_ECHO", query, STUDY_ROOT[1]).Status == 0xA801
            assert receiver.connections == 0
            assert len(find(world, "A_ECHO", STUDY_ROOT[0], universal("STUDY"))) == 1
    finally:
        server.shutdown()


# ---------------------------------------------------------------- web


def client_of(world: World, username: str) -> FlaskClient:
    from viewer.auth import session_limits

    client = world.app.test_client()
    limits = session_limits(world.app.config["NODE_CONFIG"])
    sid = world.node.archive.index.accounts.open_session(username, limits)
    with client.session_transaction() as session:
        session.update(sid=sid, csrf="token")
    return client


def _fill(rule: Any, child: Child, levels: dict[str, Level]) -> str:
    """The rule's URL naming ``child``'s objects, other arguments plausible."""
    by_level = {
        Level.STUDY: child.study,
        Level.SERIES: child.series,
        Level.IMAGE: child.instances[0],
    }
    values: dict[str, Any] = {"number": 1, "first": 1, "last": 1, "plan": 1, "version": 1}
    values["frames"] = "1"
    values["attribute"] = "7FE00010"  # a bulk data path: Pixel Data
    for argument in rule.arguments:
        if argument in levels:
            values[argument] = by_level[levels[argument]]
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: str(values[m.group(1)]), rule.rule)


def _object_rules(world: World) -> list[tuple[Any, dict[str, Level]]]:
    from viewer.scope import objects_named

    found = [(rule, objects_named(rule.rule)) for rule in world.app.url_map.iter_rules()]
    return [(rule, levels) for rule, levels in found if levels]


def _request(client: FlaskClient, rule: Any, url: str) -> Any:
    if "GET" in rule.methods:
        return client.get(url)
    return client.post(url, json={}, headers={"X-CSRF-Token": "token"})


def test_every_route_naming_a_stored_object_is_in_scope(world: World) -> None:
    """Walks the url_map: every view argument is a study, series or instance
    the scope checks, or is listed as naming none. A new route (or argument)
    fails here until viewer/scope.py knows it."""
    from viewer.scope import NOT_OBJECTS, objects_named

    unknown = []
    named = 0
    for rule in world.app.url_map.iter_rules():
        levels = objects_named(rule.rule)
        named += bool(levels)
        for argument in rule.arguments:
            if argument not in levels and argument not in NOT_OBJECTS:
                unknown.append(f"{rule.endpoint} {rule.rule}: <{argument}>")
    assert unknown == []
    assert named >= 22  # studies, frames, measure, planning, print, DICOMweb
    levels = {rule.endpoint: found for rule, found in _object_rules(world)}
    assert levels["studies.study"] == {"uid": Level.STUDY}
    assert levels["frames.raw"] == {"uid": Level.IMAGE}
    assert levels["planning.sign_plan"] == {"uid": Level.STUDY}
    assert levels["dicomweb.rendered"] == {
        "study": Level.STUDY,
        "series": Level.SERIES,
        "instance": Level.IMAGE,
    }


def test_an_account_of_hospital_a_gets_404_on_every_route_naming_bs_objects(
    world: World,
) -> None:
    aigul = client_of(world, "aigul")
    rules = _object_rules(world)
    for rule, levels in rules:
        url = _fill(rule, world.children[B], levels)
        answer = _request(aigul, rule, url)
        assert answer.status_code == 404, (rule.endpoint, url, answer.status_code)
        assert world.children[B].patient not in answer.get_data(as_text=True)
    # Its own: never the scope's 404 (a route may still say why it cannot answer).
    scope_404 = {"no such study", "no such series", "no such instance", "nothing stored matches"}
    for rule, levels in rules:
        answer = _request(aigul, rule, _fill(rule, world.children[A], levels))
        refused = answer.status_code == 404 and (answer.json or {}).get("message") in scope_404
        assert not refused, (rule.endpoint, answer.status_code)
    # Each attempt is in the audit trail, as a refused access (not to the asker).
    denied = [r for r in world.node.archive.index.audit.rows() if r["event"] == "access-denied"]
    assert any(r["user"] == "aigul" and r["object"] == world.children[B].study for r in denied)


def test_the_pages_named_in_the_attack(world: World) -> None:
    """B's study page, frames, thumbnails, metadata, QIDO, plans and print
    page: 404 to A's account, 200 to the centre's and to B's."""
    b = world.children[B]
    instance = f"/dicom-web/studies/{b.study}/series/{b.series}/instances/{b.instances[0]}"
    urls = [
        f"/studies/{b.study}",
        f"/api/instances/{b.instances[0]}/meta",
        f"/api/instances/{b.instances[0]}/frames/1",
        f"/api/instances/{b.instances[0]}/thumbnail",
        f"/api/instances/{b.instances[0]}/raw/1-1",
        f"/dicom-web/studies/{b.study}/metadata",
        f"/dicom-web/studies/{b.study}",
        f"{instance}/thumbnail",
        f"{instance}/metadata",
        f"/dicom-web/studies/{b.study}/series",
        f"/dicom-web/studies/{b.study}/series/{b.series}/instances",
        f"/api/studies/{b.study}/plans",
        f"/studies/{b.study}/plan/print",
    ]
    aigul, centre, bakyt = (client_of(world, n) for n in ("aigul", "centre", "bakyt"))
    for url in urls:
        assert aigul.get(url).status_code == 404, url
        assert centre.get(url).status_code == 200, url
        assert bakyt.get(url).status_code == 200, url


def test_lists_show_an_account_its_hospitals_children(world: World) -> None:
    a, b = world.children[A], world.children[B]
    aigul, centre, old = (client_of(world, n) for n in ("aigul", "centre", "old"))
    page = aigul.get("/").get_data(as_text=True)
    assert a.study in page and b.study not in page and b.patient not in page
    assert b.study not in aigul.get("/", query_string={"hospital": "Hospital B"}).get_data(
        as_text=True
    )
    for url in ("/dicom-web/studies", "/dicom-web/series", "/dicom-web/instances"):
        listed = aigul.get(url).get_data(as_text=True)
        assert a.patient in listed or a.study in listed, url
        assert b.patient not in listed and b.study not in listed, url
        both = centre.get(url).get_data(as_text=True)
        assert b.study in both and a.study in both, url
    by_id = aigul.get("/dicom-web/studies", query_string={"PatientID": b.patient})
    assert by_id.status_code == 200 and by_id.get_json() == []  # PS3.18: no match, empty list
    assert aigul.get("/api/stats").json["studies"] == 1
    assert aigul.get("/api/stats").json["patients"] == 1
    assert aigul.get("/api/stats").json["instances"] == 2
    assert centre.get("/api/stats").json["studies"] == 2
    assert old.get("/api/stats").json["studies"] == 2  # an account from before: sees all
    both = centre.get("/").get_data(as_text=True)
    assert a.study in both and b.study in both


def test_a_url_naming_many_objects_or_a_wildcard_names_none(world: World) -> None:
    """A UID list or a wildcard in a path would match many studies at once
    (today the whole archive for "*"): every account gets 400, naming the key."""
    a, b = world.children[A], world.children[B]
    centre = client_of(world, "centre")
    for study in ("*", "2.25.*", f"{a.study}\\{b.study}", "2.25.1%3F"):
        for url in (f"/dicom-web/studies/{study}", f"/dicom-web/studies/{study}/metadata"):
            answer = centre.get(url)
            assert answer.status_code == 400, study
            assert "StudyInstanceUID in the path is not a UID" in answer.json["message"]
    listed = f"/api/instances/{a.instances[0]}\\{b.instances[0]}/meta"
    assert centre.get(listed).status_code == 400


def test_research_preview_and_export_keep_to_the_accounts_hospital(world: World) -> None:
    from dicomnode.jobs.export import Cohort, select

    preview = client_of(world, "ra").get("/api/exports/preview").json
    assert (preview["patients"], preview["studies"]) == (1, 1)
    # A job keeps the scope with its cohort; an old job's row has none: all.
    chosen = select(world.node.archive, Cohort(issuers=[A]))
    assert [s["StudyInstanceUID"] for s in chosen] == [world.children[A].study]
    assert len(select(world.node.archive, Cohort())) == 2


def test_quarantine_list_keeps_to_the_admins_hospital(world: World) -> None:
    from tests.test_ingest import instance

    for calling, patient in (("A_ECHO", PATIENTS[2]), ("B_ECHO", PATIENTS[3])):
        held = instance(patient)
        del held.SequenceOfUltrasoundRegions
        assert world.node.ingestor.ingest(incoming(held, calling_ae=calling)).outcome is (
            Outcome.QUARANTINED
        )
    rows = world.node.archive.index.quarantined()
    mine = {r["studyinstanceuid"] for r in rows if r["issuer"] == A}
    theirs = {r["studyinstanceuid"] for r in rows if r["issuer"] == B}
    page = client_of(world, "admin_a").get("/quarantine").get_data(as_text=True)
    assert page.count("CHD-") >= 1
    assert all(p not in page for p in {r["pseudonym"] for r in rows if r["issuer"] == B})
    assert any(p in page for p in {r["pseudonym"] for r in rows if r["issuer"] == A})
    assert mine and theirs


# ---------------------------------------------------------------- accounts


def test_an_upgraded_index_keeps_every_account_seeing_all(tmp_path: Path) -> None:
    """Accounts from before revision 0011 (with a hospital or without) see
    every patient after the upgrade: nobody is locked out by it."""
    url = f"sqlite:///{tmp_path / 'index.sqlite'}"
    engine = create_index_engine(url)
    with engine.begin() as conn:
        command.upgrade(_config(conn), "0010")
        conn.execute(
            text(
                "INSERT INTO users (username, password_hash, role, disabled, created_at, issuer) "
                "VALUES ('amina', 'h', 'cardiologist', false, '2026-01-01', 'NCC Bishkek')"
            )
        )
    engine.dispose()
    index = Index(url)
    try:
        assert index.accounts.get("amina").sees is ALL  # type: ignore[union-attr]
        index.accounts.add("new", "h", "cardiologist", " NCC  Bishkek ")
        assert index.accounts.get("new").sees == frozenset({"NCC Bishkek"})  # type: ignore[union-attr]
        index.accounts.add("nohospital", "h", "researcher")
        assert index.accounts.get("nohospital").sees is ALL  # type: ignore[union-attr]
        index.accounts.update("amina", sees=["RCC Dushanbe", "NCC Bishkek "])
        assert index.accounts.get("amina").sees == frozenset({"RCC Dushanbe", "NCC Bishkek"})  # type: ignore[union-attr]
    finally:
        index.close()


@pytest.mark.slow
def test_user_commands_set_and_change_what_an_account_sees(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dicomnode.cli.main import main

    path = tmp_path / "node.toml"
    path.write_text(
        f'[node]\ndata_dir = "{tmp_path / "var"}"\nkey_dir = "{tmp_path / "secrets"}"\n',
        encoding="utf-8",
    )

    def user(*args: str) -> int:
        monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
        return main(["-c", str(path), "user", *args])

    assert user("add", "aigul", "--issuer", A, "--password-stdin") == 0
    assert user("add", "centre", "--issuer", CENTRE, "--sees", "*", "--password-stdin") == 0
    assert user("add", "both", "--sees", f"{A}, {B}", "--password-stdin") == 0
    assert user("add", "old", "--password-stdin") == 0
    capsys.readouterr()
    assert user("sees", "aigul", "--sees", f" {A} ,{B}") == 0
    assert user("sees", "old", "--sees", CENTRE) == 0
    assert user("sees", "aigul") == 2  # which hospitals?
    assert "--sees" in capsys.readouterr().err
    assert user("sees", "nobody", "--sees", "*") == 3
    assert user("sees", "aigul", "--sees", " , ") == 2  # no hospital named
    assert user("list", "--sees", "*") == 2
    assert user("add", "x" * 3, "--sees", "A\nB", "--password-stdin") == 3
    capsys.readouterr()
    assert user("list") == 0
    listing = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert listing["aigul"].endswith(f"sees {A}, {B}")
    assert listing["centre"].endswith("sees *")
    assert listing["old"].endswith(f"sees {CENTRE}")

    from dicomnode.config import Config
    from dicomnode.node import open_archive

    archive = open_archive(Config(data_dir=tmp_path / "var", key_dir=tmp_path / "secrets"))
    try:
        accounts = archive.index.accounts
        assert accounts.get("aigul").sees == frozenset({A, B})  # type: ignore[union-attr]
        assert accounts.get("centre").sees is ALL  # type: ignore[union-attr]
        assert accounts.get("both").sees == frozenset({A, B})  # type: ignore[union-attr]
        changes = [
            (r["object"], r["detail"])
            for r in reversed(archive.index.audit.rows())
            if r["event"] == "user-change"
        ]
    finally:
        archive.close()
    assert ("aigul", f"add, role cardiologist, issuer '{A}'") in changes  # the default
    assert ("centre", f"add, role cardiologist, issuer '{CENTRE}', sees all") in changes
    assert ("aigul", f"sees '{A}', '{B}'") in changes
    assert ("old", f"sees '{CENTRE}'") in changes


# ---------------------------------------------------------------- the query


@pytest.mark.slow
def test_the_issuer_restriction_is_applied_in_sql_at_every_level(any_index_config) -> None:
    """`Query.issuers` on SQLite and PostgreSQL: each level, with the
    computed counts and the study-level keys; an empty set is nothing."""
    from dicomnode.ingest.pipeline import Ingestor
    from dicomnode.node import open_archive

    archive = open_archive(any_index_config)
    try:
        ingestor = Ingestor(any_index_config, archive)
        for calling, patient in (("BISHKEK_ECHO", PATIENTS[0]), ("DUSHANBE_ECHO", PATIENTS[1])):
            ds = xa_instance(
                patient, frames=1, rows=16, cols=16, transfer_syntax=ExplicitVRLittleEndian
            )
            assert ingestor.ingest(incoming(ds, calling_ae=calling)).status == 0
        extra = {
            Level.PATIENT: {"NumberOfPatientRelatedInstances": ""},
            Level.STUDY: {"ModalitiesInStudy": "XA", "NumberOfStudyRelatedInstances": ""},
            Level.SERIES: {"Modality": "XA", "NumberOfSeriesRelatedInstances": ""},
            Level.IMAGE: {"SOPInstanceUID": ""},
        }

        def issuers_of(level: Level, sees: frozenset[str] | None) -> list[str]:
            keys = {"IssuerOfPatientID": "", "PatientID": "", **extra[level]}
            rows = archive.index.find(Query(level, keys, issuers=sees))
            return sorted(r["IssuerOfPatientID"] for r in rows)

        for level in extra:
            assert issuers_of(level, None) == ["NCC Bishkek", "RCC Dushanbe"], level
            assert issuers_of(level, frozenset({"RCC Dushanbe"})) == ["RCC Dushanbe"], level
            assert issuers_of(level, frozenset({"NCC Bishkek", "Elsewhere"})) == ["NCC Bishkek"]
            assert issuers_of(level, frozenset()) == [], level
    finally:
        archive.close()
