"""User calibrations as objects: scoped to a series or a frame, checked by
the server against the measured image, named in every measurement, kept
with the plan; and the measure endpoint's answers to bad input."""

from __future__ import annotations

import math

import pytest
from flask.testing import FlaskClient

from dicomnode.ingest.pipeline import Ingestor
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


def runs_of_one_series(ingestor: Ingestor, archive: Archive, *changes: dict) -> list[dict]:
    """Runs of one XA series (Imager Pixel Spacing 0.3, magnification 1.5:
    0.2 mm/px), each with its ``changes``; their index rows, in order."""
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from dicomnode.ops.samples import PATIENTS, UID_ROOT, xa_instance

    study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    for number, change in enumerate(changes, start=1):
        shape = {k: change[k] for k in ("rows", "cols") if k in change}
        ds = xa_instance(
            PATIENTS[2],
            frames=2,
            transfer_syntax=ExplicitVRLittleEndian,
            study_uid=study,
            series_uid=series,
            instance_number=number,
            **shape,
        )
        ds.ImagerPixelSpacing = [0.3, 0.3]
        ds.EstimatedRadiographicMagnificationFactor = 1.5
        for keyword, value in change.items():
            if keyword not in shape:
                setattr(ds, keyword, value)
        ds.SeriesDescription = "Geometry runs"
        assert ingestor.ingest(incoming(ds, calling_ae="BISHKEK_CATH")).status == 0
    keys = {"SOPInstanceUID": "", "SeriesInstanceUID": "", "SeriesDescription": "Geometry runs"}
    rows = archive.index.find(Query(Level.IMAGE, {**keys, "InstanceNumber": ""}))
    found = sorted(rows, key=lambda r: int(r["InstanceNumber"]))
    assert len(found) == len(changes) and len({r["SeriesInstanceUID"] for r in found}) == 1
    return found


SIX_F_ON_12_PX = [[100.0, 300.0], [112.0, 300.0]]  # 2 mm / 12 px: 1/6 mm per pixel
LINE_400_PX = [[100.0, 50.0], [100.0, 450.0]]  # within every run here


@pytest.mark.slow
@pytest.mark.parametrize(
    "other",
    [
        {"ImagerPixelSpacing": [0.15, 0.15]},  # the reviewer's case: 40 mm, not 66.7 mm
        {"EstimatedRadiographicMagnificationFactor": 1.2},
        {"PixelSpacing": [0.2, 0.2]},
        {"DistanceSourceToPatient": "700"},
        {"cols": 384},
    ],
)
def test_a_series_calibration_applies_only_to_runs_of_its_geometry(
    client: FlaskClient,  # noqa: F811
    ingestor: Ingestor,
    archive: Archive,
    other: dict,
) -> None:
    run1, run2, run3 = runs_of_one_series(ingestor, archive, {}, other, {})
    log_in(client)
    drawn = {**catheter(run1), "points": SIX_F_ON_12_PX}
    on_run1 = measure(client, run1["SOPInstanceUID"], points=LINE_400_PX, calibration=drawn)
    assert on_run1.status_code == 200, on_run1.json
    assert on_run1.json["value"] == pytest.approx(400 / 6)
    assert on_run1.json["source"] == "catheter 6F (calibration 1)"
    # A run of the same geometry shares it.
    on_run3 = measure(client, run3["SOPInstanceUID"], points=LINE_400_PX, calibration=drawn)
    assert on_run3.status_code == 200 and on_run3.json["calibration_id"] == 1
    # The run at another geometry: refused, saying why, never rescaled.
    refused = measure(client, run2["SOPInstanceUID"], points=LINE_400_PX, calibration=drawn)
    assert refused.status_code == 400, refused.json
    assert "another geometry" in refused.json["message"]
    own = measure(client, run2["SOPInstanceUID"], points=LINE_400_PX).json
    assert own["calibration_id"] is None and own["unit"] == "mm"
    if other == {"ImagerPixelSpacing": [0.15, 0.15]}:
        assert own["value"] == pytest.approx(40.0)
    # The page is told which images share a geometry.
    keys = [
        client.get(f"/api/instances/{r['SOPInstanceUID']}/geometry").json["geometry"]
        for r in (run1, run2, run3)
    ]
    assert keys[0] == keys[2] != keys[1]
    assert client.get("/api/instances/1.2.3.4/geometry").status_code == 404


