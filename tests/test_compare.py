"""The study page's list of the same child's other studies, to set beside
it: only that child (its pseudonym at the same hospital), never another
child's nor another hospital's, newest first and bounded."""

from __future__ import annotations

import re

from flask.testing import FlaskClient
from pydicom.uid import generate_uid

from dicomnode.config import Config
from dicomnode.ingest.pipeline import Ingestor
from dicomnode.ops.samples import PATIENTS
from storage.archive import Archive
from tests.compare_fixtures import run
from tests.conftest import incoming
from tests.test_doppler import cardiologist
from viewer import studies


def _stored(ingestor: Ingestor, ds: object, ae: str = "BISHKEK_CATH") -> str:
    done = ingestor.ingest(incoming(ds, calling_ae=ae))
    assert done.status == 0, done
    return str(done.dataset.StudyInstanceUID)


def _listed(client: FlaskClient, study: str) -> list[str]:
    page = client.get(f"/studies/{study}")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    if 'id="compare"' not in text:
        return []
    block = text[text.index('id="compare"') : text.index("</details>")]
    return re.findall(r'href="/studies/([0-9.]+)"', block)


def test_only_the_same_childs_other_studies_are_offered(
    config: Config, archive: Archive, ingestor: Ingestor
) -> None:
    child = PATIENTS[1]
    now = _stored(ingestor, run(generate_uid(), "20261120", fps=15, frames=4, rate=None, seed=1)[0])
    before = _stored(
        ingestor, run(generate_uid(), "20250305", fps=25, frames=4, rate=None, seed=2)[0]
    )
    older = _stored(
        ingestor, run(generate_uid(), "20240110", fps=25, frames=4, rate=None, seed=3)[0]
    )
    # Another child at the same hospital, and the same hospital number sent
    # by another hospital (another child there): neither is this child.
    _stored(
        ingestor,
        run(generate_uid(), "20250101", fps=15, frames=4, rate=None, seed=4, patient=PATIENTS[2])[
            0
        ],
    )
    _stored(
        ingestor,
        run(generate_uid(), "20250102", fps=15, frames=4, rate=None, seed=5)[0],
        "DUSHANBE_ECHO",
    )
    client = cardiologist(config, archive)
    assert _listed(client, now) == [before, older]  # newest first
    assert _listed(client, older) == [now, before]
    page = client.get(f"/studies/{now}").get_data(as_text=True)
    assert page.count('data-compared="') == 2 and child.patient_id not in page


def test_the_list_is_bounded(config: Config, archive: Archive, ingestor: Ingestor) -> None:
    made = [
        _stored(
            ingestor,
            run(generate_uid(), f"2025{month:02}01", fps=15, frames=2, rate=None, seed=month)[0],
        )
        for month in range(1, studies.COMPARED + 4)
    ]
    client = cardiologist(config, archive)
    shown = _listed(client, made[-1])
    assert shown == made[-2::-1][: studies.COMPARED]


def test_a_child_with_one_study_has_no_list(
    config: Config, archive: Archive, ingestor: Ingestor
) -> None:
    only = _stored(
        ingestor, run(generate_uid(), "20261120", fps=15, frames=2, rate=None, seed=1)[0]
    )
    assert _listed(cardiologist(config, archive), only) == []
