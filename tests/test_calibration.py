"""User calibrations as objects: scoped to a series or a frame, checked by
the server against the measured image, named in every measurement, kept
with the plan; and the measure endpoint's answers to bad input."""

from __future__ import annotations

import math

import pytest
from flask.testing import FlaskClient

from dicomnode.ingest import Ingestor
from storage.archive import Archive
from storage.keys import Level
from storage.query import Query
from tests import phantoms
from tests.conftest import incoming
from tests.test_viewer import client, log_in  # noqa: F401  (fixture and helper)
from viewer.planning import calibration as cal

HEADERS = {"X-CSRF-Token": "token"}


@pytest.fixture
def study(client: FlaskClient, ingestor: Ingestor, archive: Archive) -> dict[str, dict]:  # noqa: F811
    """The phantom study stored; its instances by series description and
    instance number, as the index has them."""
    for ds in phantoms.study():
        assert ingestor.ingest(incoming(ds, calling_ae="BISHKEK_CATH")).status == 0
    rows = archive.index.find(
        Query(
            Level.IMAGE,
            {
                "SOPInstanceUID": "",
                "SeriesInstanceUID": "",
                "StudyInstanceUID": "",
                "SeriesDescription": "",
                "InstanceNumber": "",
                "NumberOfFrames": "",
            },
        )
    )
    found = {f"{r['SeriesDescription']} {r['InstanceNumber']}": r for r in rows}
    assert set(found) == {
        "Calibration phantom 1",
        "Calibrated phantom 1",
        "Calibrated phantom 2",
        "Catheter phantom 1",
        "Stack phantom 1",
        "Stack phantom 2",
        "Stack phantom 3",
    }
    log_in(client)
    return found


def catheter(row: dict, **scope: object) -> dict:
    """A 6F calibration across the phantom's catheter (24 px: 1/12 mm/px)."""
    left, right = phantoms.CATHETER
    return {
        "id": 1,
        "french": phantoms.CATHETER_FRENCH,
        "points": [[left, 300.5], [right, 300.5]],
        "scope": {
            "kind": "series",
            "series": row["SeriesInstanceUID"],
            "uid": row["SOPInstanceUID"],
            "frame": 0,
            **scope,
        },
    }


def measure(client: FlaskClient, uid: str, **body: object):  # noqa: F811
    body = {"kind": "length", "points": [[150.5, 100.5], [150.5, 220.5]], "frame": 0, **body}
    return client.post(f"/api/instances/{uid}/measure", headers=HEADERS, json=body)


def test_a_series_calibration_applies_to_its_series_and_names_itself(
    client: FlaskClient,  # noqa: F811
    study: dict[str, dict],
) -> None:
    drawn = study["Catheter phantom 1"]
    answer = measure(client, drawn["SOPInstanceUID"], calibration=catheter(drawn))
    assert answer.status_code == 200, answer.json
    assert answer.json["value"] == pytest.approx(120 * phantoms.CATHETER_MM_PER_PX)  # 10 mm
    assert answer.json["source"] == "catheter 6F (calibration 1)"
    assert answer.json["calibration_id"] == 1
    # Another frame of the same run: the series scope covers it.
    again = measure(client, drawn["SOPInstanceUID"], frame=3, calibration=catheter(drawn))
    assert again.status_code == 200 and again.json["calibration_id"] == 1
    # Without a calibration, the image's own scale, and no calibration named.
    own = measure(client, drawn["SOPInstanceUID"]).json
    assert own["value"] == pytest.approx(120 * phantoms.XA_MM_PER_PX)
    assert "at isocentre" in own["source"] and own["calibration_id"] is None


def test_a_calibration_from_another_series_is_refused(
    client: FlaskClient,  # noqa: F811
    study: dict[str, dict],
) -> None:
    drawn, other = study["Catheter phantom 1"], study["Calibrated phantom 2"]
    # Honest about where it was drawn: that series is not this one.
    refused = measure(client, other["SOPInstanceUID"], calibration=catheter(drawn))
    assert refused.status_code == 400 and "another series" in refused.json["message"]
    # Lying about the series: the index says where the drawn-on image lives.
    forged = catheter(drawn, series=other["SeriesInstanceUID"])
    refused = measure(client, other["SOPInstanceUID"], calibration=forged)
    assert refused.status_code == 400 and "another series" in refused.json["message"]
    # An image the index does not hold, or a wildcard, covers nothing.
    for uid in ("1.2.3.4", "1.2.*", other["SOPInstanceUID"] + "*"):
        wild = catheter(drawn, series=other["SeriesInstanceUID"], uid=uid)
        answer = measure(client, other["SOPInstanceUID"], calibration=wild)
        assert answer.status_code == 400, uid