@pytest.mark.slow
def test_a_plan_cannot_keep_a_calibration_on_a_run_of_another_geometry(
    client: FlaskClient,  # noqa: F811
    ingestor: Ingestor,
    archive: Archive,
) -> None:
    """The plan's re-check measures as the endpoint does: the same refusal."""
    from werkzeug.exceptions import BadRequest

    from viewer.planning.measure import applied_calibration, header

    run1, run2 = runs_of_one_series(ingestor, archive, {}, {"ImagerPixelSpacing": [0.15, 0.15]})
    drawn = {**catheter(run1), "points": SIX_F_ON_12_PX}
    with client.application.test_request_context():
        uid = run2["SOPInstanceUID"]
        with pytest.raises(BadRequest, match="another geometry"):
            applied_calibration(drawn, uid, header(uid), 0)
        uid = run1["SOPInstanceUID"]
        assert applied_calibration(drawn, uid, header(uid), 0).id == 1


@pytest.mark.parametrize(
    ("points", "known", "reason"),
    [
        ([[100, 100], [100.000001, 100]], {"french": 6}, "too short"),  # 800,000,002 mm before
        ([[100, 100], [104, 100]], {"french": 6}, "too short"),
        ([[100, 100], [100, 103.9]], {"mm": 1}, "too short"),
        ([[0, 0], [10, 0]], {"mm": 1000}, "implausible scale"),  # 100 mm per pixel
        ([[0, 0], [500, 0]], {"mm": 0.1}, "implausible scale"),  # 0.2 µm per pixel
    ],
)
def test_a_calibration_too_short_or_of_no_real_scale_is_refused(
    client: FlaskClient,  # noqa: F811
    study: dict[str, dict],
    points: list,
    known: dict,
    reason: str,
) -> None:
    drawn = study["Catheter phantom 1"]
    given = {**{k: v for k, v in catheter(drawn).items() if k != "french"}, **known}
    answer = measure(client, drawn["SOPInstanceUID"], calibration={**given, "points": points})
    assert answer.status_code == 400, answer.json
    assert answer.json["message"].startswith("calibration") and reason in answer.json["message"]
    # Five pixels is enough for the catheter (2 mm / 5 px = 0.4 mm per pixel).
    five = {**catheter(drawn), "points": [[100, 100], [105, 100]]}
    assert measure(client, drawn["SOPInstanceUID"], calibration=five).status_code == 200


@pytest.mark.parametrize(
    ("kind", "points", "reason"),
    [
        ("length", [[150.5, 100.5], [150.5, 100.5]], "less than one image pixel apart"),
        ("length", [[150.5, 100.5], [150.9, 100.5]], "less than one image pixel apart"),
        ("angle", [[200, 200], [200, 200], [300, 250]], "arm is shorter"),
        ("angle", [[200, 200], [300, 250], [200.2, 200]], "arm is shorter"),
        ("ellipse", [[200, 200], [260, 200]], "wide or high"),  # flat: 0 mm²
        ("ellipse", [[200, 200], [200, 260]], "wide or high"),
        ("ellipse", [[200, 200], [200, 200]], "wide or high"),
    ],
)
def test_a_degenerate_measurement_is_refused_with_its_reason(
    client: FlaskClient,  # noqa: F811
    study: dict[str, dict],
    kind: str,
    points: list,
    reason: str,
) -> None:
    drawn = study["Catheter phantom 1"]
    answer = measure(client, drawn["SOPInstanceUID"], kind=kind, points=points)
    assert answer.status_code == 400 and reason in answer.json["message"], answer.json
    # With a calibration too: the check is on the points, before any scale.
    answer = measure(
        client, drawn["SOPInstanceUID"], kind=kind, points=points, calibration=catheter(drawn)
    )
    assert answer.status_code == 400 and reason in answer.json["message"], answer.json


@pytest.mark.slow
@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000,
        '{"kind": "length", "points": ' + "[" * 50_000,
        '{"a": ' * 20_000 + "1" + "}" * 20_000,  # well formed, too deep
    ],
)
def test_deeply_nested_json_gets_400_not_500(
    client: FlaskClient,  # noqa: F811
    study: dict[str, dict],
    text: str,
) -> None:
    uid = study["Catheter phantom 1"]["SOPInstanceUID"]
    answer = client.post(
        f"/api/instances/{uid}/measure",
        headers=HEADERS,
        data=text,
        content_type="application/json",
    )
    assert answer.status_code == 400, answer.get_data(as_text=True)[:200]
    assert answer.json["message"].startswith("a JSON object")
