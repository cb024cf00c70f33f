"""The round trip with two partner hospitals played by real peers.

Bishkek's echo machine and cath lab send with DCMTK's dcmsend and its PACS
is DCMTK's storescp at its defaults; Dushanbe is an Orthanc that sends its
child's studies and receives the answer. The centre signs a plan and
decides both cases in the web viewer; the running node makes the reports
and forwards them. Each hospital holds its own child's report (PDF and SR)
under its own patient ID and study, readable as text in its language and
drawn as a page, and nothing of the other child; the centre's archive
still names neither child anywhere.
"""

from __future__ import annotations

import subprocess
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from werkzeug.security import generate_password_hash

from dicomnode.consult.document import ENCAPSULATED_PDF
from dicomnode.consult.words import WORDS
from dicomnode.node import Node
from dicomnode.ops.samples import PATIENTS, UID_ROOT, save, small_instance, xa_instance
from tests.conftest import DCMTK_ENV, free_port, make_config, on_free_ports
from tests.deid_scanner import Needle, NeedleSet, scan_dataset
from tests.test_consult import HEADERS, document, pdf_text, two_hospitals
from tests.test_jobs import wait_for
from tests.test_orthanc_peer import Orthanc
from tests.test_retrieve_peers import Listener, dciodvfy_errors, files_in
from tests.test_viewer import PASSWORD, as_user
from viewer import create_app

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def echo_and_angio(patient: int) -> list[Dataset]:
    """A child's echo and angio, one study, as a hospital's devices send them."""
    study = generate_uid(UID_ROOT)
    echo = small_instance(
        PATIENTS[patient], study_uid=study, series_uid=generate_uid(UID_ROOT), instance_number=1
    )
    angio = xa_instance(PATIENTS[patient], frames=3, rows=64, cols=64)
    angio.StudyInstanceUID = study
    for ds in (echo, angio):
        ds.AccessionNumber = f"ACC-{patient}"
    return [echo, angio]


def needles(patient: int) -> list[Needle]:
    child = PATIENTS[patient]
    case = f"child {patient}"
    return [
        Needle(case, "name", child.name.replace("^", " ")),
        Needle(case, "id", child.patient_id),
        Needle(case, "date", child.birth_date),
    ]


