"""Issue #17, DICOMweb by the letter as outside testers found it: QIDO-RS
lists (``\\`` and PS3.18 UID lists) that matched nothing, ``includefield=all``
ignored, ``fuzzymatching`` silently dropped, 204 for an empty search, paging
without a Warning; unknown routes answered 403 with an access-denied audit
record, 401s without ``WWW-Authenticate``, CORS preflights refused; and the
login back-off (429 with Retry-After, a refused attempt not lengthening it).

Most cases go through Flask's test client with HTTP Basic, as the neighbouring
tests do; one module of cases goes through the real HTTP server with
dicomweb-client and ``requests``, as OHIF or a script would.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass
from flask import Flask
from flask.testing import FlaskClient
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
from werkzeug.security import generate_password_hash

import viewer.auth as auth
from dicomnode.config import Config, ConfigError, load
from dicomnode.dimse.find import find
from dicomnode.node import Node, open_archive
from dicomnode.ops.samples import PATIENTS, UID_ROOT, small_instance, xa_instance
from dicomnode.status import PENDING
from storage.archive import Archive
from storage.keys import ATTRIBUTES, Level
from tests.conftest import make_config
from tests.test_frames import put
from tests.test_viewer import as_user
from viewer import create_app
from viewer.dicomweb import qido

PASSWORD = "correct horse battery"
FAST = "pbkdf2:sha256:1000"  # a cheap hash: these tests count answers, not hashing cost
OHIF = "https://ohif.hospital.example"
LOCAL_OHIF = "http://127.0.0.1:3000"
FUZZY = "The fuzzymatching parameter is not supported. Only literal matching has been performed."
MORE = "There are additional results that can be requested"
MODALITIES, STUDY_UID, PATIENT_ID = "00080061", "0020000D", "00100020"


@dataclass
class Stored:
    """Three studies of NCC Bishkek: an echo, an angio, and one with both."""

    echo: str
    angio: str
    both: str
    series_of_both: list[str]


def _store(archive: Archive) -> Stored:
    def echo(patient, study: str, series: str, number: int) -> Dataset:
        return small_instance(
            patient, study_uid=study, series_uid=series, instance_number=number, size=16
        )

    def angio(patient, study: str, series: str) -> Dataset:
        return xa_instance(
            patient,
            frames=2,
            rows=16,
            cols=16,
            transfer_syntax=ExplicitVRLittleEndian,
            study_uid=study,
            series_uid=series,
        )

    uids = [generate_uid(UID_ROOT) for _ in range(3)]
    put(archive, echo(PATIENTS[0], uids[0], generate_uid(UID_ROOT), 1))
    put(archive, angio(PATIENTS[1], uids[1], generate_uid(UID_ROOT)))
    series = [generate_uid(UID_ROOT), generate_uid(UID_ROOT)]
    put(archive, echo(PATIENTS[3], uids[2], series[0], 1))
    put(archive, echo(PATIENTS[3], uids[2], series[0], 2))
    put(archive, angio(PATIENTS[3], uids[2], series[1]))
    return Stored(*uids, series)


def basic(user: str = "pacs", password: str = PASSWORD) -> dict[str, str]:
    pair = f"{user}:{password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


def _users(archive: Archive) -> None:
    for name, role in (("pacs", "cardiologist"), ("reader", "researcher")):
        hashed = generate_password_hash(PASSWORD, method=FAST)
        archive.index.accounts.add(name, hashed, role, "NCC Bishkek")


@pytest.fixture(autouse=True)
def _cheap_dummy_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    dummy = generate_password_hash("not anyone's", method=FAST)
    monkeypatch.setattr(auth, "_dummy_hash", lambda: dummy)


@pytest.fixture
def cors_config(tmp_path: Path) -> Config:
    return make_config(tmp_path, cors_origins=f"{OHIF}, {LOCAL_OHIF}")


@pytest.fixture
def app(cors_config: Config) -> Iterator[Flask]:
    archive = open_archive(cors_config)
    _users(archive)
    yield create_app(cors_config, archive, b"k" * 32)
    archive.close()


@pytest.fixture
def stored(app: Flask) -> Stored:
    return _store(app.extensions["archive"])


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def search(client: FlaskClient, query: str, path: str = "/dicom-web/studies") -> list[dict]:
    answer = client.get(f"{path}?{query}" if query else path, headers=basic())
    assert answer.status_code == 200, (query, answer.status_code, answer.data[:300])
    assert answer.mimetype == "application/dicom+json"
    return answer.get_json()


def uids_of(found: list[dict], tag: str = STUDY_UID) -> set[str]:
    return {item[tag]["Value"][0] for item in found}


def trail_size(app: Flask) -> int:
    return len(app.extensions["archive"].index.audit.rows())


# --- QIDO-RS: lists, includefield, fuzzy matching, empty results, paging ----


def test_a_backslash_list_matches_what_c_find_matches(
    app: Flask, client: FlaskClient, stored: Stored
) -> None:
    """`ModalitiesInStudy=US\\XA` matched nothing: the value reached the index
    as the text "['US', 'XA']"."""
    everything = {stored.echo, stored.angio, stored.both}
    assert uids_of(search(client, "ModalitiesInStudy=US%5CXA")) == everything
    assert uids_of(search(client, "ModalitiesInStudy=XA")) == {stored.angio, stored.both}
    assert uids_of(search(client, "ModalitiesInStudy=MR%5CXA")) == {stored.angio, stored.both}
    two = f"{stored.echo}%5C{stored.angio}"
    assert uids_of(search(client, f"StudyInstanceUID={two}")) == {stored.echo, stored.angio}
    ids = f"{PATIENTS[0].patient_id}%5C{PATIENTS[3].patient_id}"
    assert uids_of(search(client, f"PatientID={ids}")) == {stored.echo, stored.both}
    # The same identifier by C-FIND finds the same studies.
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    identifier.PatientID = [PATIENTS[0].patient_id, PATIENTS[3].patient_id]
    answers = find(
        app.extensions["archive"],
        identifier,
        StudyRootQueryRetrieveInformationModelFind,
        retrieve_ae="CHDNODE",
        issuers=None,
    )
    by_c_find = {ds.StudyInstanceUID for status, ds in answers if status == PENDING}
    assert by_c_find == {stored.echo, stored.both}


def test_a_uid_list_of_ps3_18_is_comma_separated(client: FlaskClient, stored: Stored) -> None:
    """PS3.18 8.3.4.1: uid-list-match = attribute "=" 1#value (commas)."""
    two = f"{stored.echo},{stored.both}"
    assert uids_of(search(client, f"StudyInstanceUID={two}")) == {stored.echo, stored.both}
    found = search(
        client, f"SeriesInstanceUID={','.join(stored.series_of_both)}", "/dicom-web/series"
    )
    assert uids_of(found, "0020000E") == set(stored.series_of_both)
    # A comma inside another attribute's value is text, not a list.
    assert search(client, "StudyDescription=a,b") == []


