"""Referral cases (`storage.cases`): opened by what is stored, moved by the centre.

Every study a partner hospital sends opens its child's case or joins it,
whatever the door, once, even when the feed is read again after a crash; a
status that needs something is refused without it, and every move is a
history row and an audit record written together. New imaging on a case
waiting for it sends the case back to received.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import text

from dicomnode.cli.main import main
from dicomnode.config import Config
from dicomnode.ingest.pipeline import Ingestor, Outcome
from dicomnode.node import open_archive
from dicomnode.ops.samples import PATIENTS, UID_ROOT, small_instance
from storage.archive import Archive
from storage.cases import (
    ACCEPTED,
    DECLINED,
    MORE_IMAGING,
    RECEIVED,
    UNDER_REVIEW,
    CaseError,
    Cases,
    UnknownCase,
    checked_detail,
)
from tests.conftest import incoming, make_config


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Config, Ingestor, Archive]]:
    config = make_config(tmp_path)
    archive = open_archive(config)
    yield config, Ingestor(config, archive), archive
    archive.close()


def study_of(patient: int, count: int = 2) -> list[Dataset]:
    study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    return [
        small_instance(PATIENTS[patient], study_uid=study, series_uid=series, instance_number=n)
        for n in range(1, count + 1)
    ]


def send(ingestor: Ingestor, datasets: list[Dataset], ae: str) -> str:
    """Ingest; the study's UID as stored (de-identified)."""
    results = [ingestor.ingest(incoming(ds, calling_ae=ae)) for ds in datasets]
    assert {r.outcome for r in results} == {Outcome.STORED}, results
    return str(results[0].dataset.StudyInstanceUID)


def test_each_hospitals_child_gets_one_case_that_its_studies_join(
    world: tuple[Config, Ingestor, Archive],
) -> None:
    _, ingestor, archive = world
    cases = archive.index.cases
    first = send(ingestor, study_of(0), "BISHKEK_ECHO")
    second = send(ingestor, study_of(0), "BISHKEK_CATH")  # the same child, the same hospital
    other = send(ingestor, study_of(1), "DUSHANBE_ECHO")
    assert cases.drain() >= 6
    assert cases.drain() == 0  # caught up: nothing opened twice
    listed = cases.listing()
    assert [(c.issuer, c.study_count, c.status) for c in listed] == [
        ("NCC Bishkek", 2, RECEIVED),
        ("RCC Dushanbe", 1, RECEIVED),
    ]
    bishkek = cases.get(listed[0].ref)
    assert bishkek.studies == (first, second)
    assert cases.for_study(other).ref == listed[1].ref  # type: ignore[union-attr]
    # A case is named by a reference that carries no identity.
    assert bishkek.ref.startswith("C-") and len(bishkek.ref) == 11
    name = str(PATIENTS[0].name).split("^")[0]
    assert name not in repr(bishkek) and PATIENTS[0].patient_id not in repr(bishkek)
    assert [h["status"] for h in bishkek.history] == [RECEIVED]


def test_a_hospital_sees_only_its_own_cases(world: tuple[Config, Ingestor, Archive]) -> None:
    _, ingestor, archive = world
    cases = archive.index.cases
    send(ingestor, study_of(0), "BISHKEK_ECHO")
    theirs = send(ingestor, study_of(1), "DUSHANBE_ECHO")
    cases.drain()
    mine = cases.listing(issuers=["NCC Bishkek"])
    assert [c.issuer for c in mine] == ["NCC Bishkek"]
    their_case = cases.for_study(theirs)
    assert their_case is not None
    with pytest.raises(UnknownCase):
        cases.get(their_case.ref, issuers=["NCC Bishkek"])
    with pytest.raises(UnknownCase):
        cases.set_status(their_case.ref, UNDER_REVIEW, {}, user="x", issuers=["NCC Bishkek"])
    assert cases.for_study(theirs, issuers=["NCC Bishkek"]) is None


@pytest.mark.parametrize(
    ("status", "given", "why"),
    [
        (MORE_IMAGING, {}, "fill in missing"),
        (MORE_IMAGING, {"missing": "   "}, "fill in missing"),
        (ACCEPTED, {"device": "Amplatzer Septal Occluder 12 mm"}, "fill in date"),
        (ACCEPTED, {"device": "ASO 12", "date": "next spring"}, "year-month-day"),
        (ACCEPTED, {"device": "ASO 12", "date": "2027-02-30"}, "year-month-day"),
        (DECLINED, {"note": "no"}, "fill in reason"),
        (UNDER_REVIEW, {"device": "ASO"}, "takes no device"),
        ("approved", {}, "unknown status"),
        (DECLINED, {"reason": "x" * 501}, "longer than 500"),
    ],
)
def test_a_status_is_refused_without_what_it_needs(status: str, given: dict, why: str) -> None:
    with pytest.raises(CaseError, match=why):
        checked_detail(status, given)


