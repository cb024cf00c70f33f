"""Issue #17, an outside tester's LOW finding: a C-FIND or QIDO-RS list of
about a thousand ``\\`` values reached the index as SQL and failed there
(SQLite: "Expression tree is too large"; PostgreSQL caps bound parameters
at 65535), answering HTTP 500 / C001 "unable to process". A list longer
than `storage.matching.MAX_LIST_VALUES` is now a clear query error on every
path: QIDO 400 with a message, C-FIND A900 with an Error Comment; a list up
to the bound matches on both index back ends.

Also here: the Study's Instances search of PS3.18 (``/studies/{s}/instances``)
that answered 404.
"""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from dicomnode.dimse.find import find
from dicomnode.dimse.retrieve import MAX_UIDS
from dicomnode.ops.samples import PATIENTS, UID_ROOT
from dicomnode.status import IDENTIFIER_DOES_NOT_MATCH, PENDING, SUCCESS
from storage.archive import Archive
from storage.keys import ATTRIBUTES, Level
from storage.matching import MAX_LIST_VALUES
from storage.query import Query, QueryError
from tests import test_dicomweb_protocol as protocol
from tests import test_matching as matching
from tests.test_dicomweb_protocol import Stored, basic

# The neighbours' fixtures: the QIDO app and its three studies (SQLite), and
# the matching tests' six studies on each index back end.
cors_config, app = protocol.cors_config, protocol.app
client, stored = protocol.client, protocol.stored
cheap_dummy_hash = protocol._cheap_dummy_hash
config, loaded = matching.config, matching.loaded

SOP_INSTANCE, SERIES_UID, STUDY_UID, MODALITY = "00080018", "0020000E", "0020000D", "00080060"


def _ids(n: int, real: str = "") -> list[str]:
    return [f"x{i}" for i in range(n - 1 if real else n)] + ([real] if real else [])


def find_rows(archive: Archive, level: Level, **keys: str) -> list[dict]:
    return list(archive.index.find(Query(level=level, keys=keys)))


# --- the shared matching, on SQLite and on PostgreSQL ----------------------


def test_the_bound_is_a_retrieve_s_and_leaves_room_under_the_back_ends_limits() -> None:
    """PostgreSQL binds at most 65535 parameters, SQLite's default build
    32766: every list-capable key at the bound at once stays under both."""
    assert MAX_LIST_VALUES == MAX_UIDS
    listable = [a for a in ATTRIBUTES.values() if a.vr not in ("DA", "TM", "PN", "IS", "US")]
    assert len(listable) * MAX_LIST_VALUES < 32766


@pytest.mark.slow
@pytest.mark.parametrize(
    "keyword, value",
    [
        ("PatientID", "\\".join(_ids(1500))),  # the attacker's query
        ("PatientID", "\\".join(_ids(MAX_LIST_VALUES + 1))),
        ("AccessionNumber", "\\".join(f"A{i}*" for i in range(MAX_LIST_VALUES + 1))),
        ("StudyInstanceUID", "\\".join(f"1.2.{i}" for i in range(5000))),
        ("ModalitiesInStudy", "\\".join(f"M{i}" for i in range(1500))),
    ],
)
def test_a_list_over_the_bound_is_a_query_error_naming_the_key(
    archive: Archive, loaded: dict, keyword: str, value: str
) -> None:
    with pytest.raises(QueryError) as raised:
        find_rows(archive, Level.STUDY, **{"AccessionNumber": "", keyword: value})
    message = str(raised.value)
    assert keyword in message and str(MAX_LIST_VALUES) in message
    assert "x1" not in message and "A1" not in message  # never the values asked


@pytest.mark.slow
def test_lists_up_to_the_bound_match_on_every_back_end(archive: Archive, loaded: dict) -> None:
    patient = PATIENTS[1].patient_id
    rows = find_rows(
        archive,
        Level.STUDY,
        AccessionNumber="",
        PatientID="\\".join(_ids(MAX_LIST_VALUES, patient)),
    )
    assert {r["AccessionNumber"] for r in rows} == {"ACC_3"}
    wild = "\\".join([*(f"Z{i}*" for i in range(MAX_LIST_VALUES - 1)), "ACC?3"])
    rows = find_rows(archive, Level.STUDY, AccessionNumber=wild)
    assert {r["AccessionNumber"] for r in rows} == {"ACC_3"}
    uids = [f"1.2.{i}" for i in range(MAX_LIST_VALUES - 1)] + [loaded["acc_4"]]
    rows = find_rows(archive, Level.STUDY, AccessionNumber="", StudyInstanceUID="\\".join(uids))
    assert {r["AccessionNumber"] for r in rows} == {"acc_4"}


@pytest.mark.slow
def test_several_lists_each_under_the_bound_together_still_answer(
    archive: Archive, loaded: dict
) -> None:
    """Every list key at its bound at once stays under the back ends' limits."""
    many = MAX_LIST_VALUES - 1
    rows = find_rows(
        archive,
        Level.IMAGE,
        PatientID="\\".join(_ids(many, PATIENTS[4].patient_id)),
        AccessionNumber="\\".join([*(f"Q{i}*" for i in range(many)), "ACC_6"]),
        StudyInstanceUID="\\".join([*(f"1.3.{i}" for i in range(many)), loaded["ACC_6"]]),
        Modality="\\".join([*(f"M{i}" for i in range(many)), "US"]),
        StationName="",
    )
    assert len(rows) == 1


