"""Plans in the index: several per study, every save a new version, a signed
version read only, on both back ends; plans saved before plans per defect."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.exc import IntegrityError

from dicomnode.config import Config
from storage.index import Index
from storage.migrate import _config
from storage.plans import LATEST, NEW, PlanConflict, UnknownPlan, plans

STUDY = "2.25.1001"


@pytest.fixture
def index(any_index_config: Config) -> Iterator[Index]:
    url = any_index_config.index_url or f"sqlite:///{any_index_config.data_dir}/index.sqlite"
    any_index_config.data_dir.mkdir(parents=True, exist_ok=True)
    found = Index(url)
    yield found
    found.close()


def test_a_child_with_an_asd_and_a_pda_has_two_plans_each_versioned(index: Index) -> None:
    store = index.plans
    asd = store.save(STUDY, "secundum ASD", {"note": "a"}, "amina", "2.25.1")
    pda = store.save(STUDY, "PDA", {"note": "p"}, "amina", "2.25.2")
    again = store.save(STUDY, "secundum ASD", {"note": "a2"}, "timur", "2.25.3", based_on=1)
    assert (asd.plan, asd.version, pda.plan, pda.version) == (1, 1, 2, 1)
    assert (again.plan, again.version) == (1, 2)  # no plan given: that defect's plan
    # Two plans for one defect (two muscular VSDs, two ducts): asked for.
    second = store.save(STUDY, "PDA", {"note": "second duct"}, "amina", None, plan=NEW)
    assert (second.plan, second.version) == (3, 1)
    assert store.save(STUDY, "PDA", {}, "amina", None, based_on=1).plan == 3  # the latest PDA
    latest = store.latest(STUDY)
    assert [(p["plan"], p["version"], p["defect"]) for p in latest] == [
        (1, 2, "secundum ASD"),
        (2, 1, "PDA"),
        (3, 2, "PDA"),
    ]
    every = store.versions(STUDY)
    assert [(v["plan"], v["version"]) for v in every] == [(1, 1), (1, 2), (2, 1), (3, 1), (3, 2)]
    assert every[0]["content"] == {"note": "a"}  # the first version as it was saved
    assert store.versions("2.25.9") == [] and store.latest("2.25.9") == []


def test_a_plan_keeps_its_defect_and_an_editor_cannot_supersede_unseen_work(index: Index) -> None:
    store = index.plans
    store.save(STUDY, "secundum ASD", {}, "amina", None)
    with pytest.raises(PlanConflict) as other_defect:
        store.save(STUDY, "PDA", {}, "amina", None, plan=1)
    assert "start a new plan" in str(other_defect.value)
    with pytest.raises(UnknownPlan):
        store.save(STUDY, "secundum ASD", {}, "amina", None, plan=7)
    # Two tabs opened version 1; the second to save is told, not silently overwritten.
    store.save(STUDY, "secundum ASD", {"by": "first"}, "amina", None, plan=1, based_on=1)
    with pytest.raises(PlanConflict) as stale:
        store.save(STUDY, "secundum ASD", {"by": "second"}, "timur", None, plan=1, based_on=1)
    assert stale.value.values == {"plan": 1, "version": 2, "opened": 1}
    # Saying nothing of what was opened is no way round it, plan named or not.
    for plan in (1, None):
        with pytest.raises(PlanConflict) as unsaid:
            store.save(STUDY, "secundum ASD", {"by": "third"}, "li", None, plan=plan)
        assert unsaid.value.values == {"plan": 1, "version": 2}
        assert "based_on" in str(unsaid.value)
    assert [v["content"] for v in store.versions(STUDY)] == [{}, {"by": "first"}]


def test_only_the_latest_version_can_be_signed(index: Index) -> None:
    store = index.plans
    store.save(STUDY, "PDA", {"note": "v1"}, "amina", None)
    store.save(STUDY, "PDA", {"note": "v2"}, "timur", None, plan=1, based_on=1)
    with pytest.raises(PlanConflict) as superseded:
        store.claim_signature(STUDY, 1, 1, "amina")
    assert superseded.value.values == {"plan": 1, "version": 1, "latest": 2}
    assert "only the latest version" in str(superseded.value)
    assert store.get(STUDY, 1, 1)["signed_by"] is None  # type: ignore[index]
    assert store.claim_signature(STUDY, 1, 2, "amina")["signed_by"] == "amina"


@pytest.mark.slow
def test_a_signed_version_is_read_only(index: Index) -> None:
    store = index.plans
    store.save(STUDY, "PDA", {"note": "v1"}, "amina", "2.25.10")
    signed = store.claim_signature(STUDY, 1, 1, "amina")
    assert signed["signed_by"] == "amina" and signed["signed_at"]
    store.finish_signature(STUDY, 1, 1, "2.25.11")
    for who in ("amina", "timur"):  # signing again, by anyone: refused
        with pytest.raises(PlanConflict) as again:
            store.claim_signature(STUDY, 1, 1, who)
        assert "already signed" in str(again.value)
    store.release_signature(STUDY, 1, 1)  # only a claim without its report is undone
    store.discard(store.save(STUDY, "PDA", {}, "x", None, based_on=1))  # v2 made, taken back
    row = store.get(STUDY, 1, 1)
    assert row is not None
    assert (row["signed_by"], row["signed_sr_uid"], row["content"]) == (
        "amina",
        "2.25.11",
        {"note": "v1"},
    )
    # A change after the signature is a new, unsigned version.
    after = store.save(STUDY, "PDA", {"note": "v2"}, "timur", None, plan=1, based_on=1)
    assert after.version == 2
    assert store.get(STUDY, 1, after.version)["signed_by"] is None  # type: ignore[index]
    with pytest.raises(UnknownPlan):
        store.claim_signature(STUDY, 1, 9, "amina")
    with pytest.raises(ValueError):  # NaN is not JSON: refused before it is stored
        store.save(STUDY, "PDA", {"x": float("nan")}, "amina", None)


def test_signing_at_once_signs_once(index: Index) -> None:
    store = index.plans
    store.save(STUDY, "PDA", {}, "amina", None)
    outcomes: list[str] = []

    def sign(who: str) -> None:
        try:
            store.claim_signature(STUDY, 1, 1, who)
            outcomes.append("signed")
        except PlanConflict:
            outcomes.append("refused")

    threads = [threading.Thread(target=sign, args=(f"doctor{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused"] * 5 + ["signed"]


@pytest.mark.slow
def test_concurrent_saves_get_distinct_versions_and_plans(index: Index) -> None:
    """Four clinicians at once, through two node processes' indexes."""
    other = Index(str(index.engine.url.render_as_string(hide_password=False)))
    saved: list[tuple[int, int]] = []

    def save(n: int) -> None:
        store = (index, other)[n % 2].plans
        for _ in range(5):
            defect = "PDA" if n % 2 else "secundum ASD"
            result = store.save(STUDY, defect, {"n": n}, f"doctor{n}", None, based_on=LATEST)
            saved.append((result.plan, result.version))
            fresh = store.save(STUDY, defect, {"n": n}, f"doctor{n}", None, plan=NEW)
            saved.append((fresh.plan, fresh.version))

    threads = [threading.Thread(target=save, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other.close()
    assert len(saved) == len(set(saved)) == 40
    rows = index.plans.versions(STUDY)
    assert len(rows) == 40
    for plan in {r["plan"] for r in rows}:
        numbers = sorted(r["version"] for r in rows if r["plan"] == plan)
        assert numbers == list(range(1, len(numbers) + 1))  # no gap, no repeat


def test_plans_saved_before_plans_per_defect_become_plan_1(tmp_path: Path) -> None:
    """An index at revision 0007 (one plan per study, versions numbered per
    study): after the migration its versions are plan 1 of their study, as
    they were, unsigned; and new saves go on from them."""
    url = f"sqlite:///{tmp_path / 'index.sqlite'}"
    engine = create_engine(url)
    legacy = {
        "slots": [
            {
                "code": "ASD-MAX-DIAMETER",
                "value_mm": 14.0,
                "instance_uid": "2.25.5",
                "frame": 3,
                "meaning": "ASD maximal diameter (view 1)",
            }
        ],
        "rims": {"aortic": 3.0},
        "calibration": {"points": [[0, 0], [10, 0]], "french": 6},
        "proposal": {"sizes": ["16 mm"], "basis": "largest", "warnings": ["deficient aortic rim"]},
    }
    with engine.begin() as conn:
        command.upgrade(_config(conn), "0007")
        for version, defect in ((1, "secundum ASD"), (2, "PDA")):
            conn.execute(
                text(
                    "INSERT INTO plans (study_uid, version, defect, content, author, created_at)"
                    " VALUES (:s, :v, :d, :c, 'amina', :t)"
                ),
                {
                    "s": STUDY,
                    "v": version,
                    "d": defect,
                    "c": json.dumps(legacy),
                    "t": datetime.now(UTC),
                },
            )
    engine.dispose()
    index = Index(url)
    try:
        rows = index.plans.versions(STUDY)
        assert [(r["plan"], r["version"], r["signed_by"]) for r in rows] == [
            (1, 1, None),
            (1, 2, None),
        ]
        assert rows[0]["content"] == legacy
        assert index.plans.latest(STUDY)[0]["defect"] == "PDA"
        assert index.plans.save(STUDY, "PDA", {}, "amina", None, based_on=2).version == 3
        # The old unique constraint is gone: plan 2 may have a version 1 too.
        assert index.plans.save(STUDY, "secundum ASD", {}, "amina", None).plan == 2
        with index.engine.begin() as conn, pytest.raises(IntegrityError):
            conn.execute(
                insert(plans).values(
                    study_uid=STUDY,
                    plan=1,
                    version=1,
                    defect="PDA",
                    content="{}",
                    author="x",
                    created_at=datetime.now(UTC),
                )
            )
        with index.engine.connect() as conn:
            signed = conn.execute(select(plans.c.pk).where(plans.c.signed_at.is_not(None)))
            assert signed.all() == []
    finally:
        index.close()


# --- a version and its report: one transaction ------------------------------


@pytest.fixture
def web(config: Config, archive, ingestor):
    """A logged-in cardiologist and a stored angio run (as the web tests')."""
    from werkzeug.security import generate_password_hash

    from dicomnode.ops.samples import PATIENTS, xa_instance
    from tests.conftest import incoming
    from tests.test_viewer import PASSWORD, log_in
    from viewer import create_app

    archive.index.accounts.add("amina", generate_password_hash(PASSWORD), "cardiologist")
    client = create_app(config, archive, b"k" * 32).test_client()
    ds = xa_instance(PATIENTS[0], frames=4, rows=64, cols=80)
    result = ingestor.ingest(incoming(ds, calling_ae="BISHKEK_CATH"))
    assert result.status == 0 and result.dataset is not None
    log_in(client)
    return client, str(result.dataset.StudyInstanceUID)


@pytest.mark.slow
def test_a_crash_while_the_report_is_written_leaves_no_version(
    web, archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies as the report's blob is written: no version is left
    without its report (nor a report without its version)."""
    from tests.test_planning import _save

    client, study = web
    body = {"defect": "PDA", "slots": [{"code": "PDA-NARROWEST", "value_mm": 2.5}]}
    first = _save(client, study, body)
    assert first.status_code == 201
    before = archive.index.stats()["instances"]

    def killed(*_: object) -> None:
        raise SystemExit("killed")

    monkeypatch.setattr(archive.blobs, "put", killed)
    monkeypatch.setattr(archive.blobs, "put_stream", killed)
    with pytest.raises(SystemExit):
        _save(client, study, {**body, "plan": 1, "based_on": 1})
    monkeypatch.undo()
    listed = client.get(f"/api/studies/{study}/plans").json
    assert [v["version"] for v in listed] == [1]
    assert archive.index.stats()["instances"] == before
    assert _save(client, study, {**body, "plan": 1, "based_on": 1}).json["version"] == 2


@pytest.mark.slow
def test_a_save_that_lost_the_race_stores_no_report(
    web, archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another save takes the version while this one's report is made: every
    version kept names a stored report of that very version."""
    from io import BytesIO

    from pydicom import dcmread

    from tests.test_planning import _save

    client, study = web
    body = {"defect": "PDA", "slots": [{"code": "PDA-NARROWEST", "value_mm": 2.5}]}
    assert _save(client, study, body).status_code == 201
    ingestor = client.application.extensions["ingestor"]
    own = ingestor.ingest_own

    def raced(*args: object, **kwargs: object):
        archive.index.plans.add(study, "PDA", {}, "other", None, plan=1)
        return own(*args, **kwargs)

    monkeypatch.setattr(ingestor, "ingest_own", raced)
    lost = _save(client, study, {**body, "plan": 1, "based_on": 1})
    monkeypatch.undo()
    assert lost.status_code == 409 and "reopen" in lost.json["message"]
    versions = client.get(f"/api/studies/{study}/plans").json
    reports = [v for v in versions if v["sr_uid"]]  # the competitor (tooling) has none
    for version in reports:
        data = archive.read(version["sr_uid"])
        assert data is not None, version
        sr = dcmread(BytesIO(data), stop_before_pixels=True)
        assert int(sr.InstanceNumber) == 2 * version["version"] - 1  # its very version
    stored_reports = [p for p in archive.blobs.root.rglob("*.dcm") if dcmread(p).Modality == "SR"]
    assert len(stored_reports) == len(reports)  # no report without its version
