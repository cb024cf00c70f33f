"""The consultation report goes home re-identified for its own hospital only.

Two partner hospitals refer a child each; the centre signs a plan and
decides. Each hospital's AE receives its own report (the PDF in its
language and the signed plan SR) under its own patient ID and Study
Instance UID; the other hospital receives nothing of that child; the
centre's copies stay pseudonymous; without the linkage key nothing leaves
and the case says why; a report routed to the wrong hospital is refused.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import logging
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from werkzeug.security import generate_password_hash

from dicomnode.config import Config, RemoteAE
from dicomnode.consult.document import ENCAPSULATED_PDF
from dicomnode.consult.making import Maker, destination
from dicomnode.consult.notices import Notices
from dicomnode.consult.words import STATUSES, WORDS
from dicomnode.deid.pipeline import LINKAGE_KEY
from dicomnode.ingest.pipeline import Ingestor
from dicomnode.jobs.forwarding import Forwarder
from dicomnode.node import open_archive
from dicomnode.ops.samples import PATIENTS
from storage.archive import Archive
from storage.audit import AuditFilter
from storage.forwarding import enqueue_in, forward_queue
from storage.keys import Level
from storage.query import Query
from storage.reports import QUEUED, UNSENT
from tests.conftest import free_port, make_config
from tests.test_cases import send, study_of
from tests.test_viewer import PASSWORD, as_user
from viewer import create_app

HEADERS = {"X-CSRF-Token": "token"}


def pdf_text(pdf: bytes, folder: Path) -> str:
    """What a person's PDF reader shows as text (poppler's pdftotext)."""
    path = folder / "report.pdf"
    path.write_bytes(pdf)
    done = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, check=True
    )
    path.unlink()
    return done.stdout.decode("utf-8")


def pdf_images(pdf: bytes, folder: Path) -> int:
    """How many pictures the PDF holds (poppler's pdfimages)."""
    path = folder / "images.pdf"
    path.write_bytes(pdf)
    listed = subprocess.run(["pdfimages", "-list", str(path)], capture_output=True, check=True)
    return len(listed.stdout.decode().splitlines()) - 2  # two header lines


def document(ds: Dataset) -> bytes:
    return bytes(ds.EncapsulatedDocument)[: int(ds.EncapsulatedDocumentLength)]


class Hospital:
    """A hospital's PACS: a storage SCP that keeps every data set it takes."""

    def __init__(self, title: str) -> None:
        self.port = free_port()
        self.received: list[Dataset] = []
        ae = AE(ae_title=title)
        syntaxes = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, syntaxes)
        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self.store)]
        )

    def store(self, event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        self.received.append(ds)
        return 0x0000


@pytest.fixture
def hospitals() -> Iterator[dict[str, Hospital]]:
    found = {"BISHKEK_PACS": Hospital("BISHKEK_PACS"), "DUSHANBE_PACS": Hospital("DUSHANBE_PACS")}
    yield found
    for hospital in found.values():
        hospital.server.shutdown()


def two_hospitals(bishkek_pacs: int, dushanbe_ae: str, dushanbe_port: int) -> tuple[RemoteAE, ...]:
    """Bishkek: echo, cath lab and a PACS that takes its reports (Russian);
    Dushanbe: an echo machine and ``dushanbe_ae`` (Chinese reports)."""
    return (
        RemoteAE("BISHKEK_ECHO", "127.0.0.1", 11113, "NCC Bishkek"),
        RemoteAE("BISHKEK_CATH", "127.0.0.1", 11114, "NCC Bishkek"),
        RemoteAE(
            "BISHKEK_PACS",
            "127.0.0.1",
            bishkek_pacs,
            "NCC Bishkek",
            language="ru",
            receives_reports=True,
        ),
        RemoteAE("DUSHANBE_ECHO", "127.0.0.1", 11115, "RCC Dushanbe"),
        RemoteAE(
            dushanbe_ae,
            "127.0.0.1",
            dushanbe_port,
            "RCC Dushanbe",
            language="zh",
            receives_reports=True,
        ),
    )


@pytest.fixture
def world(
    tmp_path: Path, hospitals: dict[str, Hospital]
) -> Iterator[tuple[Config, Archive, Ingestor]]:
    remotes = two_hospitals(
        hospitals["BISHKEK_PACS"].port, "DUSHANBE_PACS", hospitals["DUSHANBE_PACS"].port
    )
    config = make_config(tmp_path, remote_aes=remotes)
    archive = open_archive(config)
    yield config, archive, Ingestor(config, archive)
    archive.close()


def _centre(config: Config, archive: Archive) -> FlaskClient:
    if archive.index.accounts.get("centre") is None:
        archive.index.accounts.add(
            "centre",
            generate_password_hash(PASSWORD),
            "cardiologist",
            issuer="NCC Bishkek",
            sees=None,
        )
    client = create_app(config, archive, b"k" * 32).test_client()
    as_user(client, "centre")
    return client


def _sign_plan(client: FlaskClient, study: str, archive: Archive | None = None) -> str:
    """A plan signed on the study; with ``archive``, one length measured on
    its first image and saved with the plan (the report's key image)."""
    body: dict[str, Any] = {
        "defect": "secundum ASD",
        "plan": "new",
        "slots": [{"code": "ASD-MAX-DIAMETER-2", "value_mm": 9.5}],
        "rims": {"aortic": 2.0},
        "note": "balloon sizing first",
    }
    if archive is not None:
        (image,) = [
            r["SOPInstanceUID"]
            for r in archive.index.find(
                Query(Level.IMAGE, {"StudyInstanceUID": study, "SOPInstanceUID": ""})
            )
        ][:1]
        points = [[10, 20], [50, 20]]
        measured = client.post(
            f"/api/instances/{image}/measure",
            headers=HEADERS,
            json={"kind": "length", "points": points, "frame": 0},
        )
        assert measured.status_code == 200, measured.json
        drawn = {"uid": image, "frame": 0, "kind": "length", "points": points, **measured.json}
        body["measurements"] = [drawn]
    saved = client.post(f"/api/studies/{study}/plans", headers=HEADERS, json=body)
    assert saved.status_code == 201, saved.json
    signed = client.post(f"/api/studies/{study}/plans/1/versions/1/sign", headers=HEADERS)
    assert signed.status_code == 201, signed.json
    return str(signed.json["signed_sr_uid"])


def _decide(archive: Archive, issuer: str, status: str, **detail: str) -> str:
    (case,) = archive.index.cases.listing(hospital=issuer)
    archive.index.cases.set_status(case.ref, status, detail, user="centre")
    return case.ref


def _referred(world: tuple[Config, Archive, Ingestor]) -> dict[str, Any]:
    """Both hospitals' children referred; the Bishkek child's plan signed;
    both decided and their reports made."""
    config, archive, ingestor = world
    bishkek_sent, dushanbe_sent = study_of(0), study_of(2)
    bishkek = send(ingestor, bishkek_sent, "BISHKEK_ECHO")
    send(ingestor, dushanbe_sent, "DUSHANBE_ECHO")
    archive.index.cases.drain()
    sr = _sign_plan(_centre(config, archive), bishkek, archive)
    refs = {
        "NCC Bishkek": _decide(
            archive,
            "NCC Bishkek",
            "accepted",
            device="ASO 12 mm",
            date="2027-02-15",
            note="Please send the latest ECG",
        ),
        "RCC Dushanbe": _decide(
            archive, "RCC Dushanbe", "declined", reason="defect too large for a device"
        ),
    }
    assert Maker(config, archive, ingestor).run_once() == 2
    assert Maker(config, archive, ingestor).run_once() == 0  # each decision once
    return {
        "sr": sr,
        "refs": refs,
        "original": {
            "NCC Bishkek": str(bishkek_sent[0].StudyInstanceUID),
            "RCC Dushanbe": str(dushanbe_sent[0].StudyInstanceUID),
        },
    }


def due_now(archive: Archive) -> None:
    """Every waiting forwarding row due now (its back-off skipped)."""
    with archive.index.engine.begin() as conn:
        conn.execute(forward_queue.update().values(next_attempt_at=forward_queue.c.created_at))


def _report(archive: Archive, ref: str) -> Any:
    (report,) = archive.index.reports.of_case(ref)
    return report


@pytest.mark.slow
def test_each_hospital_gets_its_own_childs_report_under_its_own_identity(
    world: tuple[Config, Archive, Ingestor], hospitals: dict[str, Hospital], tmp_path: Path
) -> None:
    config, archive, _ = world
    made = _referred(world)
    bishkek = _report(archive, made["refs"]["NCC Bishkek"])
    dushanbe = _report(archive, made["refs"]["RCC Dushanbe"])
    assert (bishkek.state, bishkek.destination, bishkek.language) == (QUEUED, "BISHKEK_PACS", "ru")
    assert (dushanbe.state, dushanbe.destination, dushanbe.language) == (
        QUEUED,
        "DUSHANBE_PACS",
        "zh",
    )
    assert made["sr"] in bishkek.uids and len(dushanbe.uids) == 1  # the PDF alone: no plan

    # The centre's copy: pseudonymous, in the hospital's language.
    kept = dcmread(BytesIO(archive.read(bishkek.pdf_uid)))
    assert kept.SOPClassUID == ENCAPSULATED_PDF and kept.PatientID.startswith("CHD-")
    text = pdf_text(document(kept), tmp_path)
    assert WORDS["ru"]["title"] in text and kept.PatientID in text
    assert "Иванов" not in text and "KG-000101" not in text
    assert "ASO 12 mm" in text and "Please send the latest ECG" in text
    assert WORDS["ru"]["key_images"] in text and "кадр 1" in text  # the measured frame, drawn
    assert pdf_images(document(kept), tmp_path) == 1
    assert not archive.index.cases.get(made["refs"]["NCC Bishkek"]).new_imaging  # not imaging

    assert Forwarder(config, archive).run_once() == {"sent": 3, "waiting": 0}
    got = {h: {str(ds.SOPClassUID): ds for ds in hospitals[h].received} for h in hospitals}
    assert {h: len(hospitals[h].received) for h in hospitals} == {
        "BISHKEK_PACS": 2,
        "DUSHANBE_PACS": 1,
    }
    child = PATIENTS[0]
    for ds in got["BISHKEK_PACS"].values():
        assert ds.PatientID == child.patient_id and str(ds.PatientName) == child.name
        assert ds.PatientBirthDate == child.birth_date
        assert ds.StudyInstanceUID == made["original"]["NCC Bishkek"]  # files into their study
        assert "PatientIdentityRemoved" not in ds
    pdf = pdf_text(document(got["BISHKEK_PACS"][ENCAPSULATED_PDF]), tmp_path)
    assert "Иванов Алишер" in pdf and child.patient_id in pdf and WORDS["ru"]["title"] in pdf
    assert "CHD-" not in pdf  # their copy names the child as they do
    (sr,) = (ds for uid, ds in got["BISHKEK_PACS"].items() if uid != ENCAPSULATED_PDF)
    assert sr.SOPInstanceUID == made["sr"]
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == made["original"]["NCC Bishkek"]

    theirs = got["DUSHANBE_PACS"][ENCAPSULATED_PDF]
    assert theirs.PatientID == PATIENTS[2].patient_id
    other = pdf_text(document(theirs), tmp_path)
    assert WORDS["zh"]["title"] in other and "王 小明" in other
    assert "Иванов" not in other and "KG-000101" not in other
    # The centre still holds its copies pseudonymous, as stored.
    assert dcmread(BytesIO(archive.read(bishkek.pdf_uid))).PatientID == kept.PatientID
    events = [r["event"] for r in archive.index.audit.rows(AuditFilter(), limit=500)]
    assert events.count("reidentify") == 3 and events.count("case-report-sent") == 3
    assert _report(archive, made["refs"]["NCC Bishkek"]).delivered


@pytest.mark.slow
def test_without_the_linkage_key_nothing_leaves_and_the_report_says_why(
    world: tuple[Config, Archive, Ingestor], hospitals: dict[str, Hospital], tmp_path: Path
) -> None:
    config, archive, _ = world
    made = _referred(world)
    key = config.key_dir / LINKAGE_KEY
    aside = tmp_path / "offline.key"
    shutil.move(key, aside)
    assert Forwarder(config, archive).run_once() == {"sent": 0, "waiting": 3}
    assert not any(h.received for h in hospitals.values())
    report = _report(archive, made["refs"]["NCC Bishkek"])
    assert {s.state for s in report.sent} == {"pending"}
    assert all("linkage key is not available" in s.last_error for s in report.sent)
    shutil.move(aside, key)  # the key back: the next attempt sends
    due_now(archive)
    assert Forwarder(config, archive).run_once() == {"sent": 3, "waiting": 0}


@pytest.mark.slow
def test_a_report_routed_to_another_hospital_is_refused(
    world: tuple[Config, Archive, Ingestor], hospitals: dict[str, Hospital]
) -> None:
    """A row that would take the Bishkek child's report to Dushanbe (a
    mistake, a tampered queue) re-identifies nothing and sends nothing."""
    config, archive, _ = world
    made = _referred(world)
    bishkek = _report(archive, made["refs"]["NCC Bishkek"])
    with archive.index.engine.begin() as conn:
        from sqlalchemy import text as sql

        conn.execute(sql("DELETE FROM forward_queue"))
        enqueue_in(conn, list(bishkek.uids), "DUSHANBE_PACS", report=bishkek.pk)
    assert Forwarder(config, archive).run_once() == {"sent": 0, "waiting": 2}
    assert not hospitals["DUSHANBE_PACS"].received
    reasons = {s.last_error for s in _report(archive, made["refs"]["NCC Bishkek"]).sent}
    assert reasons == {"the destination is not an AE of the hospital that referred the child"}
    events = [r["event"] for r in archive.index.audit.rows(AuditFilter(), limit=500)]
    assert "reidentify" not in events


def test_which_ae_receives_a_hospitals_reports(tmp_path: Path) -> None:
    config = make_config(tmp_path)  # Bishkek: two AEs, neither marked; Dushanbe: one
    assert destination(config, "RCC Dushanbe")[0].ae_title == "DUSHANBE_ECHO"  # type: ignore[union-attr]
    none, why = destination(config, "NCC Bishkek")
    assert none is None and "receives_reports" in why
    assert destination(config, "Nowhere")[0] is None
    marked = replace(config.remote_aes[1], receives_reports=True)
    config = replace(config, remote_aes=(config.remote_aes[0], marked, config.remote_aes[2]))
    assert destination(config, "NCC Bishkek")[0] == marked


def test_a_report_without_an_ae_is_kept_unsent_with_the_reason(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    archive = open_archive(config)
    ingestor = Ingestor(config, archive)
    try:
        send(ingestor, study_of(0), "BISHKEK_ECHO")
        archive.index.cases.drain()
        ref = _decide(archive, "NCC Bishkek", "surgery")
        assert Maker(config, archive, ingestor).run_once() == 1
        report = _report(archive, ref)
        assert report.state == UNSENT and "receives_reports" in report.reason
        assert archive.index.forwarding.counts() == {}
        assert archive.read(report.pdf_uid)  # made and kept all the same
    finally:
        archive.close()


def test_every_language_says_every_word() -> None:
    assert all(set(words) == set(WORDS["en"]) for words in WORDS.values())
    assert set(STATUSES) <= set(WORDS["en"])  # every status named in every language


@pytest.mark.slow
def test_asking_for_more_imaging_sends_the_hospital_what_is_missing(
    world: tuple[Config, Archive, Ingestor], hospitals: dict[str, Hospital], tmp_path: Path
) -> None:
    config, archive, ingestor = world
    send(ingestor, study_of(0), "BISHKEK_ECHO")
    archive.index.cases.drain()
    ref = _decide(archive, "NCC Bishkek", "more-imaging", missing="TEE, four-chamber view")
    assert Maker(config, archive, ingestor).run_once() == 1
    assert Forwarder(config, archive).run_once() == {"sent": 1, "waiting": 0}
    (pdf,) = hospitals["BISHKEK_PACS"].received
    text = pdf_text(document(pdf), tmp_path)
    assert WORDS["ru"]["more-imaging"] in text and "TEE, four-chamber view" in text
    assert _report(archive, ref).delivered


def _referred_once(world: tuple[Config, Archive, Ingestor]) -> tuple[Any, FlaskClient]:
    """Bishkek's child referred (no decision yet), and Bishkek's partner logged in."""
    config, archive, ingestor = world
    send(ingestor, study_of(0), "BISHKEK_ECHO")
    archive.index.cases.drain()
    (case,) = archive.index.cases.listing(hospital="NCC Bishkek")
    return case, _partner(config, archive, "aigul", "NCC Bishkek")


def _partner(config: Config, archive: Archive, name: str, issuer: str) -> FlaskClient:
    archive.index.accounts.add(name, generate_password_hash(PASSWORD), "partner", issuer=issuer)
    client = create_app(config, archive, b"k" * 32).test_client()
    as_user(client, name)
    return client


@pytest.mark.slow
def test_a_partner_sees_its_own_child_named_and_nothing_of_another_hospital(
    world: tuple[Config, Archive, Ingestor], tmp_path: Path
) -> None:
    config, archive, _ = world
    made = _referred(world)
    bishkek, dushanbe = made["refs"]["NCC Bishkek"], made["refs"]["RCC Dushanbe"]
    partner = _partner(config, archive, "aigul", "NCC Bishkek")
    listed = partner.get("/cases").get_data(as_text=True)
    assert bishkek in listed and dushanbe not in listed
    page = partner.get(f"/cases/{bishkek}").get_data(as_text=True)
    assert "Иванов Алишер" in page and PATIENTS[0].patient_id in page  # theirs, named
    assert 'action="/cases/' + bishkek + '/status"' not in page  # they do not decide
    assert partner.get(f"/cases/{dushanbe}").status_code == 404
    report = _report(archive, bishkek)
    assert partner.get(f"/cases/{dushanbe}/reports/{report.pk}.pdf").status_code == 404
    theirs = partner.get(f"/cases/{bishkek}/reports/{report.pk}.pdf")
    assert theirs.status_code == 200 and theirs.mimetype == "application/pdf"
    assert "Иванов Алишер" in pdf_text(theirs.data, tmp_path)
    decided = partner.post(
        f"/cases/{bishkek}/status",
        headers=HEADERS,
        data={"status": "declined", "reason": "x", "csrf_token": "token"},
    )
    assert decided.status_code == 403
    # The centre's user sees the pseudonym and its own copy, never the name.
    centre = _centre(config, archive)
    page = centre.get(f"/cases/{bishkek}").get_data(as_text=True)
    assert "Иванов" not in page and PATIENTS[0].patient_id not in page
    kept = centre.get(f"/cases/{bishkek}/reports/{report.pk}.pdf")
    assert "Иванов" not in pdf_text(kept.data, tmp_path)
    events = archive.index.audit.rows(AuditFilter(event="reidentify"), limit=50)
    assert {e["user"] for e in events} == {"aigul"}  # the forwarder has sent nothing yet
    assert any(
        e["object"] == dushanbe
        for e in archive.index.audit.rows(AuditFilter(event="access-denied"), limit=50)
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "note",
    [
        "Иванов Алишер's ECG attached",
        "ECG for KG-000101",
        "born 14.03.2019, ECG attached",
        "IVANOV ALISHER ECG",
        "ivanov_alisher: ECG",
        "И\u200bванов Алишер",  # a zero-width space inside the name
        "Сестра Петрова Айгерим (KZ-000505) тоже направлена",  # another child
        "call Dr Osmonov Bakyt on 0555123456",  # a doctor, a phone
        "Mother Gulnara, phone +996 555 123 456",
        "call +996\u200b555\u200b123\u200b456",  # hidden characters split the phone
        "Mother\u2060Gulnara asked",
        "call +996\u180e555\u180e123\u180e456",
        "\u3164\u2800\U000e0041",  # only blank-looking fillers and a tag character
    ],
)
def test_a_note_that_names_the_child_is_refused_and_kept_nowhere(
    world: tuple[Config, Archive, Ingestor], note: str
) -> None:
    _, archive, _ = world
    case, partner = _referred_once(world)
    refused = partner.post(f"/cases/{case.ref}/notes", data={"text": note, "csrf_token": "token"})
    assert refused.status_code == 400
    assert "the case knows whose it is" in refused.get_data(as_text=True)
    assert archive.index.cases.get(case.ref).notes == ()
    kept = partner.post(
        f"/cases/{case.ref}/notes",
        data={"text": "ECG attached\nSaturation 92 %", "csrf_token": "token"},
    )
    assert kept.status_code == 303
    (written,) = archive.index.cases.get(case.ref).notes
    assert written["text"] == "ECG attached\nSaturation 92 %" and written["user"] == "aigul"


@pytest.mark.slow
def test_without_the_key_a_partner_sees_no_name_and_cannot_add_a_note(
    world: tuple[Config, Archive, Ingestor], tmp_path: Path
) -> None:
    config, archive, _ = world
    case, partner = _referred_once(world)
    shutil.move(config.key_dir / LINKAGE_KEY, tmp_path / "offline.key")
    page = partner.get(f"/cases/{case.ref}").get_data(as_text=True)
    assert "the linkage key is not available" in page and "Иванов" not in page
    answer = partner.post(f"/cases/{case.ref}/notes", data={"text": "ECG", "csrf_token": "token"})
    assert answer.status_code == 503 and archive.index.cases.get(case.ref).notes == ()


def test_a_partner_account_sees_one_hospital_only(tmp_path: Path) -> None:
    from storage.accounts import AccountError

    config = make_config(tmp_path)
    archive = open_archive(config)
    try:
        accounts = archive.index.accounts
        with pytest.raises(AccountError):
            accounts.add("nobody", "x", "partner")  # no hospital
        with pytest.raises(AccountError):
            accounts.add("wide", "x", "partner", issuer="NCC Bishkek", sees=None)
        accounts.add("aigul", "x", "partner", issuer="NCC Bishkek")
        with pytest.raises(AccountError):
            accounts.update("aigul", sees=None)
        with pytest.raises(AccountError):
            accounts.update("aigul", sees=["NCC Bishkek", "RCC Dushanbe"])
        accounts.update("aigul", issuer="RCC Dushanbe", sees=["RCC Dushanbe"])  # moved whole
        assert accounts.get("aigul").sees == frozenset({"RCC Dushanbe"})  # type: ignore[union-attr]
    finally:
        archive.close()


class Relay:
    """A small SMTP relay on loopback that keeps each message it is given."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, conn.makefile("rwb") as stream:
                self._session(stream)

    def _session(self, stream: Any) -> None:
        def say(line: str) -> None:
            stream.write(line.encode() + b"\r\n")
            stream.flush()

        say("220 relay")
        while line := stream.readline():
            verb = line.decode().strip().upper()
            if verb.startswith(("EHLO", "HELO")):
                say("250 relay")
            elif verb == "DATA":
                say("354 go on")
                body = []
                while (part := stream.readline()) not in (b".\r\n", b""):
                    body.append(part)
                self.messages.append(b"".join(body).decode())
                say("250 kept")
            elif verb == "QUIT":
                say("221 bye")
                return
            else:
                say("250 ok")

    def close(self) -> None:
        with contextlib.suppress(OSError):  # wakes the thread waiting in accept
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=30)


def test_hospitals_are_told_of_each_move_by_mail_naming_no_one(tmp_path: Path) -> None:
    relay = Relay()
    remotes = (
        RemoteAE(
            "DUSHANBE_ECHO",
            "127.0.0.1",
            11115,
            "RCC Dushanbe",
            language="ru",
            notify_emails=("cardio@dushanbe.example", "head@dushanbe.example"),
        ),
        RemoteAE("BISHKEK_ECHO", "127.0.0.1", 11113, "NCC Bishkek"),  # nobody to tell
    )
    config = make_config(
        tmp_path,
        remote_aes=remotes,
        smtp_relay=f"127.0.0.1:{relay.port}",
        web_address="https://chd.centre.example/",
    )
    archive = open_archive(config)
    ingestor = Ingestor(config, archive)
    notices = Notices(config, archive.index)
    try:
        send(ingestor, study_of(1), "DUSHANBE_ECHO")
        send(ingestor, study_of(0), "BISHKEK_ECHO")
        archive.index.cases.drain()
        assert notices.run_once() == 1 and notices.run_once() == 0  # told once
        ref = _decide(
            archive,
            "RCC Dushanbe",
            "more-imaging",
            missing="TEE, four-chamber view",
            note="Raҳimova: ask for the TEE",
        )
        relay.close()  # the relay goes down: the move waits
        assert notices.run_once() == 0
        relay = Relay()
        config = replace(config, smtp_relay=f"127.0.0.1:{relay.port}")
        assert Notices(config, archive.index).run_once() == 1
        (mail,) = relay.messages
        parsed = email.message_from_string(mail, policy=email.policy.default)
        text = f"{parsed['subject']}\n{parsed.get_content()}"  # type: ignore[attr-defined]
        assert ref in parsed["subject"] and f"https://chd.centre.example/cases/{ref}" in text
        assert parsed["to"] == "cardio@dushanbe.example, head@dushanbe.example"
        assert WORDS["ru"]["more-imaging"] in text
        for secret in ("Раҳимова", "Rahimova", "TJ-000202", "TEE", "CHD-", "20200921"):
            assert secret not in mail and secret not in text, secret
    finally:
        relay.close()
        archive.close()


def test_a_login_tells_what_moved_since_the_last_one(
    world: tuple[Config, Archive, Ingestor],
) -> None:
    config, archive, ingestor = world
    send(ingestor, study_of(0), "BISHKEK_ECHO")
    send(ingestor, study_of(2), "DUSHANBE_ECHO")
    archive.index.cases.drain()
    archive.index.accounts.add(
        "aigul", generate_password_hash(PASSWORD), "partner", issuer="NCC Bishkek"
    )
    app = create_app(config, archive, b"k" * 32)

    def log_in() -> str:  # a new browser each time, as the next day's
        browser = app.test_client()
        with browser.session_transaction() as session:
            session["csrf"] = "token"
        answer = browser.post(
            "/login",
            data={"username": "aigul", "password": PASSWORD, "csrf_token": "token"},
            follow_redirects=True,
        )
        assert answer.status_code == 200
        return answer.get_data(as_text=True)

    assert "Since your last visit" not in log_in()  # a first login: nothing to tell
    ref = _decide(archive, "NCC Bishkek", "under-review")
    other = _decide(archive, "RCC Dushanbe", "under-review")
    page = log_in()
    assert "Since your last visit" in page and ref in page and other not in page
    assert "Since your last visit" not in log_in()  # told once


def test_case_send_queues_an_unsent_report_once_the_hospital_has_an_ae(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dicomnode.cli.main import main

    config = make_config(tmp_path)  # Bishkek: two AEs, neither marked
    archive = open_archive(config)
    ingestor = Ingestor(config, archive)
    send(ingestor, study_of(0), "BISHKEK_ECHO")
    archive.index.cases.drain()
    ref = _decide(archive, "NCC Bishkek", "declined", reason="pulmonary hypertension")
    assert Maker(config, archive, ingestor).run_once() == 1
    archive.close()
    settings = tmp_path / "node.toml"

    def configured(marked: str) -> None:
        settings.write_text(
            f'[node]\ndata_dir = "{config.data_dir}"\nkey_dir = "{config.key_dir}"\n'
            + "".join(
                f'[[remote_ae]]\nae_title = "{ae}"\nhost = "127.0.0.1"\nport = {port}\n'
                f'issuer = "NCC Bishkek"\nreceives_reports = {str(ae == marked).lower()}\n'
                for ae, port in (("BISHKEK_ECHO", 11113), ("BISHKEK_PACS", 11116))
            )
        )

    monkeypatch.setenv("DICOMNODE_CONFIG", str(settings))
    configured("")
    assert main(["case", "show", ref]) == 0
    assert "not sent (several [[remote_ae]]" in capsys.readouterr().out
    assert main(["case", "send", ref]) == 2
    assert "receives_reports" in capsys.readouterr().err
    configured("BISHKEK_PACS")
    assert main(["case", "send", ref]) == 0
    assert "1 instances of 1 reports queued for BISHKEK_PACS" in capsys.readouterr().out
    assert main(["case", "show", ref]) == 0
    assert "waiting for BISHKEK_PACS" in capsys.readouterr().out


@pytest.mark.slow
def test_a_note_with_the_hospitals_own_study_uid_or_nothing_visible_is_refused(
    world: tuple[Config, Archive, Ingestor],
) -> None:
    _, archive, ingestor = world
    sent = study_of(0)
    send(ingestor, sent, "BISHKEK_ECHO")
    archive.index.cases.drain()
    (case,) = archive.index.cases.listing(hospital="NCC Bishkek")
    partner = _partner(world[0], archive, "aigul", "NCC Bishkek")
    for text in (f"see study {sent[0].StudyInstanceUID}", "\u200b\u200b\ufeff\u00ad"):
        answer = partner.post(
            f"/cases/{case.ref}/notes", data={"text": text, "csrf_token": "token"}
        )
        assert answer.status_code == 400, text
    assert archive.index.cases.get(case.ref).notes == ()


def test_the_command_line_refuses_details_that_identify_anyone_as_the_web_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dicomnode.cli.main import main

    config = make_config(tmp_path)
    archive = open_archive(config)
    send(Ingestor(config, archive), study_of(0), "BISHKEK_ECHO")
    archive.index.cases.drain()
    (case,) = archive.index.cases.listing(hospital="NCC Bishkek")
    archive.close()
    monkeypatch.setenv("DICOMNODE_CONFIG", os.devnull)
    monkeypatch.setenv("DICOMNODE_DATA_DIR", str(config.data_dir))
    monkeypatch.setenv("DICOMNODE_KEY_DIR", str(config.key_dir))
    for reason in (
        "Иванов Алишер KG-000101 born 14.03.2019",
        "Mother Gulnara, +996 555 123 456",
        "call +996\u200b555\u200b123\u200b456",
    ):
        assert main(["case", "set", case.ref, "declined", "--reason", reason]) == 2
        said = capsys.readouterr()
        assert "identifies anyone" in said.err and "Иванов" not in said.err + said.out
    shutil.move(config.key_dir / LINKAGE_KEY, tmp_path / "offline.key")  # shapes still checked
    assert main(["case", "set", case.ref, "declined", "--reason", "call +996 555 123 456"]) == 2
    assert main(["case", "set", case.ref, "declined", "--reason", "pulmonary hypertension"]) == 0


@pytest.mark.slow
def test_two_children_under_one_hospital_number_get_no_named_report(
    world: tuple[Config, Archive, Ingestor], hospitals: dict[str, Hospital]
) -> None:
    """A hospital number given to two children (reuse, a registration slip):
    one case, two identities; nothing is named and the case says why."""
    config, archive, ingestor = world
    first, second = study_of(0), study_of(4)
    for ds in second:
        ds.PatientID = PATIENTS[0].patient_id  # Петрова under Иванов's number
    send(ingestor, first, "BISHKEK_ECHO")
    send(ingestor, second, "BISHKEK_ECHO")
    archive.index.cases.drain()
    (case,) = archive.index.cases.listing(hospital="NCC Bishkek")
    assert case.study_count == 2
    ref = _decide(archive, "NCC Bishkek", "surgery")
    assert Maker(config, archive, ingestor).run_once() == 1
    assert Forwarder(config, archive).run_once() == {"sent": 0, "waiting": 1}
    assert not hospitals["BISHKEK_PACS"].received
    (sent,) = _report(archive, ref).sent
    assert sent.last_error.startswith("the case's studies name different children")
    partner = _partner(config, archive, "aigul", "NCC Bishkek")
    page = partner.get(f"/cases/{ref}").get_data(as_text=True)
    assert "Иванов" not in page and "Петрова" not in page
    assert "different children under one hospital number" in page
    (report,) = archive.index.reports.of_case(ref)
    named = partner.get(f"/cases/{ref}/reports/{report.pk}.pdf")
    assert named.status_code == 503 and "different children" in named.get_data(as_text=True)
    # Both children are still looked for in what is typed; a plain note is kept.
    for text, code in (("Alisher's ECG", 400), ("Aigerim's ECG", 400), ("ECG attached", 303)):
        answer = partner.post(f"/cases/{ref}/notes", data={"text": text, "csrf_token": "token"})
        assert answer.status_code == code, text


@pytest.mark.slow
@pytest.mark.parametrize("name", ["王^\U0002003e明", "علي^محمد"])
def test_a_name_no_font_can_draw_holds_the_report_and_logs_nothing_of_it(
    world: tuple[Config, Archive, Ingestor],
    hospitals: dict[str, Hospital],
    caplog: pytest.LogCaptureFixture,
    name: str,
) -> None:
    """A rare CJK character (real Chinese names have them) vanishes when
    drawn; an Arabic-script name is drawn unshaped and reversed: neither is
    sent as if it were the name."""
    config, archive, ingestor = world
    child = study_of(2)
    for ds in child:
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = name
    send(ingestor, child, "DUSHANBE_ECHO")
    archive.index.cases.drain()
    ref = _decide(archive, "RCC Dushanbe", "surgery")
    caplog.set_level(logging.DEBUG)
    assert Maker(config, archive, ingestor).run_once() == 1
    assert Forwarder(config, archive).run_once() == {"sent": 0, "waiting": 1}
    (sent,) = _report(archive, ref).sent
    assert sent.last_error.startswith("a character of the patient's name")
    assert not hospitals["DUSHANBE_PACS"].received
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not any(part in logged for part in name.split("^"))


@pytest.mark.slow
def test_the_hospitals_copy_carries_none_of_the_centres_study_values(
    world: tuple[Config, Archive, Ingestor], hospitals: dict[str, Hospital], tmp_path: Path
) -> None:
    config, archive, _ = world
    made = _referred(world)
    assert Forwarder(config, archive).run_once()["sent"] == 3
    for ds in hospitals["BISHKEK_PACS"].received:
        assert (ds.StudyDate, ds.StudyTime, ds.StudyID, ds.ReferringPhysicianName) == ("",) * 4
        assert "ContributingEquipmentSequence" not in ds
    (pdf,) = [d for d in hospitals["BISHKEK_PACS"].received if d.SOPClassUID == ENCAPSULATED_PDF]
    kept = dcmread(BytesIO(archive.read(_report(archive, made["refs"]["NCC Bishkek"]).pdf_uid)))
    shifted = kept.StudyDate  # the centre's (shifted) date: printed in its copy only
    day = f"{shifted[:4]}-{shifted[4:6]}-{shifted[6:]}"
    assert day in pdf_text(document(kept), tmp_path)
    assert day not in pdf_text(document(pdf), tmp_path)


@pytest.mark.slow
def test_a_wrong_key_is_said_as_such_and_case_send_queues_only_what_did_not_arrive(
    world: tuple[Config, Archive, Ingestor], hospitals: dict[str, Hospital]
) -> None:
    config, archive, _ = world
    made = _referred(world)
    ref = made["refs"]["NCC Bishkek"]
    key = config.key_dir / LINKAGE_KEY
    real = key.read_text()
    key.write_text("ab" * 32)
    assert Forwarder(config, archive).run_once()["sent"] == 0
    page = _centre(config, archive).get(f"/cases/{ref}").get_data(as_text=True)
    assert "not the one the identity was sealed with" in page
    key.write_text(real)
    due_now(archive)
    assert Forwarder(config, archive).run_once()["sent"] == 3
    report = _report(archive, ref)
    assert report.delivered
    assert archive.index.reports.send(report.pk, "BISHKEK_PACS") == 0  # nothing twice


def test_research_exports_leave_the_consultation_reports_out(
    world: tuple[Config, Archive, Ingestor],
) -> None:
    from dicomnode.jobs.export import _instances

    _, archive, ingestor = world
    send(ingestor, study_of(0), "BISHKEK_ECHO")
    archive.index.cases.drain()
    _decide(archive, "NCC Bishkek", "surgery")
    assert Maker(world[0], archive, ingestor).run_once() == 1
    (case,) = archive.index.cases.listing(hospital="NCC Bishkek")
    study = archive.index.cases.get(case.ref).studies[0]
    listed = {r["SOPInstanceUID"] for r in _instances(archive, [{"StudyInstanceUID": study}])}
    (report,) = archive.index.reports.of_case(case.ref)
    assert listed and report.pdf_uid not in listed


def _stow(client: FlaskClient, *datasets: Dataset) -> Any:
    """STOW-RS by the logged-in account, as a browser session posts it."""
    boundary = "b0undary"
    parts = []
    for ds in datasets:
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        parts.append(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + buffer.getvalue()
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    kind = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return client.post("/dicom-web/studies", data=body, headers={**HEADERS, "Content-Type": kind})


@pytest.mark.slow
def test_a_partners_upload_is_new_imaging_of_its_own_child_only(
    world: tuple[Config, Archive, Ingestor],
) -> None:
    """A partner sends the TEE that was asked for by STOW-RS: the same child
    (its hospital's number) joins its case, which goes back to received. A
    number of another hospital's child makes a child of the partner's own
    hospital: nothing reaches the other hospital's case."""
    config, archive, ingestor = world
    send(ingestor, study_of(0), "BISHKEK_ECHO")
    send(ingestor, study_of(2), "DUSHANBE_ECHO")
    archive.index.cases.drain()
    ref = _decide(archive, "NCC Bishkek", "more-imaging", missing="TEE")
    other = archive.index.cases.listing(hospital="RCC Dushanbe")[0]
    partner = _partner(config, archive, "aigul", "NCC Bishkek")
    answer = _stow(partner, *study_of(0, count=1))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    stranger = study_of(2, count=1)  # Dushanbe's child's number, sent by Bishkek
    assert _stow(partner, *stranger).status_code == 200
    archive.index.cases.drain()
    mine = archive.index.cases.get(ref)
    assert (len(mine.studies), mine.status) == (2, "received")  # what was asked for came
    assert len(archive.index.cases.get(other.ref).studies) == 1  # untouched
    bishkek = archive.index.cases.listing(hospital="NCC Bishkek")
    assert len(bishkek) == 2  # the stranger is a child of Bishkek's, in a case of its own