# --- C-FIND -----------------------------------------------------------------


def _c_find(archive: Archive, **keys: object) -> list[tuple]:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    return list(
        find(
            archive,
            identifier,
            StudyRootQueryRetrieveInformationModelFind,
            retrieve_ae="CHDNODE",
            issuers=None,
        )
    )


@pytest.mark.slow
def test_c_find_answers_a_long_list_with_a900_and_an_error_comment(
    archive: Archive, loaded: dict
) -> None:
    answers = _c_find(archive, PatientID=_ids(1500))
    assert len(answers) == 1
    status, found = answers[0]
    assert found is None and status.Status == IDENTIFIER_DOES_NOT_MATCH
    assert "PatientID" in status.ErrorComment and str(MAX_LIST_VALUES) in status.ErrorComment
    assert "x1" not in status.ErrorComment


@pytest.mark.slow
def test_c_find_matches_a_list_at_the_bound(archive: Archive, loaded: dict) -> None:
    answers = _c_find(archive, PatientID=_ids(MAX_LIST_VALUES, PATIENTS[2].patient_id))
    assert [s for s, _ in answers] == [PENDING, SUCCESS]


# --- QIDO-RS ----------------------------------------------------------------


def _get(client: FlaskClient, url: str):
    return client.get(url, headers=basic())


@pytest.mark.parametrize(
    "query",
    [
        "PatientID=" + "%5C".join(_ids(1500)),  # the attacker's query
        "PatientID=" + "%5C".join(_ids(MAX_LIST_VALUES + 1)),
        "StudyInstanceUID=" + ",".join(f"1.2.{i}" for i in range(MAX_LIST_VALUES + 1)),
        # Repeated parameters are one list, and count together.
        "&".join(f"PatientID=x{i}" for i in range(MAX_LIST_VALUES + 1)),
        "StudyInstanceUID=1.2.3%5C1.2.4&"
        + "&".join(f"StudyInstanceUID=1.2.{i},1.3.{i}" for i in range(MAX_LIST_VALUES // 2)),
    ],
)
def test_qido_answers_a_long_list_with_400_and_a_message(
    client: FlaskClient, stored: Stored, query: str
) -> None:
    answer = _get(client, f"/dicom-web/studies?{query}")
    assert answer.status_code == 400, answer.data[:200]
    text = answer.get_data(as_text=True)
    assert str(MAX_LIST_VALUES) in text and "x1" not in text


def test_qido_matches_a_list_at_the_bound(client: FlaskClient, stored: Stored) -> None:
    ids = "%5C".join(_ids(MAX_LIST_VALUES, PATIENTS[0].patient_id))
    answer = _get(client, f"/dicom-web/studies?PatientID={ids}")
    assert answer.status_code == 200
    assert [s[STUDY_UID]["Value"][0] for s in answer.get_json()] == [stored.echo]
    uids = ",".join([*(f"1.2.{i}" for i in range(MAX_LIST_VALUES - 1)), stored.angio])
    answer = _get(client, f"/dicom-web/studies?StudyInstanceUID={uids}")
    assert [s[STUDY_UID]["Value"][0] for s in answer.get_json()] == [stored.angio]


# --- QIDO-RS: Study's Instances (PS3.18 10.6.1, /studies/{study}/instances) --


@pytest.mark.slow
def test_a_study_s_instances_are_searchable(
    app: Flask, client: FlaskClient, stored: Stored
) -> None:
    answer = _get(client, f"/dicom-web/studies/{stored.both}/instances")
    assert answer.status_code == 200 and answer.mimetype == "application/dicom+json"
    found = answer.get_json()
    assert len(found) == 3  # two echo frames' instances and the angio run
    assert {f[STUDY_UID]["Value"][0] for f in found} == {stored.both}
    assert {f[SERIES_UID]["Value"][0] for f in found} == set(stored.series_of_both)
    for item in found:
        # The instance defaults, and the series' own (PS3.18 10.6.3.3.3).
        for tag in ("00080016", SOP_INSTANCE, "00200013", MODALITY, "00200011"):
            assert tag in item, tag
    assert {f[MODALITY]["Value"][0] for f in found} == {"US", "XA"}
    # Matching within the study, and nothing from any other study.
    only_xa = _get(client, f"/dicom-web/studies/{stored.both}/instances?Modality=XA").get_json()
    assert len(only_xa) == 1 and only_xa[0][SERIES_UID]["Value"][0] == stored.series_of_both[1]
    other = _get(client, f"/dicom-web/studies/{stored.echo}/instances").get_json()
    assert {f[STUDY_UID]["Value"][0] for f in other} == {stored.echo}


def test_a_study_s_instances_of_an_unknown_or_bad_study(client: FlaskClient, stored) -> None:
    """An unknown study is 404 as for the study's series (`viewer.scope`)."""
    unknown = generate_uid(UID_ROOT)
    assert _get(client, f"/dicom-web/studies/{unknown}/instances").status_code == 404
    assert _get(client, f"/dicom-web/studies/{unknown}/series").status_code == 404
    assert _get(client, "/dicom-web/studies/1.2.3*/instances").status_code == 400
    assert client.get(f"/dicom-web/studies/{stored.both}/instances").status_code == 401