def test_includefield_all_returns_every_attribute_the_index_has(
    client: FlaskClient, stored: Stored
) -> None:
    def tags(level: Level) -> set[str]:
        return {f"{a.tag:08X}" for a in ATTRIBUTES.values() if a.level.depth <= level.depth}

    (study,) = search(client, f"StudyInstanceUID={stored.both}&includefield=all")
    assert tags(Level.STUDY) <= set(study), tags(Level.STUDY) - set(study)
    assert study["00081030"]["Value"] == [PATIENTS[3].description]  # StudyDescription
    assert study["00100040"]["Value"] == ["M"]  # PatientSex
    assert study["00201206"]["Value"] == [2] and study["00201208"]["Value"] == [3]
    assert sorted(study[MODALITIES]["Value"]) == ["US", "XA"]
    assert "00080016" not in study and "00080060" not in study  # no lower level
    series = search(client, "includefield=all", f"/dicom-web/studies/{stored.both}/series")
    assert len(series) == 2
    for found in series:
        assert tags(Level.SERIES) - tags(Level.STUDY) <= set(found)
        assert found["00080070"]["Value"] == ["SyntheticVendor"]  # Manufacturer
        assert "00080018" not in found  # SOPInstanceUID: instance level
    path = f"/dicom-web/studies/{stored.both}/series/{stored.series_of_both[0]}/instances"
    instances = search(client, "includefield=all", path)
    assert len(instances) == 2
    for found in instances:
        assert tags(Level.IMAGE) - tags(Level.SERIES) <= set(found)
        assert found["00080023"]["Value"] == ["20261103"]  # ContentDate


