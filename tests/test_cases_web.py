"""Referral cases in the web viewer: the list, a case, a decision.

A cardiologist of the centre (seeing every hospital) lists the cases by
hospital, status, defect and waiting time and moves one; an account of one
hospital sees only that hospital's cases, and another hospital's case
answers 404 by its URL, as a study does. Researchers see no cases.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.security import generate_password_hash

from dicomnode.config import Config
from dicomnode.ingest.pipeline import Ingestor
from storage.archive import Archive
from storage.cases import ACCEPTED, MORE_IMAGING, RECEIVED
from tests.test_cases import send, study_of
from tests.test_viewer import PASSWORD, as_user
from viewer import create_app


@pytest.fixture
def app(config: Config, archive: Archive, ingestor: Ingestor) -> Iterator[Flask]:
    accounts = archive.index.accounts
    hashed = generate_password_hash(PASSWORD)
    accounts.add("centre", hashed, "cardiologist", issuer="NCC Bishkek", sees=None)
    accounts.add("dushanbe", hashed, "cardiologist", issuer="RCC Dushanbe")
    accounts.add("science", hashed, "researcher", issuer="NCC Bishkek", sees=None)
    accounts.add("boss", hashed, "admin", issuer="NCC Bishkek", sees=None)
    send(ingestor, study_of(0), "BISHKEK_ECHO")
    send(ingestor, study_of(1), "DUSHANBE_ECHO")
    archive.index.cases.drain()
    yield create_app(config, archive, b"k" * 32)


def client(app: Flask, name: str) -> FlaskClient:
    made = app.test_client()
    as_user(made, name)
    return made


def refs(archive: Archive, issuer: str) -> str:
    (case,) = archive.index.cases.listing(hospital=issuer)
    return case.ref


def test_the_centre_lists_filters_and_decides(app: Flask, archive: Archive) -> None:
    centre = client(app, "centre")
    page = centre.get("/cases").get_data(as_text=True)
    bishkek, dushanbe = refs(archive, "NCC Bishkek"), refs(archive, "RCC Dushanbe")
    assert bishkek in page and dushanbe in page
    only = centre.get("/cases", query_string={"hospital": "RCC Dushanbe"}).get_data(as_text=True)
    assert dushanbe in only and bishkek not in only
    assert "No case matches." in centre.get("/cases?status=declined").get_data(as_text=True)
    assert "No case matches." in centre.get("/cases?waiting=3").get_data(as_text=True)
    assert centre.get("/cases?status=lost").status_code == 400
    assert centre.get("/cases?waiting=-1").status_code == 400
    answer = centre.post(
        f"/cases/{bishkek}/status",
        data={"status": ACCEPTED, "device": "ASO 12 mm", "date": "2027-03-01", "missing": "x"},
        headers={"X-CSRF-Token": "token"},
    )
    assert answer.status_code == 303
    shown = centre.get(f"/cases/{bishkek}").get_data(as_text=True)
    assert "Accepted for transcatheter closure" in shown and "ASO 12 mm" in shown
    case = archive.index.cases.get(bishkek)
    assert case.detail == {"device": "ASO 12 mm", "date": "2027-03-01"}  # other fields ignored
    assert case.updated_by == "centre"
    refused = centre.post(
        f"/cases/{bishkek}/status",
        data={"status": MORE_IMAGING, "note": "asked by phone"},
        headers={"X-CSRF-Token": "token"},
    )
    assert refused.status_code == 400  # the page again, saying why, keeping what was typed
    said = refused.get_data(as_text=True)
    assert "More imaging needed: fill in Imaging needed" in said
    assert 'value="asked by phone"' in said
    assert archive.index.cases.get(bishkek).status == ACCEPTED
    # The study page names its case.
    study = case.studies[0]
    assert bishkek in centre.get(f"/studies/{study}").get_data(as_text=True)


def test_a_hospital_sees_its_own_cases_only(app: Flask, archive: Archive) -> None:
    theirs = client(app, "dushanbe")
    bishkek, dushanbe = refs(archive, "NCC Bishkek"), refs(archive, "RCC Dushanbe")
    page = theirs.get("/cases").get_data(as_text=True)
    assert dushanbe in page and bishkek not in page and "NCC Bishkek" not in page
    assert theirs.get(f"/cases/{bishkek}").status_code == 404
    moved = theirs.post(
        f"/cases/{bishkek}/status",
        data={"status": MORE_IMAGING, "missing": "TEE"},
        headers={"X-CSRF-Token": "token"},
    )
    assert moved.status_code == 404
    assert archive.index.cases.get(bishkek).status == RECEIVED
    denied = [r for r in archive.index.audit.rows() if r["event"] == "access-denied"]
    assert {r["object"] for r in denied if r["user"] == "dushanbe"} == {bishkek}
    assert theirs.get("/cases/C-AAAA-AAAA").status_code == 404  # unknown: nothing audited
    own = theirs.get(f"/cases/{dushanbe}")
    assert own.status_code == 200 and 'class="case-status"' not in own.get_data(as_text=True)
    # A partner hospital reads its cases; the centre decides them.
    decided = theirs.post(
        f"/cases/{dushanbe}/status",
        data={"status": ACCEPTED, "device": "ASO", "date": "2027-03-01"},
        headers={"X-CSRF-Token": "token"},
    )
    assert decided.status_code == 403
    assert archive.index.cases.get(dushanbe).status == RECEIVED


def test_researchers_see_no_cases_and_posts_need_the_token(app: Flask, archive: Archive) -> None:
    science = client(app, "science")
    assert science.get("/cases").status_code == 403
    bishkek = refs(archive, "NCC Bishkek")
    assert science.get(f"/cases/{bishkek}").status_code == 403
    centre = client(app, "centre")
    forged = centre.post(f"/cases/{bishkek}/status", data={"status": "declined", "reason": "x"})
    assert forged.status_code in (400, 403)
    assert archive.index.cases.get(bishkek).status == RECEIVED


@pytest.mark.parametrize("language", ["ru", "zh"])
def test_the_case_pages_speak_the_users_language(
    app: Flask, archive: Archive, language: str
) -> None:
    centre = client(app, "centre")
    centre.post("/language", data={"language": language}, headers={"X-CSRF-Token": "token"})
    page = centre.get(f"/cases/{refs(archive, 'NCC Bishkek')}").get_data(as_text=True)
    expected = {"ru": "Изменить статус", "zh": "更改状态"}[language]
    assert f"<h2>{expected}</h2>" in page  # (the English is a key of the page's catalogue)
    received = {"ru": "Направление получено", "zh": "已收到转诊"}[language]
    assert f"<strong>{received}</strong>" in page


def test_administrators_read_the_service_figures(app: Flask, archive: Archive) -> None:
    archive.index.cases.set_status(
        refs(archive, "NCC Bishkek"), ACCEPTED, {"device": "ASO", "date": "2027-03-01"}, user="dr"
    )
    page = client(app, "boss").get("/service")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "NCC Bishkek" in text and "RCC Dushanbe" in text
    assert "Accepted for transcatheter closure" in text
    assert client(app, "centre").get("/service").status_code == 403
    assert client(app, "science").get("/service").status_code == 403
