"""The closure-planning catalogue (viewer/planning/defects.py) is the one
source of the worksheet: what a careless sender or an attacker posts is
refused against it (400, nothing stored, nothing else lost), the SR holds its
codes only, and a defect type added to it (here, in the test alone) reaches
the page, its script's JSON, the save and the SR with no other file touched."""

from __future__ import annotations

import json
import re
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from pydicom import dcmread
from pydicom.dataset import Dataset

from storage.archive import Archive
from tests import test_planning
from tests.test_planning import HEADERS, NAME, _save
from tests.test_written_files import errors
from viewer.planning import defects, sizing
from viewer.planning.report import measurement_report, observer_name
from viewer.planning.worksheet import UnknownSlot

ROOT = Path(__file__).resolve().parents[1]
client, xa = test_planning.client, test_planning.xa  # fixtures: a cardiologist, an angio run
SCRIPT = "<script>alert(1)</script>"
# The report's own concepts (not worksheet values): the only other local codes.
REPORT_CODES = {
    "CLOSURE-PLAN",
    "CAL-REFERENCE",
    "SIZING-AID",
    "SIZING-RULE",
    "SIZING-WARNING",
    "SIZING-NOTE",
}
COARCTATION = defects.Defect(
    "coarctation stent",
    (
        defects.mm("COA-NARROWEST", "Coarctation narrowest diameter"),
        defects.mm("COA-DIAPHRAGM", "Descending aorta at the diaphragm"),
    ),
    rules=(
        defects.rule(
            "stent",
            "stent diameter no larger than the aorta at the diaphragm",
            "Test source, J Test Cardiol 2020;1:1-2",
        ),
    ),
)


def _walk(items: Any) -> Any:
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))


def _local_codes(report: Dataset) -> list[tuple[str, str]]:
    """(code, meaning) of every local concept (names and coded values)."""
    found = []
    for item in _walk(report.ContentSequence):
        for keyword in (
            "ConceptNameCodeSequence",
            "ConceptCodeSequence",
            "MeasurementUnitsCodeSequence",
        ):
            for code in item.get(keyword, []):
                if code.CodingSchemeDesignator == "99CHDNODE":
                    found.append((str(code.CodeValue), str(code.CodeMeaning)))
    return found


def _catalogue_codes(table: defects.Catalogue) -> dict[str, str]:
    """Every code the table gives an SR, with its meaning."""
    codes: dict[str, str] = {}
    for d in table.defects:
        for f in (*d.measured, *d.rim_fields.values()):
            codes[f.code] = f.label
        for f in d.choices:
            codes[f.report_code or f.code] = f.report_label or f.label
            codes |= {c.report_code: c.report_label for c in f.choices}
    return codes


def _reports(archive: Archive) -> int:
    return archive.index.stats()["modalities"].get("SR") or 0


# --- What a careless sender or an attacker posts ------------------------------


def _attacks(xa: Dataset) -> list[tuple[str, Any]]:
    slot = {"code": "PDA-NARROWEST", "value_mm": 2.5}
    pda = {"defect": "PDA", "plan": 1, "based_on": 1, "slots": [slot]}
    return [
        ("unknown slot code", {**pda, "slots": [{"code": "PDA-WIDEST", "value_mm": 3}]}),
        ("code of another defect", {**pda, "slots": [{"code": "VSD-LV-DIAMETER", "value_mm": 3}]}),
        ("a rim as a slot", {**pda, "slots": [{"code": "RIM-AORTIC", "value_mm": 3}]}),
        ("a choice as a slot", {**pda, "slots": [{"code": "PDA-KRICHENKO", "value_mm": 3}]}),
        ("code with script", {**pda, "slots": [{"code": SCRIPT, "value_mm": 3}]}),
        ("code a name", {**pda, "slots": [{"code": NAME, "value_mm": 3}]}),
        ("value a string with script", {**pda, "slots": [{**slot, "value_mm": SCRIPT}]}),
        ("value a numeric string", {**pda, "slots": [{**slot, "value_mm": "2.5"}]}),
        ("value an object", {**pda, "slots": [{**slot, "value_mm": {"mm": 2.5}}]}),
        ("value null", {**pda, "slots": [{**slot, "value_mm": None}]}),
        ("value negative", {**pda, "slots": [{**slot, "value_mm": -2.5}]}),
        ("value 1e308", {**pda, "slots": [{**slot, "value_mm": 1e308}]}),
        ("value over the field's maximum", {**pda, "slots": [{**slot, "value_mm": 100.1}]}),
        ("a huge number of slots", {**pda, "slots": [slot] * 10_000}),
        ("a duplicate slot", {**pda, "slots": [slot, {**slot, "value_mm": 3.5}]}),
        ("a rim of another defect", {**pda, "rims": {"IVC": 4.0}}),
        (
            "a choice of another defect",
            {**pda, "defect": "muscular VSD", "slots": [], "krichenko": "A"},
        ),
        ("a choice not offered", {**pda, "krichenko": "Z"}),
        ("a choice with script", {**pda, "krichenko": SCRIPT}),
        ("a choice a number", {**pda, "krichenko": 1}),
        ("an unknown defect", {**pda, "defect": SCRIPT}),
    ]