def test_moves_are_history_and_audit_together(world: tuple[Config, Ingestor, Archive]) -> None:
    _, ingestor, archive = world
    cases = archive.index.cases
    send(ingestor, study_of(0), "BISHKEK_ECHO")
    cases.drain()
    (case,) = cases.listing()
    moved = cases.set_status(
        case.ref, ACCEPTED, {"device": " ASO  12 mm ", "date": "2027-03-01"}, user="dr.aliev"
    )
    assert (moved.status, moved.detail) == (ACCEPTED, {"device": "ASO 12 mm", "date": "2027-03-01"})
    assert moved.updated_by == "dr.aliev"
    assert [h["status"] for h in moved.history] == [RECEIVED, ACCEPTED]
    records = sorted(
        (r for r in archive.index.audit.rows() if r["object"] == case.ref), key=lambda r: r["seq"]
    )
    assert [(r["event"], r["user"]) for r in records] == [
        ("case-status", "dicomnode"),
        ("case-status", "dr.aliev"),
    ]
    assert archive.index.audit.verify().ok
    with pytest.raises(CaseError):  # refused: nothing changes
        cases.set_status(case.ref, DECLINED, {}, user="dr.aliev")
    assert cases.get(case.ref).status == ACCEPTED
    assert len(cases.get(case.ref).history) == 2


def test_new_imaging_reopens_a_waiting_case_and_flags_a_decided_one(
    world: tuple[Config, Ingestor, Archive],
) -> None:
    _, ingestor, archive = world
    cases = archive.index.cases
    send(ingestor, study_of(0), "BISHKEK_ECHO")
    send(ingestor, study_of(1), "BISHKEK_ECHO")
    cases.drain()
    waiting, decided = cases.listing()
    cases.set_status(waiting.ref, MORE_IMAGING, {"missing": "TEE of the septum"}, user="dr")
    cases.set_status(decided.ref, DECLINED, {"reason": "defect too large"}, user="dr")
    send(ingestor, study_of(0), "BISHKEK_ECHO")
    send(ingestor, study_of(1), "BISHKEK_ECHO")
    cases.drain()
    again = cases.get(waiting.ref)
    assert again.status == RECEIVED and again.study_count == 2
    assert again.history[-1]["user"] == "dicomnode"
    still = cases.get(decided.ref)
    assert (still.status, still.new_imaging, still.study_count) == (DECLINED, True, 2)
    cases.set_status(decided.ref, UNDER_REVIEW, {}, user="dr")
    assert cases.get(decided.ref).new_imaging is True  # only a decision clears it
    cases.set_status(decided.ref, DECLINED, {"reason": "still too large"}, user="dr")
    assert cases.get(decided.ref).new_imaging is False


def test_filters_of_the_case_list(world: tuple[Config, Ingestor, Archive]) -> None:
    _, ingestor, archive = world
    cases = archive.index.cases
    asd = send(ingestor, study_of(0), "BISHKEK_ECHO")
    send(ingestor, study_of(1), "DUSHANBE_ECHO")
    cases.drain()
    archive.index.plans.add(asd, "secundum ASD", {"note": ""}, "dr", None)  # the worksheet's name
    assert [c.issuer for c in cases.listing(defect="asd")] == ["NCC Bishkek"]
    assert [c.issuer for c in cases.listing(defect="secundum ASD")] == ["NCC Bishkek"]
    assert cases.listing(defect="VSD") == [] and cases.listing(defect="%") == []
    assert cases.listing(defect="PDA") == []
    assert [c.issuer for c in cases.listing(hospital="RCC Dushanbe")] == ["RCC Dushanbe"]
    assert len(cases.listing(status=RECEIVED)) == 2 and cases.listing(status=DECLINED) == []
    assert cases.listing(opened_before=datetime.now(UTC) - timedelta(days=1)) == []
    assert len(cases.listing(opened_before=datetime.now(UTC) + timedelta(seconds=1))) == 2
    with pytest.raises(CaseError, match="unknown status"):
        cases.listing(status="lost")


