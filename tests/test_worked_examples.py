"""docs/worked-examples.md, followed as a cardiologist follows it: each
defect's demo study (`dicomnode.ops.worked`) stored through the node, every
measurement its table lists taken through the measuring API at the points
it gives, the worksheet filled as it says, the plan saved; then every number
the page states is checked against what the node gave: each value with its
unit and scale source, the child's BSA, the sizing aid's sizes, and the
warnings and notes it names. A page that no longer matches the node fails
here, so the example stays true."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from dicomnode.config import Config
from dicomnode.ingest.pipeline import Ingestor
from dicomnode.ops import worked
from storage.archive import Archive
from tests.conftest import incoming
from tests.test_doppler import HEADERS, cardiologist
from viewer.planning.sizing import Message

DOC = Path(__file__).resolve().parents[1] / "docs" / "worked-examples.md"
ROW = re.compile(r"^\| (\d+) \| (.+?) \| (.+?) \| (.+?) \| (.+?) \| (.+?) \| (.+?) \|$")
POINT = re.compile(r"\((-?[\d.]+), (-?[\d.]+)\)")
TOOLS = {"length": "length", "velocity": "velocity", "vessel diameter profile": "profile"}


@dataclass
class Step:
    """One row of a defect's table: what is measured, where, and what the page says it gives."""

    number: int
    worksheet: str  # a slot's code, "rim: <name>", "phase ED; <code>", or "—"
    image: str  # the series description
    tool: str
    points: list[list[float]]
    value: str  # as the page prints it: "13.0 mm", "4.60 m/s · 84.6 mmHg"
    source: str


def sections() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def steps(section: str) -> list[Step]:
    found = []
    for line in section.splitlines():
        if match := ROW.match(line.strip()):
            number, slot, image, tool, points, value, source = match.groups()
            if not number.isdigit():
                continue
            found.append(
                Step(
                    int(number),
                    slot.strip("`"),
                    image,
                    tool,
                    [[float(x), float(y)] for x, y in POINT.findall(points)],
                    value,
                    source.strip("`"),
                )
            )
    return found


def _shown(result: dict[str, Any]) -> str:
    """A value as the page prints it (as the viewer's list shows it)."""
    if result["unit"] == "m/s":
        return f"{result['value']:.2f} m/s · {result['gradient']:.1f} mmHg"
    return f"{result['value']:.1f} {result['unit']}"


@pytest.fixture
def client(config: Config, archive: Archive) -> FlaskClient:
    return cardiologist(config, archive)


def _store(ingestor: Ingestor, defect: str) -> tuple[str, dict[str, str]]:
    """The defect's studies stored (an earlier one first): (the last one's
    study UID, its series descriptions to instance UIDs)."""
    images = {}
    for ds in worked.EXAMPLES[defect]():
        done = ingestor.ingest(incoming(ds))
        assert done.status == 0, done
        images[str(ds.SeriesDescription)] = str(done.dataset.SOPInstanceUID)
    return str(done.dataset.StudyInstanceUID), images


def _measure(client: FlaskClient, uid: str, step: Step) -> dict[str, Any]:
    tool = TOOLS[step.tool]
    kind = "length" if tool == "profile" else tool
    body = {"kind": kind, "points": step.points, "frame": 0}
    answer = client.post(
        f"/api/instances/{uid}/{tool}" if tool == "profile" else f"/api/instances/{uid}/measure",
        headers=HEADERS,
        json=body,
    )
    assert answer.status_code == 200, (step, answer.json)
    result = answer.json["narrowest"] if tool == "profile" else answer.json
    points = result["points"] if tool == "profile" else step.points
    return {"uid": uid, "frame": 0, "kind": kind, **result, "points": points}


@pytest.mark.parametrize("defect", list(worked.EXAMPLES))
def test_the_worked_example_is_what_the_node_gives(
    client: FlaskClient, ingestor: Ingestor, defect: str
) -> None:
    section = sections()[defect]
    table = steps(section)
    assert table, f"docs/worked-examples.md has no measurements under ## {defect}"
    study, images = _store(ingestor, defect)
    measurements, slots, rims = [], [], {}
    for step in table:
        drawn = _measure(client, images[step.image], step)
        assert (_shown(drawn), drawn["source"]) == (step.value, step.source), step
        phase = re.match(r"phase (ED|ES); ", step.worksheet)
        slot = step.worksheet[phase.end() :] if phase else step.worksheet
        drawn["phase"] = phase[1] if phase else None
        measurements.append(drawn)
        if slot.startswith("rim: "):
            rims[slot[5:]] = round(drawn["value"], 1)
        elif slot != "—":
            slots.append(
                {
                    "code": slot,
                    "value_mm": round(drawn["value"], 1),
                    "measurement": len(measurements) - 1,
                }
            )
    plan: dict[str, Any] = {
        "defect": defect,
        "plan": "new",
        "slots": slots,
        "rims": rims,
        "measurements": measurements,
    }
    if choice := re.search(r"Krichenko type: \*\*(\w)\*\*", section):
        plan["krichenko"] = choice[1]
    saved = client.post(f"/api/studies/{study}/plans", headers=HEADERS, json=plan)
    assert saved.status_code == 201, saved.json
    (kept,) = client.get(f"/api/studies/{study}/plans").json
    proposal = kept["content"]["proposal"]
    stated = re.search(r"\*\*Sizing aid:\*\* (.+?)\.$", section, flags=re.M)
    assert stated, "the page states no sizing aid"
    assert stated[1] == (", ".join(proposal["sizes"]) or "no size"), proposal
    page = client.get(f"/studies/{study}").get_data(as_text=True)
    assert f"Worked example: {defect}" in page  # what the page says to search for
    if defect == "PDA":  # what the page says to try: the earlier study beside, in step, one beat
        assert 'id="compare"' in page and "Lateral aortogram, cine with ECG" in page
        cine = images["Lateral aortogram, cine with ECG"]
        assert client.get(f"/api/instances/{cine}/meta").json["ecg"] is True
    bsa = re.search(r"BSA ([\d.]+) m²", section)
    assert bsa and f"BSA {bsa[1]} m² (Haycock)" in page
    for kind in ("warning", "note"):
        for quoted in re.findall(rf"^- {kind}: “(.+?)”", section, flags=re.M):
            found = [m for m in proposal[f"{kind}s"] if Message(**m).english() == quoted]
            assert found, (quoted, proposal[f"{kind}s"])
        assert len(re.findall(rf"^- {kind}: ", section, flags=re.M)) == len(proposal[f"{kind}s"]), (
            proposal
        )