def test_every_attack_is_a_400_and_nothing_is_stored_or_lost(
    client: FlaskClient, xa: Dataset, archive: Archive
) -> None:
    study = str(xa.StudyInstanceUID)
    first = {
        "defect": "PDA",
        "krichenko": "A",
        "slots": [{"code": "PDA-NARROWEST", "value_mm": 3.0}],
    }
    saved = _save(client, study, first)
    assert saved.status_code == 201, saved.json
    before = client.get(f"/api/studies/{study}/plans").json
    reports = _reports(archive)
    for why, body in _attacks(xa):
        answer = _save(client, study, body)
        assert answer.status_code == 400, (why, answer.status_code, answer.json)
        message = answer.json["message"]
        assert message and "<script" not in message and "Иванов" not in message, (why, message)
        assert answer.json["text"].format(**answer.json["values"]) == message, why
    raw = {
        "NaN": "NaN",
        "Infinity": "Infinity",
        "-Infinity": "-Infinity",
        "past floats": "1" + "0" * 400,
    }
    for why, number in raw.items():
        text = (
            '{"defect": "PDA", "plan": 1, "based_on": 1, '
            '"slots": [{"code": "PDA-NARROWEST", "value_mm": ' + number + "}]}"
        )
        answer = client.post(
            f"/api/studies/{study}/plans",
            headers=HEADERS,
            data=text,
            content_type="application/json",
        )
        assert answer.status_code == 400, (why, answer.json)
    # Nothing stored, and the version saved before is as it was.
    assert client.get(f"/api/studies/{study}/plans").json == before
    assert _reports(archive) == reports


def test_a_refusal_says_what_is_wrong(client: FlaskClient, xa: Dataset) -> None:
    study = str(xa.StudyInstanceUID)
    slot = {"code": "PDA-NARROWEST", "value_mm": 2.5}
    unknown = _save(
        client, study, {"defect": "PDA", "slots": [{"code": "PDA-WIDEST", "value_mm": 3}]}
    )
    assert "PDA-NARROWEST" in unknown.json["message"]  # names what the worksheet has
    high = _save(client, study, {"defect": "PDA", "slots": [{**slot, "value_mm": 250}]})
    assert high.json["values"] == {"field": "Narrowest (pulmonary end) diameter", "limit": 100.0}
    choice = _save(client, study, {"defect": "PDA", "krichenko": "Z"})
    assert choice.json["text"] == "{field}: one of {values}"
    assert choice.json["values"] == {"field": "Krichenko type", "values": "A, B, C, D, E"}
    foreign = _save(client, study, {"defect": "secundum ASD", "krichenko": "A"})
    assert "secundum ASD" in foreign.json["message"] and "krichenko" in foreign.json["message"]


# --- The SR holds the catalogue's codes only -------------------------------------


def test_the_report_holds_only_catalogue_codes_and_meanings(
    client: FlaskClient, xa: Dataset, archive: Archive
) -> None:
    study = str(xa.StudyInstanceUID)
    body = {
        "defect": "PDA",
        "krichenko": "C",
        "slots": [
            {"code": "PDA-NARROWEST", "value_mm": 3.0, "meaning": SCRIPT, "unit": "km"},
            {"code": "PDA-LENGTH", "value_mm": 7.0, "meaning": NAME},
        ],
    }
    saved = _save(client, study, body)
    assert saved.status_code == 201, saved.json
    report = dcmread(BytesIO(archive.read(saved.json["sr_uid"])))
    allowed = _catalogue_codes(defects.table())
    found = _local_codes(report)
    assert ("PDA-NARROWEST", "Narrowest (pulmonary end) diameter") in found
    assert ("KRICHENKO-C", "Krichenko type C") in found
    for code, meaning in found:
        assert code in REPORT_CODES or allowed.get(code) == meaning, (code, meaning)
    text = str(report.ContentSequence)
    assert "<script" not in text and "Иванов" not in text and "km" not in text