def test_includefield_by_keyword_by_tag_in_lists_and_repeated(
    client: FlaskClient, stored: Stored
) -> None:
    plain = search(client, f"StudyInstanceUID={stored.echo}")[0]
    assert "00081030" not in plain and "00101010" not in plain
    for query in (
        "includefield=StudyDescription,00101010",
        "includefield=StudyDescription&includefield=00101010",
        "includefield=00081030&includefield=PatientAge",
    ):
        (found,) = search(client, f"StudyInstanceUID={stored.echo}&{query}")
        assert {"00081030", "00101010"} <= set(found), query


def test_unsupported_attributes_are_named_in_a_warning_not_refused(
    client: FlaskClient, stored: Stored
) -> None:
    """An attribute of the data dictionary the index does not keep (or one of
    a lower level) is left out and named in a Warning; a name that is no
    attribute at all is a 400 that says so."""
    answer = client.get(
        f"/dicom-web/studies?StudyInstanceUID={stored.echo}&includefield=PatientComments,Modality",
        headers=basic(),
    )
    assert answer.status_code == 200
    (found,) = answer.get_json()
    assert "00104000" not in found and "00080060" not in found
    warning = answer.headers["Warning"]
    assert warning.startswith("299 ") and "PatientComments" in warning and "Modality" in warning
    # Matching on an attribute the index cannot match: ignored, and said so.
    ignored = client.get("/dicom-web/studies?PatientComments=anything", headers=basic())
    assert ignored.status_code == 200 and len(ignored.get_json()) == 3
    assert "PatientComments" in ignored.headers["Warning"]
    wrong = client.get("/dicom-web/studies?PatientNmae=X", headers=basic())
    assert wrong.status_code == 400 and "PatientNmae" in wrong.get_json()["message"]


@pytest.mark.slow
def test_fuzzymatching_true_is_answered_literally_with_the_standards_warning(
    client: FlaskClient, stored: Stored
) -> None:
    name = "Nazarov*"  # PATIENTS[3], Latin script
    literal = client.get(f"/dicom-web/studies?PatientName={name}", headers=basic())
    assert "Warning" not in literal.headers
    fuzzy = client.get(f"/dicom-web/studies?PatientName={name}&fuzzymatching=true", headers=basic())
    assert fuzzy.status_code == 200 and fuzzy.get_json() == literal.get_json()
    assert fuzzy.headers["Warning"] == f'299 http://localhost/dicom-web: "{FUZZY}"'
    off = client.get("/dicom-web/studies?fuzzymatching=false", headers=basic())
    assert off.status_code == 200 and "Warning" not in off.headers
    odd = client.get("/dicom-web/studies?fuzzymatching=perhaps", headers=basic())
    assert odd.status_code == 400 and "fuzzymatching" in odd.get_json()["message"]


def test_a_search_without_matches_is_200_with_an_empty_list(
    client: FlaskClient, stored: Stored
) -> None:
    """Current PS3.18 (10.6.3, 8.3.4.4.1): 200 and an empty payload list; the
    204 of earlier editions is gone. (A search under a study the account
    cannot see is 404, as every route naming it: `viewer.scope`.)"""
    for path in (
        "/dicom-web/studies?PatientID=CHD-0000-0000",
        f"/dicom-web/studies/{stored.echo}/series?Modality=XA",
        "/dicom-web/instances?SOPInstanceUID=1.2.3.4",
    ):
        answer = client.get(path, headers=basic())
        assert answer.status_code == 200, path
        assert answer.mimetype == "application/dicom+json" and answer.get_json() == []