def test_the_command_line(
    world: tuple[Config, Ingestor, Archive],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config, ingestor, archive = world
    send(ingestor, study_of(0), "BISHKEK_ECHO")
    archive.close()  # the command opens the archive itself and opens the case
    monkeypatch.setenv("DICOMNODE_CONFIG", os.devnull)
    monkeypatch.setenv("DICOMNODE_DATA_DIR", str(config.data_dir))
    monkeypatch.setenv("DICOMNODE_KEY_DIR", str(config.key_dir))
    assert main(["case", "list"]) == 0
    out = capsys.readouterr().out
    ref = out.split()[0]
    assert "received" in out and "NCC Bishkek" in out
    assert main(["case", "set", ref, "more-imaging"]) == 2
    assert "fill in missing" in capsys.readouterr().err
    assert main(["case", "set", ref, "more-imaging", "--missing", "TEE"]) == 0
    assert main(["case", "show", ref]) == 0
    shown = capsys.readouterr().out
    assert "more-imaging" in shown and "missing: TEE" in shown and "study " in shown
    assert main(["case", "show", "C-NONE-NONE"]) == 2
    assert "no such case" in capsys.readouterr().err


def same_study_again(ingestor: Ingestor, ds: Dataset, ae: str) -> None:
    """A new series of a study already sent: what a hospital sends when asked
    for one more view (the same Study Instance UID)."""
    ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    assert ingestor.ingest(incoming(ds, calling_ae=ae)).outcome is Outcome.STORED


def test_a_view_sent_into_a_study_the_case_holds_is_new_imaging(
    world: tuple[Config, Ingestor, Archive],
) -> None:
    _, ingestor, archive = world
    cases = archive.index.cases
    waiting, decided = study_of(0), study_of(1)
    send(ingestor, waiting, "BISHKEK_ECHO")
    send(ingestor, decided, "BISHKEK_ECHO")
    cases.drain()
    first, second = cases.listing()
    cases.set_status(first.ref, MORE_IMAGING, {"missing": "subcostal view"}, user="dr")
    cases.set_status(second.ref, ACCEPTED, {"device": "ASO", "date": "2027-03-01"}, user="dr")
    same_study_again(ingestor, waiting[0], "BISHKEK_ECHO")
    same_study_again(ingestor, decided[0], "BISHKEK_ECHO")
    cases.drain()
    assert cases.get(first.ref).status == RECEIVED
    assert (cases.get(second.ref).status, cases.get(second.ref).new_imaging) == (ACCEPTED, True)
    assert cases.get(first.ref).study_count == 1  # a series, not a study


def test_the_nodes_own_reports_are_not_new_imaging(
    world: tuple[Config, Ingestor, Archive],
) -> None:
    from dicomnode import UID_ROOT as OWN

    _, ingestor, archive = world
    cases = archive.index.cases
    datasets = study_of(0)
    send(ingestor, datasets, "BISHKEK_ECHO")
    cases.drain()
    (case,) = cases.listing()
    cases.set_status(case.ref, DECLINED, {"reason": "too large"}, user="dr")
    stored = archive.index.cases.get(case.ref).studies[0]
    report = study_of(0, 1)[0]  # stands for a plan's SR: the node's UID, in the study
    report.StudyInstanceUID = stored
    report.SeriesInstanceUID, report.SOPInstanceUID = f"{OWN}.5.1", f"{OWN}.5.2"
    report.PatientID = archive.index.cases.get(case.ref).pseudonym
    assert ingestor.ingest_own(report, "NCC Bishkek").outcome is Outcome.STORED
    cases.drain()
    assert cases.get(case.ref).new_imaging is False


@pytest.mark.parametrize(
    "typed", ["\x1b[31mred", "ASO\u202e21 mm", "two\x00parts", "a\u2066b"], ids=repr
)
def test_control_and_direction_characters_are_taken_out(typed: str) -> None:
    kept = checked_detail(DECLINED, {"reason": typed})["reason"]
    assert not any(ch in kept for ch in "\x1b\x00\u202e\u2066")
    assert kept.replace(" ", "")


@pytest.mark.parametrize("day", ["20270301", "2027-W10-1", "1999-01-01", "2100-01-01"])
def test_only_a_plausible_day_is_an_indicative_date(day: str) -> None:
    with pytest.raises(CaseError, match="date must be"):
        checked_detail(ACCEPTED, {"device": "ASO", "date": day})


@pytest.mark.slow
def test_a_decision_being_committed_is_not_undone_by_arriving_imaging(
    tmp_path: Path, postgres: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL, two processes: the feed pass that brings new imaging reads
    the case only once the decision another process is committing is in."""
    config = make_config(tmp_path, index_url=postgres.database())
    archive, other = open_archive(config), open_archive(config)
    try:
        ingestor = Ingestor(config, archive)
        datasets = study_of(0)
        send(ingestor, datasets, "BISHKEK_ECHO")
        archive.index.cases.drain()
        (case,) = archive.index.cases.listing()
        archive.index.cases.set_status(case.ref, MORE_IMAGING, {"missing": "TEE"}, user="dr")
        same_study_again(ingestor, datasets[0], "BISHKEK_ECHO")  # the view asked for
        inside, go = threading.Event(), threading.Event()
        original = Cases._move

        def slow(self: Cases, conn: Any, pk: int, ref: str, status: str, *rest: Any, **kw: Any):
            original(self, conn, pk, ref, status, *rest, **kw)
            if status == ACCEPTED:  # the decision written, not yet committed
                inside.set()
                go.wait(60)

        monkeypatch.setattr(Cases, "_move", slow)
        decide = threading.Thread(
            target=lambda: other.index.cases.set_status(
                case.ref, ACCEPTED, {"device": "ASO", "date": "2027-03-01"}, user="centre"
            )
        )
        decide.start()
        assert inside.wait(60)
        drain = threading.Thread(target=archive.index.cases.drain)
        drain.start()
        with archive.index.engine.connect() as conn:  # the pass waits on a lock
            for _ in range(600):
                waiting = conn.execute(
                    text("select count(*) from pg_stat_activity where wait_event_type = 'Lock'")
                ).scalar()
                if waiting:
                    break
                threading.Event().wait(0.1)
        assert waiting
        go.set()
        decide.join(60)
        drain.join(60)
        final = archive.index.cases.get(case.ref)
        assert (final.status, final.new_imaging) == (ACCEPTED, True)
        assert [h["status"] for h in final.history][-1] == ACCEPTED
    finally:
        other.close()
        archive.close()


def test_the_service_figures(world: tuple[Config, Ingestor, Archive]) -> None:
    _, ingestor, archive = world
    cases = archive.index.cases
    send(ingestor, study_of(0), "BISHKEK_ECHO")
    send(ingestor, study_of(1), "BISHKEK_ECHO")
    send(ingestor, study_of(2), "DUSHANBE_ECHO")
    cases.drain()
    first, second = cases.listing(hospital="NCC Bishkek")
    cases.set_status(first.ref, UNDER_REVIEW, {}, user="dr")
    cases.set_status(first.ref, DECLINED, {"reason": "too large"}, user="dr")
    cases.set_status(first.ref, ACCEPTED, {"device": "ASO", "date": "2027-03-01"}, user="dr")
    cases.set_status(second.ref, MORE_IMAGING, {"missing": "TEE"}, user="dr")
    figures = cases.throughput()
    month = f"{first.opened_at:%Y-%m}"
    assert figures.referrals == {"NCC Bishkek": {month: 2}, "RCC Dushanbe": {month: 1}}
    assert figures.decided == {"NCC Bishkek": 1}  # decided once, then changed: one case
    assert 0 <= figures.median_days["NCC Bishkek"] < 1
    assert figures.decisions == {"NCC Bishkek": {ACCEPTED: 1}}  # by the decision it has now
    assert cases.throughput(["RCC Dushanbe"]).referrals == {"RCC Dushanbe": {month: 1}}


def test_days_to_a_decision_are_a_median_per_hospital() -> None:
    from types import SimpleNamespace

    from storage.cases import throughput_of

    opened = datetime(2026, 1, 30, tzinfo=UTC)
    rows = [
        SimpleNamespace(pk=n, issuer="H", opened_at=opened + timedelta(days=n), status=ACCEPTED)
        for n in range(3)
    ]
    decided = {0: opened + timedelta(days=2), 1: opened + timedelta(days=11)}  # 2 and 10 days
    figures = throughput_of(rows, decided)
    assert figures.referrals == {"H": {"2026-01": 2, "2026-02": 1}}
    assert (figures.decided, figures.median_days) == ({"H": 2}, {"H": 6.0})
    assert figures.months == ("2026-01", "2026-02")