def test_a_frame_calibration_applies_to_its_frame_only(
    client: FlaskClient,  # noqa: F811
    study: dict[str, dict],
) -> None:
    run = study["Calibrated phantom 2"]  # 9 frames
    known = {
        "id": 4,
        "mm": 10,
        "points": [[100, 100], [100, 200]],  # 100 px = 10 mm
        "scope": {"kind": "frame", "uid": run["SOPInstanceUID"], "frame": 5},
    }
    here = measure(client, run["SOPInstanceUID"], frame=5, calibration=known)
    assert here.status_code == 200 and here.json["value"] == pytest.approx(12.0)
    assert here.json["source"] == "known length 10 mm (calibration 4)"
    for frame in (0, 4, 6):
        assert (
            measure(client, run["SOPInstanceUID"], frame=frame, calibration=known).status_code
            == 400
        )
    other = study["Calibrated phantom 1"]
    assert (
        measure(client, other["SOPInstanceUID"], frame=5 % 3, calibration=known).status_code == 400
    )


@pytest.mark.parametrize(
    "change",
    [
        {"id": 0},
        {"id": True},
        {"id": "1"},
        {"french": "NaN"},
        {"french": float("inf")},
        {"french": 0},
        {"french": 60},
        {"mm": 5},  # both a catheter and a known length
        {"points": [[0, 0], [0, 0]]},  # no length
        {"points": [[0, 0]]},
        {"points": [[0, 0], [1, "x"]]},
        {"points": [[0, 0], [1e300, 0]]},
        {"scope": None},
        {"scope": {"kind": "study", "uid": "1.2.3", "frame": 0}},
        {"scope": {"kind": "frame", "uid": "1.2.3", "frame": -1}},
        {"scope": {"kind": "frame", "uid": "1.2.3", "frame": 0.5}},
        {"scope": {"kind": "series", "uid": "1.2.3", "frame": 0}},  # no series
        {"scope": {"kind": "frame", "uid": "../../etc", "frame": 0}},
    ],
)
def test_a_malformed_calibration_is_refused_with_its_reason(
    client: FlaskClient,  # noqa: F811
    study: dict[str, dict],
    change: dict,
) -> None:
    drawn = study["Catheter phantom 1"]
    given = {**catheter(drawn), **change}
    answer = measure(client, drawn["SOPInstanceUID"], calibration=given)
    message = answer.json["message"]
    assert answer.status_code == 400 and message.startswith(
        ("calibration", "french", "mm", "x", "y")
    )
    assert "'" not in message and "etc" not in message  # no value quoted back
    with pytest.raises(ValueError):
        cal.parse_user(given)


@pytest.mark.parametrize(
    "body",
    [
        [1, 2],
        "length",
        {"kind": "length", "points": [[0, 0], [10, "nan"]]},
        {"kind": "length", "points": [[0, 0], [10, float("inf")]]},
        {"kind": "length", "points": [[0, 0], [700, 0]]},  # past the 512 columns
        {"kind": "length", "points": [[0, 0], [-1, 0]]},
        {"kind": "length", "points": "0,0,1,1"},
        {"kind": "length", "points": [[0, 0], [1, 1], [2, 2]]},
        {"kind": "length", "points": [[0, 0], [1, 1]], "frame": 4},  # 4 frames: 0-3
        {"kind": "length", "points": [[0, 0], [1, 1]], "frame": "0"},
        {"kind": "volume", "points": [[0, 0], [1, 1]]},
        {"kind": "length", "points": [[0, 0], [1, 1]], "calibration": {"mm": 4}},
    ],
)
def test_bad_measure_requests_get_400_never_500(
    client: FlaskClient,  # noqa: F811
    study: dict[str, dict],
    body: object,
) -> None:
    uid = study["Catheter phantom 1"]["SOPInstanceUID"]
    answer = client.post(f"/api/instances/{uid}/measure", headers=HEADERS, json=body)
    assert answer.status_code == 400, answer.get_data(as_text=True)
    assert answer.json["message"]


def test_a_legacy_calibration_without_scope_is_refused_for_measuring(
    client: FlaskClient,  # noqa: F811
    study: dict[str, dict],
) -> None:
    """A calibration that says nothing of where it was drawn is exactly the
    fault that rescaled every series: it is refused, not applied."""
    uid = study["Catheter phantom 1"]["SOPInstanceUID"]
    legacy = {"points": [[0, 0], [10, 0]], "mm": 4}
    answer = measure(client, uid, calibration=legacy)
    assert answer.status_code == 400 and "calibration" in answer.json["message"]