def test_paging_says_when_more_results_can_be_requested(
    client: FlaskClient, stored: Stored, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = client.get("/dicom-web/studies?limit=2", headers=basic())
    assert len(first.get_json()) == 2 and MORE in first.headers["Warning"]
    last = client.get("/dicom-web/studies?limit=2&offset=2", headers=basic())
    assert len(last.get_json()) == 1 and "Warning" not in last.headers
    exact = client.get("/dicom-web/studies?limit=3", headers=basic())
    assert len(exact.get_json()) == 3 and "Warning" not in exact.headers
    seen = uids_of(first.get_json()) | uids_of(last.get_json())
    assert seen == {stored.echo, stored.angio, stored.both}
    # The node's own maximum truncates a search without a limit, and says so.
    monkeypatch.setattr(qido, "MAX_RESULTS", 2)
    capped = client.get("/dicom-web/studies", headers=basic())
    assert len(capped.get_json()) == 2 and MORE in capped.headers["Warning"]
    above = client.get("/dicom-web/studies?limit=50", headers=basic())
    assert len(above.get_json()) == 2 and MORE in above.headers["Warning"]


# --- unknown routes and methods: 404 / 405, nothing audited -----------------


def test_unknown_routes_are_404_and_leave_no_audit_record(
    app: Flask, client: FlaskClient, stored: Stored
) -> None:
    before = trail_size(app)
    unknown = (
        "/dicom-web/",
        "/dicom-web/nothing",
        f"/dicom-web/studies/{stored.echo}/nonsense",
        f"/dicom-web/studies/{stored.echo}/series/x/y/z",
        "/dicom-web/workitems",
    )
    for path in unknown:
        assert client.get(path, headers=basic()).status_code == 404, path
    # HTTP Basic is for DICOMweb only: on the viewer's API it opens nothing,
    # so an unknown /api path is a 401 like any other there, not a map of it.
    assert client.get("/api/nothing", headers=basic()).status_code == 401
    as_user(client, "pacs")
    for path in (*unknown, "/api/nothing", "/api/studies/x/y"):
        assert client.get(path).status_code == 404, path
    # A researcher too: nothing is refused where nothing exists.
    as_user(client, "reader")
    assert client.get("/dicom-web/nothing").status_code == 404
    assert trail_size(app) == before
    assert not [r for r in app.extensions["archive"].index.audit.rows() if r["outcome"]]


def test_unknown_methods_are_405_before_csrf_and_leave_no_audit_record(
    app: Flask, client: FlaskClient, stored: Stored
) -> None:
    before = trail_size(app)
    for method in ("DELETE", "PUT", "PATCH"):
        assert client.open("/dicom-web/studies", method=method, headers=basic()).status_code == 405
    as_user(client, "pacs")
    for method in ("DELETE", "PUT"):
        # No handler, so nothing for a CSRF token to protect: 405, not 400.
        answer = client.open(f"/dicom-web/studies/{stored.echo}", method=method)
        assert answer.status_code == 405, method
        assert "GET" in answer.headers["Allow"]
    assert trail_size(app) == before


# --- 401 carries WWW-Authenticate under /dicom-web -------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("pacs", "wrong"),
        basic("nobody", PASSWORD),
        {"Authorization": "Bearer abc.def.ghi"},
        {"Authorization": "Basic not-base64!"},
        {"Authorization": "Digest username=pacs"},
    ],
    ids=["none", "wrong-password", "unknown-user", "bearer", "garbled", "digest"],
)
def test_every_401_under_dicom_web_carries_a_basic_challenge(
    client: FlaskClient, headers: dict[str, str]
) -> None:
    for path in ("/dicom-web/studies", "/dicom-web/nothing"):
        answer = client.get(path, headers=headers)
        assert answer.status_code == 401, (path, answer.status_code)
        challenge = answer.headers.get("WWW-Authenticate", "")
        assert challenge.startswith('Basic realm="'), challenge
        assert answer.get_json()["message"]


def test_the_viewers_api_does_not_challenge_for_basic(client: FlaskClient) -> None:
    """/api is for the node's own pages (session cookie): no browser dialog."""
    answer = client.get("/api/stats")
    assert answer.status_code == 401 and "WWW-Authenticate" not in answer.headers


# --- CORS -----------------------------------------------------------------


def preflight(
    client: FlaskClient, path: str, origin: str, method: str = "GET", headers: str = ""
) -> object:
    asked = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        asked["Access-Control-Request-Headers"] = headers
    return client.options(path, headers=asked)


def no_cors(answer: object) -> bool:
    return not [h for h, _ in answer.headers.items() if h.lower().startswith("access-control-")]  # type: ignore[attr-defined]