@pytest.mark.slow
def test_a_stored_value_the_catalogue_lacks_is_never_written(
    client: FlaskClient, xa: Dataset, archive: Archive
) -> None:
    """A stored plan naming a code no worksheet has (an older table, a
    tampered database) is not signed into a report: 409, and no SR."""
    with pytest.raises(UnknownSlot):
        measurement_report(
            [xa],
            [{"code": "PDA-WIDEST", "value_mm": 3.0, "meaning": NAME}],
            defect="PDA",
            observer=observer_name("cardiologist"),
        )
    with pytest.raises(UnknownSlot):  # a slot of another worksheet
        measurement_report(
            [xa],
            [{"code": "ASD-STRETCHED", "value_mm": 3.0}],
            defect="PDA",
            observer=observer_name("cardiologist"),
        )
    study = str(xa.StudyInstanceUID)
    content = {"slots": [{"code": "PDA-WIDEST", "value_mm": 3.0, "meaning": NAME}], "rims": {}}
    archive.index.plans.add(study, "PDA", content, "amina", None)
    reports = _reports(archive)
    signed = client.post(f"/api/studies/{study}/plans/1/versions/1/sign", headers=HEADERS)
    assert signed.status_code == 409, signed.json
    assert "Иванов" not in signed.json["message"]
    assert _reports(archive) == reports
    (row,) = client.get(f"/api/studies/{study}/plans").json
    assert row["signed_by"] is None  # released, not half signed


# --- The table checks itself ------------------------------------------------------


@pytest.mark.parametrize(
    ("why", "entry"),
    [
        ("a code in small letters", defects.Defect("x", (defects.mm("coa", "Coarctation"),))),
        ("a label with spaces around", defects.Defect("x", (defects.mm("COA", " Coa "),))),
        ("an unknown kind", defects.Defect("x", (defects.Field("COA", "Coa", kind="cm"),))),
        ("an unknown unit", defects.Defect("x", (defects.Field("COA", "Coa", unit="cm"),))),
        ("an infinite maximum", defects.Defect("x", (defects.mm("COA", "Coa", float("inf")),))),
        ("a maximum of 0", defects.Defect("x", (defects.mm("COA", "Coa", 0),))),
        ("a name in brackets", defects.Defect("x (y)", (defects.mm("COA", "Coa"),))),
        ("no fields", defects.Defect("x", ())),
        (
            "the same code twice",
            defects.Defect("x", (defects.mm("COA", "A"), defects.mm("COA", "B"))),
        ),
        (
            "a shared code meaning another thing",
            defects.Defect("x", (defects.mm("PDA-NARROWEST", "Something else"),)),
        ),
        (
            "a choice keyed as the plan's own",
            defects.Defect(
                "x",
                (
                    defects.Field(
                        "COA-TYPE",
                        "Type",
                        kind="choice",
                        unit="",
                        key="note",
                        choices=(defects.Choice("A", "a", "COA-A", "Type A"),),
                    ),
                ),
            ),
        ),
        (
            "a choice without choices",
            defects.Defect("x", (defects.Field("COA-T", "T", kind="choice", unit="", key="kind"),)),
        ),
        (
            "a rule with a placeholder and no value",
            defects.Defect(
                "x", (defects.mm("COA", "Coa"),), rules=(defects.rule("r", "{margin} mm", "src"),)
            ),
        ),
        (
            "a rule without a source",
            defects.Defect(
                "x", (defects.mm("COA", "Coa"),), rules=(defects.rule("r", "says", ""),)
            ),
        ),
        ("a defect named twice", COARCTATION.__class__("PDA", COARCTATION.fields)),
    ],
)
def test_a_slip_in_the_table_stops_it_being_built(why: str, entry: defects.Defect) -> None:
    with pytest.raises(defects.CatalogueError):
        defects.table().adding(entry)


def test_a_rule_value_or_sizing_key_the_sizing_aid_lacks_stops_the_import() -> None:
    odd = defects.Defect(
        "x",
        (defects.mm("COA", "Coa"),),
        rules=(defects.rule("r", "{margin} mm over", "src", margin="no_such_setting"),),
    )
    with pytest.raises(defects.CatalogueError):
        sizing._check_table(defects.table().adding(odd))
    unsized = defects.Defect("x", (defects.mm("COA", "Coa"),), sizing="no such function")
    with pytest.raises(defects.CatalogueError):
        sizing._check_table(defects.table().adding(unsized))
    sizing._check_table(defects.table().adding(COARCTATION))  # no sizing: its rules for reference