def test_a_researcher_cannot_measure(
    client: FlaskClient,  # noqa: F811
    study: dict[str, dict],
    archive: Archive,
) -> None:
    from werkzeug.security import generate_password_hash

    from tests.test_viewer import PASSWORD, as_user

    archive.index.accounts.add("zarina", generate_password_hash(PASSWORD), "researcher")
    as_user(client, "zarina")
    assert measure(client, study["Catheter phantom 1"]["SOPInstanceUID"]).status_code == 403
    page = client.get(f"/studies/{study['Catheter phantom 1']['StudyInstanceUID']}")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and 'id="tool"' not in text and 'id="measurements"' in text


def test_the_study_page_offers_every_run(
    client: FlaskClient,  # noqa: F811
    study: dict[str, dict],
    archive: Archive,
) -> None:
    any_row = study["Catheter phantom 1"]
    page = client.get(f"/studies/{any_row['StudyInstanceUID']}").get_data(as_text=True)
    # The echo, two runs of one series, the catheter run, a stack of three stills.
    assert page.count('class="thumb"') == 5
    stack = " ".join(study[f"Stack phantom {n}"]["SOPInstanceUID"] for n in (1, 2, 3))
    assert f'data-instances="{stack}"' in page and "3 inst." in page
    for name in ("Calibrated phantom 1", "Calibrated phantom 2"):
        row = study[name]
        assert (
            f'data-series="{row["SeriesInstanceUID"]}" data-instances="{row["SOPInstanceUID"]}"'
            in page
        )
    assert "run 1 of 2" in page and "run 2 of 2" in page and 'id="tool"' in page


def test_single_frame_instances_of_a_series_stay_one_stack() -> None:
    from viewer.studies import thumbnails

    def image(series: str, number: int, frames: int | None, uid: str) -> dict:
        return {
            "SeriesInstanceUID": series,
            "SeriesNumber": 1,
            "InstanceNumber": number,
            "NumberOfFrames": frames,
            "SOPInstanceUID": uid,
            "Modality": "US",
        }

    shown = thumbnails(
        [
            image("1.1", 3, None, "9.3"),
            image("1.1", 1, 1, "9.1"),
            image("1.1", 2, 40, "9.2"),  # a clip among stills
            image("1.2", 1, None, "8.1"),  # same series number, another series
            image("1.1", 4, None, "9.4"),
        ]
    )
    assert [s["instances"] for s in shown] == [["9.2"], ["9.1", "9.3", "9.4"], ["8.1"]]
    assert shown[0]["runs"] == 1 and shown[1]["run"] is None


def test_a_plan_keeps_validated_calibrations_and_the_ids_measurements_used(
    study: dict[str, dict],
) -> None:
    from flask import Flask
    from werkzeug.exceptions import BadRequest

    from viewer.planning.measure import saved_calibrations, saved_measurements

    drawn = study["Catheter phantom 1"]
    kept = saved_calibrations({"calibrations": [catheter(drawn)]})
    assert kept == [cal.parse_user(catheter(drawn)).as_dict()]
    assert kept[0]["scope"]["kind"] == "series" and "mm" not in kept[0]
    measured = {
        "uid": drawn["SOPInstanceUID"],
        "frame": 0,
        "kind": "length",
        "points": [[150.5, 100.5], [150.5, 220.5]],
        "value": 10.0,
        "unit": "mm",
        "source": "catheter 6F (calibration 1)",
        "calibration_id": 1,
    }
    assert saved_measurements([measured], kept)[0]["calibration_id"] == 1
    assert (
        saved_measurements([{**measured, "calibration_id": None}], kept)[0]["calibration_id"]
        is None
    )
    assert saved_calibrations({}) == []
    with Flask(__name__).test_request_context():
        for body in (
            {"calibrations": "all"},
            {"calibrations": [catheter(drawn)] * 2},  # one id twice
            {"calibrations": [{**catheter(drawn), "id": n} for n in range(1, 30)]},
            {"calibrations": [{**catheter(drawn), "french": -6}]},
        ):
            with pytest.raises(BadRequest):
                saved_calibrations(body)
        for bad in ({**measured, "calibration_id": 2}, {**measured, "value": "nan"}):
            with pytest.raises(BadRequest):
                saved_measurements([bad], kept)


def test_user_calibration_maths() -> None:
    scope = {"kind": "frame", "uid": "1.2.3", "frame": 0}
    user = cal.parse_user({"id": 2, "french": 6, "points": [[0, 0], [3, 4]], "scope": scope})
    assert user.calibration().mm_per_px_x == pytest.approx(2 / 5)
    assert user.label == "catheter 6F (calibration 2)"
    length = cal.length(xa_without_spacing(), (0, 0), (30, 40), user=user.calibration())
    assert length.value == pytest.approx(20.0) and math.isfinite(length.value)


def xa_without_spacing():
    """An XA header with no spacing at all (only the user's scale applies)."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.Modality = "XA"
    return ds