def test_a_preflight_from_a_listed_origin_needs_no_login(
    app: Flask, client: FlaskClient, stored: Stored
) -> None:
    before = trail_size(app)
    answer = preflight(client, "/dicom-web/studies", OHIF, "GET", "authorization, accept")
    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Origin"] == OHIF
    methods = {m.strip() for m in answer.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "POST", "OPTIONS"} <= methods and "DELETE" not in methods
    allowed = {h.strip().lower() for h in answer.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "accept", "content-type"} <= allowed
    assert "x-csrf-token" not in allowed  # cross-origin clients use Basic, never the cookie
    assert int(answer.headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in answer.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in answer.headers
    assert answer.data == b""
    # A route that only reads: what it supports, nothing more.
    only_get = preflight(client, f"/dicom-web/studies/{stored.both}/series", LOCAL_OHIF)
    assert only_get.status_code == 204
    assert only_get.headers["Access-Control-Allow-Origin"] == LOCAL_OHIF
    assert "POST" not in only_get.headers["Access-Control-Allow-Methods"]
    assert trail_size(app) == before  # a preflight is no read and no login


def test_a_preflight_for_a_route_that_does_not_exist_is_404(
    app: Flask, client: FlaskClient
) -> None:
    before = trail_size(app)
    answer = preflight(client, "/dicom-web/nothing/here", OHIF)
    assert answer.status_code == 404 and "Access-Control-Allow-Methods" not in answer.headers
    assert trail_size(app) == before


@pytest.mark.slow
@pytest.mark.parametrize(
    "origin",
    [
        "null",
        OHIF + "/",
        OHIF + ":8443",
        OHIF.upper(),
        "http://ohif.hospital.example",
        "https://ohif.hospital.example.evil.example",
        "https://evil.example",
        f"https://evil.example/{OHIF}",
        f"{OHIF}, https://evil.example",
        "http://127.0.0.1:3001",
        "",
    ],
)
def test_an_unlisted_origin_gets_no_cors_headers(
    client: FlaskClient, stored: Stored, origin: str
) -> None:
    asked = preflight(client, "/dicom-web/studies", origin)
    assert asked.status_code == 401 and no_cors(asked)  # as any request without login
    answer = client.get("/dicom-web/studies", headers={**basic(), "Origin": origin})
    assert answer.status_code == 200 and no_cors(answer)


def test_responses_to_a_listed_origin_carry_and_expose_headers(
    client: FlaskClient, stored: Stored
) -> None:
    answer = client.get("/dicom-web/studies?limit=1", headers={**basic(), "Origin": OHIF})
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == OHIF
    assert "Origin" in answer.headers["Vary"]
    exposed = {h.strip() for h in answer.headers["Access-Control-Expose-Headers"].split(",")}
    assert {
        "Warning",
        "Content-Type",
        "Content-Length",
        "Retry-After",
        "Content-Location",
    } <= exposed
    assert "WWW-Authenticate" in exposed
    assert "Access-Control-Allow-Credentials" not in answer.headers
    # Errors too, so the client can read why (a 401 and its challenge).
    refused = client.get("/dicom-web/studies", headers={"Origin": OHIF})
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == OHIF
    # Only DICOMweb is shared: the viewer's own API and pages are not.
    as_user(client, "pacs")
    assert no_cors(client.get("/api/stats", headers={"Origin": OHIF}))
    assert no_cors(preflight(client, "/api/stats", OHIF))


def test_a_cross_origin_post_with_the_session_cookie_stays_refused(
    app: Flask, client: FlaskClient, stored: Stored
) -> None:
    """SameSite=Lax lets the cookie go along between ports of one host (the
    same site): the CSRF token, which another origin cannot read, still
    refuses the upload."""
    as_user(client, "pacs")
    before = app.extensions["archive"].index.stats()["instances"]
    answer = client.post(
        "/dicom-web/studies",
        data=b"--b\r\nContent-Type: application/dicom\r\n\r\nx\r\n--b--\r\n",
        headers={
            "Origin": LOCAL_OHIF,
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=b',
        },
    )
    assert answer.status_code == 400 and "CSRF" in answer.get_json()["message"]
    assert app.extensions["archive"].index.stats()["instances"] == before


def test_without_listed_origins_there_are_no_cors_headers_at_all(
    tmp_path: Path, archive: Archive, config: Config
) -> None:
    _users(archive)
    plain = create_app(config, archive, b"k" * 32).test_client()
    asked = preflight(plain, "/dicom-web/studies", OHIF)
    assert asked.status_code == 401 and no_cors(asked)
    answer = plain.get("/dicom-web/studies", headers={**basic(), "Origin": OHIF})
    assert answer.status_code == 200 and no_cors(answer)
    assert "Origin" not in answer.headers.get("Vary", "")


@pytest.mark.parametrize(
    ("text", "origins"),
    [
        ("", ()),
        ("https://OHIF.Hospital.example", ("https://ohif.hospital.example",)),
        (
            "https://ohif.example:443, http://ohif.example:80/",
            ("https://ohif.example", "http://ohif.example"),
        ),
        ("http://[::1]:3000,http://10.0.0.7:3000", ("http://[::1]:3000", "http://10.0.0.7:3000")),
    ],
)
def test_listed_origins_are_written_as_browsers_send_them(text: str, origins: tuple) -> None:
    from dicomnode.config import parse_origins

    assert parse_origins(text) == origins


@pytest.mark.parametrize(
    "text",
    [
        "*",
        "null",
        "https://*.hospital.example",
        "ohif.hospital.example",
        "ftp://ohif.hospital.example",
        "https://ohif.hospital.example/viewer",
        "https://user@ohif.hospital.example",
        "https://ohif.hospital.example?x=1",
        "https://ohif.hospital.example:99999",
        "https://",
    ],
)
def test_a_wildcard_or_malformed_origin_is_refused_at_start(text: str, tmp_path: Path) -> None:
    settings = tmp_path / "node.toml"
    settings.write_text("[node]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="cors_origins"):
        load(settings, {"DICOMNODE_CORS_ORIGINS": text})


# --- the login back-off: 429 with Retry-After, never extended by a refusal --


class Clock:
    def __init__(self) -> None:
        self.now = 1.9e9

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    frozen = Clock()
    monkeypatch.setattr(auth, "clock", frozen)
    return frozen


def _login(client: FlaskClient, password: str, address: str) -> object:
    with client.session_transaction() as session:
        session["csrf"] = "token"
    return client.post(
        "/login",
        data={"username": "pacs", "password": password, "csrf_token": "token"},
        environ_base={"REMOTE_ADDR": address},
    )


@pytest.mark.slow
def test_a_refused_attempt_during_the_wait_does_not_lengthen_it(
    app: Flask, client: FlaskClient, clock: Clock
) -> None:
    guesser = app.test_client()
    wait = 0
    for n in range(20):  # guessing on after every wait, until the wait is 8 s
        guess = _login(guesser, f"guess {n}", "203.0.113.7")
        if guess.status_code == 401:
            continue
        assert guess.status_code == 429
        wait = int(guess.headers["Retry-After"])
        if wait >= 8:
            break
        clock.now += wait
    assert wait >= 8
    told = _login(client, PASSWORD, "10.0.0.5")
    assert told.status_code == 429 and int(told.headers["Retry-After"]) == wait
    assert "Wrong user name" not in told.get_data(as_text=True)
    # Every kind of attempt during the wait, by form and by Basic, right or wrong:
    for step in range(wait - 1):
        clock.now += 1
        left = wait - step - 1
        for answer in (
            _login(guesser, "another guess", "203.0.113.7"),
            _login(client, PASSWORD, "10.0.0.5"),
            client.get("/dicom-web/studies", headers=basic("pacs", PASSWORD)),
            client.get("/dicom-web/studies", headers=basic("pacs", "wrong")),
        ):
            assert answer.status_code == 429  # never 401 "wrong password"
            assert int(answer.headers["Retry-After"]) == left
    clock.now += 1  # the wait as first announced, and no longer
    assert client.get("/dicom-web/studies", headers=basic("pacs", PASSWORD)).status_code == 200
    assert _login(client, PASSWORD, "10.0.0.5").status_code == 302


# --- through the real server, as OHIF or a script would --------------------


@pytest.fixture
def web(cors_config: Config) -> Iterator[tuple[Node, str]]:
    with Node(replace(cors_config, http_host="127.0.0.1"), web=True) as node:
        _users(node.archive)
        yield node, f"http://127.0.0.1:{node.http_port}/dicom-web"


@pytest.mark.slow
def test_over_http_dicomweb_client_lists_includefield_fuzzy_and_empty(
    web: tuple[Node, str], caplog: pytest.LogCaptureFixture
) -> None:
    node, url = web
    stored = _store(node.archive)
    client = DICOMwebClient(url=url, session=create_session_from_user_pass("pacs", PASSWORD))
    found = client.search_for_studies(search_filters={"ModalitiesInStudy": "US\\XA"})
    assert uids_of(found) == {stored.echo, stored.angio, stored.both}
    two = client.search_for_studies(
        search_filters={"StudyInstanceUID": [stored.echo, stored.angio]}
    )
    assert uids_of(two) == {stored.echo, stored.angio}  # repeated parameters, one list
    (study,) = client.search_for_studies(
        search_filters={"StudyInstanceUID": stored.both}, fields=["all"]
    )
    assert sorted(study[MODALITIES]["Value"]) == ["US", "XA"] and "00081030" in study
    with caplog.at_level(logging.WARNING, logger="dicomweb_client"):
        fuzzy = client.search_for_studies(
            search_filters={"PatientName": "nazarov*"}, fuzzymatching=True
        )
    assert uids_of(fuzzy) == {stored.both}
    assert FUZZY in caplog.text
    assert client.search_for_studies(search_filters={"PatientID": "CHD-0000-0000"}) == []
    empty = requests.get(f"{url}/studies?PatientID=nobody", auth=("pacs", PASSWORD), timeout=10)
    assert (empty.status_code, empty.json()) == (200, [])
    assert empty.headers["Content-Type"].startswith("application/dicom+json")
    # Paging to the end, as dicomweb-client does with get_remaining.
    paged = client.search_for_studies(limit=1, get_remaining=True)
    assert uids_of(paged) == {stored.echo, stored.angio, stored.both} and len(paged) == 3


def test_over_http_preflight_404_and_challenge(web: tuple[Node, str]) -> None:
    node, url = web
    rows = len(node.archive.index.audit.rows())
    asked = requests.options(
        f"{url}/studies",
        headers={
            "Origin": OHIF,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
        timeout=10,
    )
    assert asked.status_code == 204 and asked.headers["Access-Control-Allow-Origin"] == OHIF
    for origin in ("null", "https://evil.example"):
        refused = requests.options(
            f"{url}/studies",
            headers={"Origin": origin, "Access-Control-Request-Method": "GET"},
            timeout=10,
        )
        assert "Access-Control-Allow-Origin" not in refused.headers
    missing = requests.get(f"{url}/no/such/thing", auth=("pacs", PASSWORD), timeout=10)
    assert missing.status_code == 404
    wrong = requests.delete(f"{url}/studies", auth=("pacs", PASSWORD), timeout=10)
    assert wrong.status_code == 405
    anonymous = requests.get(f"{url}/studies", headers={"Origin": OHIF}, timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith('Basic realm="')
    assert anonymous.headers["Access-Control-Allow-Origin"] == OHIF
    events = [r["event"] for r in node.archive.index.audit.rows()]
    assert len(events) >= rows and "access-denied" not in events


@pytest.mark.slow
def test_search_and_store_answer_406_for_an_accept_they_cannot_meet(
    client: FlaskClient, stored: Stored
) -> None:
    """A search or a store whose Accept excludes DICOM JSON (e.g. DICOM XML
    only) is 406, like metadata, and nothing is stored (PS3.18 §8.7)."""
    from io import BytesIO

    from pydicom import dcmread

    before = len(search(client, ""))
    body = BytesIO()
    new = small_instance(
        PATIENTS[2], study_uid=generate_uid(), series_uid=generate_uid(), instance_number=1, size=16
    )
    new.save_as(body, enforce_file_format=True)
    multipart = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + body.getvalue()
    multipart += b"\r\n--b--\r\n"
    assert dcmread(BytesIO(body.getvalue())).SOPInstanceUID
    for accept in ("application/pdf", 'multipart/related; type="application/dicom+xml"'):
        answer = client.get("/dicom-web/studies", headers={**basic(), "Accept": accept})
        assert answer.status_code == 406, accept
        answer = client.post(
            "/dicom-web/studies",
            data=multipart,
            headers={
                **basic(),
                "Accept": accept,
                "Content-Type": 'multipart/related; type="application/dicom"; boundary=b',
            },
        )
        assert answer.status_code == 406, accept
    assert len(search(client, "")) == before  # nothing was stored
    for accept in ("application/dicom+json", "application/json", "*/*", ""):
        headers = {**basic(), "Accept": accept} if accept else basic()
        assert client.get("/dicom-web/studies", headers=headers).status_code == 200, accept