def test_the_script_and_templates_keep_no_copy_of_the_catalogue() -> None:
    """Codes, defect names and choices live in the table only."""
    table = defects.table()
    words = set(table.names) | set(_catalogue_codes(table)) | set(table.choice_keys)
    words |= {rim for d in table.defects for rim in d.rims if len(rim) > 3}
    files = [ROOT / "viewer" / "static" / "planning.js"]
    files += [ROOT / "viewer" / "templates" / n for n in ("_plan.html", "plan_print.html")]
    for path in files:
        text = path.read_text("utf-8")
        copied = sorted(w for w in words if re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", text))
        assert copied == [], (path.name, copied)


# --- A defect type added to the table, and nothing else ---------------------------


@pytest.fixture
def coarctation(monkeypatch: pytest.MonkeyPatch) -> defects.Defect:
    monkeypatch.setattr(defects, "TABLE", defects.table().adding(COARCTATION))
    return COARCTATION


@pytest.mark.slow
def test_a_defect_added_to_the_table_is_everywhere(
    client: FlaskClient, xa: Dataset, archive: Archive, coarctation: defects.Defect, tmp_path: Path
) -> None:
    study = str(xa.StudyInstanceUID)
    page = client.get(f"/studies/{study}").get_data(as_text=True)
    assert '<option value="coarctation stent">' in page  # the worksheet's defect list
    block = re.search(r'<script type="application/json" id="plan-forms">(.*?)</script>', page, re.S)
    assert block is not None
    form = json.loads(block[1])["coarctation stent"]
    assert [f["code"] for f in form["fields"]] == ["COA-NARROWEST", "COA-DIAPHRAGM"]
    assert form["fields"][0] == {
        "code": "COA-NARROWEST",
        "meaning": "Coarctation narrowest diameter",
        "kind": "mm",
        "unit": "mm",
        "zero_allowed": False,
        "max": 100.0,
    }
    assert form["rims"] == []

    body = {
        "defect": "coarctation stent",
        "slots": [
            {"code": "COA-NARROWEST", "value_mm": 6.0},
            {"code": "COA-DIAPHRAGM", "value_mm": 12.5},
        ],
    }
    saved = _save(client, study, body)
    assert saved.status_code == 201, saved.json
    assert [s["meaning"] for s in saved.json["slots"]] == [
        "Coarctation narrowest diameter",
        "Descending aorta at the diaphragm",
    ]
    proposal = saved.json["proposal"]
    assert proposal["sizes"] == [] and proposal["rule"]["source"].startswith("Test source")
    # Its fields only: another form's slot, or too large a value, is refused.
    wrong = {**body, "slots": [{"code": "PDA-NARROWEST", "value_mm": 3.0}]}
    assert _save(client, study, wrong).status_code == 400
    assert _save(client, study, {**body, "krichenko": "A"}).status_code == 400

    report = dcmread(BytesIO(archive.read(saved.json["sr_uid"])))
    found = dict(_local_codes(report))
    assert found["COA-NARROWEST"] == "Coarctation narrowest diameter"
    assert found["COA-DIAPHRAGM"] == "Descending aorta at the diaphragm"
    numbers = {
        str(i.ConceptNameCodeSequence[0].CodeValue): (
            float(i.MeasuredValueSequence[0].NumericValue),
            str(i.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue),
        )
        for i in _walk(report.ContentSequence)
        if i.ValueType == "NUM" and "MeasuredValueSequence" in i
    }
    assert numbers["COA-NARROWEST"] == (6.0, "mm") and numbers["COA-DIAPHRAGM"] == (12.5, "mm")
    texts = [str(i.TextValue) for i in _walk(report.ContentSequence) if i.ValueType == "TEXT"]
    assert any("no larger than the aorta" in t and "Test source" in t for t in texts)
    assert str(report.SeriesDescription) == "Closure plan (coarctation stent) #1"
    path = tmp_path / "plan.dcm"
    path.write_bytes(archive.read(saved.json["sr_uid"]))
    assert errors(path) == set()

    printed = client.get(f"/studies/{study}/plan/print").get_data(as_text=True)
    assert "Descending aorta at the diaphragm" in printed and "Test source" in printed
    signed = client.post(f"/api/studies/{study}/plans/1/versions/1/sign", headers=HEADERS)
    assert signed.status_code == 201, signed.json