def test_two_hospitals_each_get_their_own_answer_and_nothing_else(tmp_path: Path) -> None:
    bishkek_pacs, orthanc_port = free_port(), free_port()
    remotes = two_hospitals(bishkek_pacs, "ORTHANC", orthanc_port)
    config = make_config(tmp_path / "node", remote_aes=remotes, forward_interval_seconds=0.2)
    received = tmp_path / "bishkek"
    received.mkdir()
    scp = Listener(
        ["storescp", "-aet", "BISHKEK_PACS", "-od", str(received), str(bishkek_pacs)],
        bishkek_pacs,
        tmp_path / "storescp.log",
    )
    with Node(config, web=False) as node:
        orthanc = on_free_ports(
            lambda: Orthanc(tmp_path / "orthanc", orthanc_port, node.dicom.port), count=0
        )
        try:
            sent = {0: echo_and_angio(0), 2: echo_and_angio(2)}
            files = [
                save(ds, tmp_path / "out" / f"{n}-{i}.dcm")
                for n, studies in sent.items()
                for i, ds in enumerate(studies)
            ]
            for path, ae in zip(files[:2], ("BISHKEK_ECHO", "BISHKEK_CATH"), strict=True):
                done = subprocess.run(
                    [
                        "dcmsend",
                        "-aet",
                        ae,
                        "-aec",
                        "CHDNODE",
                        "127.0.0.1",
                        str(node.dicom.port),
                        str(path),
                    ],
                    env=DCMTK_ENV,
                    capture_output=True,
                    text=True,
                )
                assert done.returncode == 0, done.stderr
            ids = [orthanc.call("POST", "/instances", p.read_bytes())["ID"] for p in files[2:]]  # type: ignore[index]
            orthanc.call("POST", "/modalities/chdnode/store", {"Resources": ids})
            cases = node.archive.index.cases
            wait_for(
                lambda: len(cases.listing()) == 2 and all(c.study_count for c in cases.listing()),
                what="both cases",
            )
            wait_for(lambda: node.archive.index.stats()["awaiting_ocr"] == 0, what="OCR")

            node.archive.index.accounts.add(
                "centre", generate_password_hash(PASSWORD), "cardiologist", sees=None
            )
            web = create_app(config, node.archive, b"k" * 32, node.ingestor).test_client()
            as_user(web, "centre")
            (bishkek,) = cases.listing(hospital="NCC Bishkek")
            (dushanbe,) = cases.listing(hospital="RCC Dushanbe")
            study = cases.get(bishkek.ref).studies[0]
            plan = {
                "defect": "secundum ASD",
                "plan": "new",
                "rims": {"aortic": 3.0},
                "slots": [{"code": "ASD-MAX-DIAMETER-2", "value_mm": 11.0}],
            }
            assert (
                web.post(f"/api/studies/{study}/plans", headers=HEADERS, json=plan).status_code
                == 201
            )
            assert (
                web.post(
                    f"/api/studies/{study}/plans/1/versions/1/sign", headers=HEADERS
                ).status_code
                == 201
            )
            for ref, form in (
                (
                    bishkek.ref,
                    {
                        "status": "accepted",
                        "device": "ASO 14 mm",
                        "date": "2027-03-01",
                        "note": "Arrive two days before",
                    },
                ),
                (dushanbe.ref, {"status": "surgery", "note": "Large perimembranous defect"}),
            ):
                decided = web.post(f"/cases/{ref}/status", data={**form, "csrf_token": "token"})
                assert decided.status_code == 303, decided.get_data(as_text=True)

            wait_for(lambda: len(files_in(received)) == 2, what="Bishkek's report")
            wait_for(
                lambda: len(orthanc.call("GET", "/instances")) == 3,  # type: ignore[arg-type]
                what="Dushanbe's report",
            )
            theirs = [
                dcmread(BytesIO(orthanc_file(orthanc, i)))
                for i in orthanc.call("GET", "/instances")  # type: ignore[union-attr]
            ]
        finally:
            orthanc.stop()
            scp.stop()

        # Bishkek: its own child, its own study, in Russian; nothing of Dushanbe's.
        got = {
            str(ds.SOPClassUID): (ds, path) for path in files_in(received) if (ds := dcmread(path))
        }
        original = str(sent[0][0].StudyInstanceUID)
        for ds, _ in got.values():
            assert (ds.PatientID, ds.StudyInstanceUID) == (PATIENTS[0].patient_id, original)
            assert str(ds.PatientName) == PATIENTS[0].name and ds.AccessionNumber == "ACC-0"
        pdf, path = got[ENCAPSULATED_PDF]
        text = pdf_text(document(pdf), tmp_path)
        assert "Иванов Алишер" in text and WORDS["ru"]["accepted"] in text and "ASO 14 mm" in text
        assert "王" not in text and "CN-000303" not in text
        assert not {e for e in dciodvfy_errors(path) if "Error" in e}, dciodvfy_errors(path)
        page = drawn(document(pdf), tmp_path)
        assert 0.002 < page < 0.2, page  # a page of text: some ink, not a blank or black page

        # Dushanbe: its report (PDF, no plan) among what it sent, in Chinese.
        reports = [ds for ds in theirs if ds.SOPClassUID == ENCAPSULATED_PDF]
        (report,) = reports
        assert report.PatientID == PATIENTS[2].patient_id
        assert report.StudyInstanceUID == str(sent[2][0].StudyInstanceUID)
        other = pdf_text(document(report), tmp_path)
        assert WORDS["zh"]["surgery"] in other and "王 小明" in other
        assert "Иванов" not in other and "KG-000101" not in other

        # The centre's archive: neither child named in any stored header or report.
        everyone = NeedleSet([*needles(0), *needles(2)])
        for stored in node.archive.blobs.root.rglob("*.dcm"):
            ds = dcmread(stored)
            assert not scan_dataset(everyone, ds, str(stored.name)), stored
            if ds.SOPClassUID == ENCAPSULATED_PDF:
                kept = pdf_text(document(ds), tmp_path)
                assert "Иванов" not in kept and "王" not in kept and ds.PatientID in kept


def orthanc_file(orthanc: Orthanc, instance: str) -> bytes:
    import urllib.request

    url = f"http://127.0.0.1:{orthanc.http_port}/instances/{instance}/file"
    with urllib.request.urlopen(url, timeout=60) as answer:
        return bytes(answer.read())


def drawn(pdf: bytes, folder: Path) -> float:
    """The share of dark pixels of the PDF's first page, drawn by pdftoppm."""
    (folder / "page.pdf").write_bytes(pdf)
    subprocess.run(
        [
            "pdftoppm",
            "-r",
            "50",
            "-png",
            "-singlefile",
            str(folder / "page.pdf"),
            str(folder / "page"),
        ],
        check=True,
    )
    gray = np.asarray(Image.open(folder / "page.png").convert("L"))
    return float((gray < 128).mean())
