"""Deferred OCR (the default, ``ocr_deferred``): answered first, read after.

An instance OCR must read is answered at once and held, encrypted and
invisible, until the verifier has read it; then stored, or kept held with
what OCR found. Nothing a sender or a race does may let an unread or
identity-bearing image reach the archive, and nothing answered may be lost.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicomnode.config import Config
from dicomnode.deid.pipeline import AWAITING_OCR
from dicomnode.ingest.pipeline import Incoming, Ingestor, IngestResult, Outcome
from dicomnode.jobs.verifying import Verifier
from dicomnode.node import open_archive
from dicomnode.ops.admin import refuse_quarantined
from dicomnode.ops.samples import PATIENTS, UID_ROOT, small_instance
from dicomnode.status import SUCCESS
from storage.archive import Archive
from storage.verifying import ocr_queue
from tests import test_deid_pixel_attacks as attacks
from tests import test_spool
from tests.conftest import encode, incoming, make_config

BURNED_IN = [
    attacks.palette_index_text,
    attacks.staff_and_phone_only_in_pixels,
    attacks.chinese_name_under_a_latin_header,
    attacks.angio_that_calls_itself_ct,
    attacks.screen_save_that_says_no_annotation,
]


@pytest.fixture
def deferred(tmp_path: Path) -> Config:
    return make_config(tmp_path, ocr_deferred=True)


@pytest.fixture
def world(deferred: Config) -> Iterator[tuple[Ingestor, Archive, Verifier]]:
    archive = open_archive(deferred)
    ingestor = Ingestor(deferred, archive)
    verifier = Verifier(ingestor, 2)
    yield ingestor, archive, verifier
    verifier.stop()
    archive.close()


def stored_uids(archive: Archive, uids: set[str]) -> set[str]:
    """Which of ``uids`` the archive holds as stored instances."""
    return {uid for uid in uids if archive.index.instance_blob(uid)}


def echo(number: int, study: str, series: str) -> Dataset:
    return small_instance(PATIENTS[0], study_uid=study, series_uid=series, instance_number=number)


def test_the_default_reads_after_the_answer() -> None:
    assert Config().ocr_deferred is True


@pytest.mark.parametrize("build", BURNED_IN)
def test_burned_in_identity_is_answered_then_held_with_the_finding(
    world: tuple[Ingestor, Archive, Verifier], build: Callable[[], Dataset]
) -> None:
    ingestor, archive, verifier = world
    result = ingestor.ingest(incoming(build()))
    assert (result.outcome, result.status) == (Outcome.VERIFYING, SUCCESS)
    uid = str(result.dataset.SOPInstanceUID)
    # Answered, not stored: held encrypted, nowhere a query or the viewer looks.
    assert archive.index.quarantined(uid)[0]["reason"] == AWAITING_OCR
    assert list(archive.blobs.root.rglob("*.dcm")) == []
    assert archive.index.ocr_queue.waiting() == 1
    assert verifier.run_once() == 1
    (held,) = archive.index.quarantined(uid)
    assert held["reason"].startswith("OCR found identity text"), held["reason"]
    assert archive.index.ocr_queue.waiting() == 0
    assert list(archive.blobs.root.rglob("*.dcm")) == []
    events = [r for r in archive.index.audit.rows() if r["object"] == uid]
    assert [e["event"] for e in events] == ["quarantine-hold"]


def test_clean_echo_is_stored_once_read_marked_and_fed(
    world: tuple[Ingestor, Archive, Verifier],
) -> None:
    ingestor, archive, verifier = world
    study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    results = [ingestor.ingest(incoming(echo(n, study, series))) for n in range(1, 4)]
    assert {r.outcome for r in results} == {Outcome.VERIFYING}
    uids = {str(r.dataset.SOPInstanceUID) for r in results}
    assert stored_uids(archive, uids) == set()
    assert archive.index.changes.since(0, 10) == []
    assert verifier.run_once() == 3
    assert stored_uids(archive, uids) == uids
    assert archive.index.quarantined() == []
    assert {c.sop_instance_uid for c in archive.index.changes.since(0, 10)} == uids
    # Blanked by the region rule and verified: only now does it say so.
    (path, *_) = sorted(archive.blobs.root.rglob("*.dcm"))
    stored = dcmread(path)
    assert stored.BurnedInAnnotation == "NO"
    codes = [item.CodeValue for item in stored.DeidentificationMethodCodeSequence]
    assert "113101" in codes
    assert [p for p in archive.held.root.rglob("*") if p.is_file()] == []


def test_identity_waits_sealed_never_in_plaintext(
    world: tuple[Ingestor, Archive, Verifier], deferred: Config
) -> None:
    ingestor = world[0]
    ds = attacks.staff_and_phone_only_in_pixels()
    name = str(ds.PatientName).split("^")[0].encode()
    ingestor.ingest(incoming(ds))
    database = Path(str(deferred.data_dir)).rglob("*")
    for path in database:
        if path.is_file():
            assert name not in path.read_bytes(), path


def test_a_restarted_verifier_reads_what_a_dead_one_left(
    world: tuple[Ingestor, Archive, Verifier], deferred: Config
) -> None:
    ingestor, archive, _ = world
    study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    uid = str(ingestor.ingest(incoming(echo(1, study, series))).dataset.SOPInstanceUID)
    archive.close()  # the process dies before any verifier ran
    again = open_archive(deferred)
    try:
        later = Verifier(Ingestor(deferred, again), 1)
        assert later.run_once() == 1
        later.stop()
        assert stored_uids(again, {uid}) == {uid}
    finally:
        again.close()


def test_refused_while_waiting_is_never_stored(
    world: tuple[Ingestor, Archive, Verifier],
) -> None:
    ingestor, archive, verifier = world
    study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    uid = str(ingestor.ingest(incoming(echo(1, study, series))).dataset.SOPInstanceUID)
    (row,) = archive.index.ocr_queue.claim(verifier.owner)
    refuse_quarantined(archive, [uid], "sent to the wrong centre")
    verifier.verify(row)  # it had claimed the row before the refusal
    assert stored_uids(archive, {uid}) == set()
    assert archive.index.quarantined() == []
    assert archive.index.ocr_queue.waiting() == 0


def test_a_resend_while_waiting_waits_once(world: tuple[Ingestor, Archive, Verifier]) -> None:
    ingestor, archive, verifier = world
    study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    ds = echo(1, study, series)
    first = ingestor.ingest(incoming(ds.copy()))
    changed = ds.copy()
    changed.SeriesDescription = "a second copy, changed"
    second = ingestor.ingest(incoming(changed))
    # Kept first (the default): the copy is counted, not de-identified again.
    assert (first.outcome, second.outcome) == (Outcome.VERIFYING, Outcome.DUPLICATE)
    assert archive.index.ocr_queue.waiting() == 1
    assert verifier.run_once() == 1
    uid = str(first.dataset.SOPInstanceUID)
    assert stored_uids(archive, {uid}) == {uid}
    assert archive.index.stats()["duplicates_received"] == 1
    (path,) = archive.blobs.root.rglob("*.dcm")
    assert "changed" not in str(dcmread(path).get("SeriesDescription", ""))


def test_another_process_cannot_take_a_claimed_row(
    world: tuple[Ingestor, Archive, Verifier],
) -> None:
    ingestor, archive, verifier = world
    study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    ingestor.ingest(incoming(echo(1, study, series)))
    assert len(archive.index.ocr_queue.claim(verifier.owner)) == 1
    assert archive.index.ocr_queue.claim("elsewhere-1.abc") == []


@pytest.mark.peers
def test_storescu_gets_success_and_the_echo_appears_once_read(tmp_path: Path) -> None:
    """A real sender at its defaults, a running node: answered Success at
    once; the instances reach C-FIND only after the verifier read them."""
    from dicomnode.node import Node
    from dicomnode.ops.samples import save
    from storage.keys import Level
    from storage.query import Query
    from tests.conftest import dcmtk
    from tests.test_jobs import wait_for

    study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    paths = [save(echo(n, study, series), tmp_path / f"e{n}.dcm") for n in range(1, 6)]
    clean = attacks.staff_and_phone_only_in_pixels()
    clean.file_meta.MediaStorageSOPClassUID = clean.SOPClassUID
    burned = save(clean, tmp_path / "burned.dcm")
    config = make_config(tmp_path / "node", ocr_deferred=True)
    with Node(config, web=False) as node:
        sent = dcmtk(
            "storescu", "-aec", "CHDNODE", "-aet", "BISHKEK_ECHO",
            "127.0.0.1", str(node.dicom.port), *paths, burned,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert "Warning" not in sent.stderr and "Error" not in sent.stderr, sent.stderr

        def instances() -> list[dict]:
            query = Query(level=Level.IMAGE, keys={"SOPInstanceUID": ""})
            return list(node.archive.index.find(query))

        wait_for(lambda: node.archive.index.ocr_queue.waiting() == 0, what="OCR of six")
        assert len(instances()) == 5
        (held,) = node.archive.index.quarantined()
        assert held["reason"].startswith("OCR found identity text")


def test_stow_reads_before_it_answers_so_its_urls_are_there(tmp_path: Path) -> None:
    """STOW-RS names where each instance can be retrieved, and tells a hold:
    with deferred OCR on, it still reads first, so a clean echo is there at
    once and a burned-in name is answered as held (a warning), not stored."""
    import requests
    from werkzeug.security import generate_password_hash

    from dicomnode.node import Node
    from tests.test_dicomweb import PASSWORD, part10, stow

    config = make_config(tmp_path, ocr_deferred=True, http_host="127.0.0.1")
    with Node(config, web=True) as node:
        node.archive.index.accounts.add(
            "pacs", generate_password_hash(PASSWORD), "cardiologist", "NCC Bishkek", sees=None
        )
        url = f"http://127.0.0.1:{node.http_port}/dicom-web"
        study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
        answer = stow(url, "pacs", part10(echo(1, study, series)))
        assert answer.status_code == 200, answer.text
        retrieve = answer.json()["00081199"]["Value"][0]["00081190"]["Value"][0]
        got = requests.get(
            retrieve,
            auth=("pacs", PASSWORD),
            headers={"Accept": 'multipart/related; type="application/dicom"'},
        )
        assert got.status_code == 200, got.text
        assert node.archive.index.ocr_queue.waiting() == 0
        held = stow(url, "pacs", part10(attacks.staff_and_phone_only_in_pixels()))
        assert held.status_code == 202, held.text  # accepted with a warning: held
        assert node.archive.index.quarantined()[0]["reason"].startswith("OCR found")


def test_the_identity_that_waits_is_sealed_for_this_instance(
    world: tuple[Ingestor, Archive, Verifier],
) -> None:
    """The values OCR will look for wait encrypted with the quarantine key
    and bound to the instance: another instance's key material opens nothing."""
    from storage.archive import HELD_FORMAT, HeldBlobError

    ingestor, archive, verifier = world
    ds = attacks.staff_and_phone_only_in_pixels()
    uid = str(ingestor.ingest(incoming(ds)).dataset.SOPInstanceUID)
    (row,) = archive.index.ocr_queue.claim(verifier.owner)
    assert bytes(row["identity"]).startswith(HELD_FORMAT)
    values = json.loads(archive.open_for_hold(uid, row["identity"]))
    assert ["name", "Asanov^Bolot"] in values or any("Asanov" in v for _, v in values)
    with pytest.raises(HeldBlobError):
        archive.open_for_hold(uid + ".1", row["identity"])


def test_release_leaves_a_waiting_instance_to_the_verifier(
    world: tuple[Ingestor, Archive, Verifier], deferred: Config
) -> None:
    """An administrator's release re-checks with the sealed linkage only
    (the header is gone); the verifier reads with every identity value of
    the header as received. So a waiting instance is not released by a
    re-check, only as reviewed."""
    from dicomnode.ops.admin import release_quarantined

    ingestor, archive, verifier = world
    study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    uid = str(ingestor.ingest(incoming(echo(1, study, series))).dataset.SOPInstanceUID)
    (outcome,) = release_quarantined(deferred, archive)
    assert (outcome.done, outcome.note) == (False, f"still held: {AWAITING_OCR}")
    assert archive.index.ocr_queue.waiting() == 1
    assert verifier.run_once() == 1
    assert stored_uids(archive, {uid}) == {uid}


def test_a_replacing_resend_held_meanwhile_is_not_undone_by_the_verifier(
    tmp_path: Path,
) -> None:
    """duplicates = replace: the verifier read the first copy; meanwhile a
    re-send was held for another reason (answered B000). The verifier's
    store must not end that hold and store the copy it read."""
    config = make_config(tmp_path, ocr_deferred=True, duplicates="replace")
    archive = open_archive(config)
    ingestor = Ingestor(config, archive)
    verifier = Verifier(ingestor, 1)
    try:
        study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
        ds = echo(1, study, series)
        uid = str(ingestor.ingest(incoming(ds.copy())).dataset.SOPInstanceUID)
        (row,) = archive.index.ocr_queue.claim(verifier.owner)
        regionless = ds.copy()
        del regionless.SequenceOfUltrasoundRegions  # no rule can clean it: held
        again = ingestor.ingest(incoming(regionless))
        assert again.outcome is Outcome.QUARANTINED and again.status == 0xB000
        verifier.verify(row)
        assert stored_uids(archive, {uid}) == set()
        (held,) = archive.index.quarantined(uid)
        assert "regions" in held["reason"]
    finally:
        verifier.stop()
        archive.close()


def test_a_reading_that_keeps_failing_ends_held_not_waiting_for_ever(
    world: tuple[Ingestor, Archive, Verifier], monkeypatch: pytest.MonkeyPatch
) -> None:
    ingestor, archive, verifier = world
    study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    uid = str(ingestor.ingest(incoming(echo(1, study, series))).dataset.SOPInstanceUID)
    (row,) = archive.index.ocr_queue.claim(verifier.owner)

    def broken(*_: object) -> None:
        raise RuntimeError("a decoder that always fails")

    monkeypatch.setattr(Verifier, "_read", broken)
    for _ in range(3):
        verifier.verify(row)
    (held,) = archive.index.quarantined(uid)
    assert held["reason"] == "OCR verification failed 3 times (RuntimeError)"
    assert archive.index.ocr_queue.waiting() == 0


def test_the_blanked_mask_is_the_one_applied_at_the_ingest(tmp_path: Path) -> None:
    """A sender's rectangles change while an instance waits: the verifier
    blanks-checks with the rectangles applied when it came in; one whose
    mask cannot be made again is kept held, not marked clean."""
    from dataclasses import replace as changed

    from dicomnode.ops.samples import xa_instance
    from tests.conftest import REMOTES

    ruled = make_config(
        tmp_path,
        ocr_deferred=True,
        remote_aes=tuple(
            changed(r, blank_rectangles=((0, 0, 63, 5),)) if r.ae_title == "BISHKEK_CATH" else r
            for r in REMOTES
        ),
    )
    archive = open_archive(ruled)
    ingestor = Ingestor(ruled, archive)
    uids = []
    for n in range(2):
        marked = xa_instance(PATIENTS[n], frames=2, rows=64, cols=64)
        marked.BurnedInAnnotation = "YES"
        result = ingestor.ingest(incoming(marked, calling_ae="BISHKEK_CATH"))
        assert result.outcome is Outcome.VERIFYING
        uids.append(str(result.dataset.SOPInstanceUID))
    # The rule is gone when the verifier runs (a restart with a new config).
    later = Verifier(Ingestor(make_config(tmp_path, ocr_deferred=True), archive), 1)
    try:
        first, second = sorted(archive.index.ocr_queue.claim(later.owner), key=lambda r: r["pk"])
        assert json.loads(first["rectangles"]) == [[0, 0, 63, 5]]
        later.verify(first)
        assert stored_uids(archive, {uids[0]}) == {uids[0]}
        with archive.index.engine.begin() as conn:  # as if no rule had been recorded
            conn.execute(
                ocr_queue.update().where(ocr_queue.c.pk == second["pk"]).values(rectangles="[]")
            )
        second = {**second, "rectangles": "[]"}
        later.verify(second)
        (held,) = archive.index.quarantined(uids[1])
        assert held["reason"].startswith("blanked areas cannot be made again")
    finally:
        later.stop()
        archive.close()


def test_a_node_restarted_with_ocr_off_still_reads_what_waits(
    world: tuple[Ingestor, Archive, Verifier], deferred: Config
) -> None:
    """Held to be read, read: an instance that waited across a restart with
    ocr = false is not stored unread (a burned-in name would go out)."""
    from dataclasses import replace as changed

    ingestor, archive, _ = world
    uid = str(
        ingestor.ingest(incoming(attacks.staff_and_phone_only_in_pixels())).dataset.SOPInstanceUID
    )
    off = changed(deferred, ocr=False)
    later = Verifier(Ingestor(off, archive), 1)
    try:
        assert later.run_once() == 1
    finally:
        later.stop()
    assert stored_uids(archive, {uid}) == set()
    assert archive.index.quarantined(uid)[0]["reason"].startswith("OCR found identity text")


# -- large instances: held from the spool, read back through the spool ---------------
@pytest.fixture(scope="module")
def large(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[test_spool.Side, test_spool.Side, Verifier]]:
    """Two archives under one set of keys: one reads before it answers, in
    memory; the other spools everything over 1 MiB and reads after it
    answers (its verifier decrypts held clips into its spool)."""
    root = tmp_path_factory.mktemp("large")
    sides = []
    for name, deferred_ocr, threshold in (("now", False, 4096), ("later", True, 1)):
        config = make_config(
            root / name,
            key_dir=root / "secrets",
            spool_dir=root / f"spool-{name}",
            spool_threshold_mb=threshold,
            ocr_deferred=deferred_ocr,
        )
        archive = open_archive(config)
        sides.append(test_spool.Side(config, archive, Ingestor(config, archive)))
    verifier = Verifier(sides[1].ingestor, 2)
    yield sides[0], sides[1], verifier
    verifier.stop()
    for side in sides:
        side.archive.close()


def spooled_ingest(side: test_spool.Side, ds: Dataset | tuple[bytes, str]) -> IngestResult:
    data, syntax = ds if isinstance(ds, tuple) else encode(ds)
    with side.ingestor.spool.open() as body:
        body.write(data)
        return side.ingestor.ingest(Incoming(body, syntax, calling_ae="BISHKEK_ECHO"))


def ended_as(archive: Archive, uid: str) -> tuple[bytes | None, bytes | None, list[str]]:
    """What an archive holds of an instance: stored, held, why held."""
    return (
        archive.read(uid),
        archive.read_held(uid),
        [row["reason"] for row in archive.index.quarantined(uid)],
    )


def clip_with_text(frames: int) -> Dataset:
    """Burned-in staff name and phone number in every frame of a clip well
    over the spool threshold."""
    ds = attacks.staff_and_phone_only_in_pixels()
    ds.NumberOfFrames = frames
    ds.PixelData = bytes(ds.PixelData) * frames
    return ds


@pytest.mark.parametrize("case", test_spool.CASES)
def test_a_large_instance_read_later_ends_as_one_read_at_once(
    large: tuple[test_spool.Side, test_spool.Side, Verifier], case: str
) -> None:
    now, later, verifier = large
    data, syntax = encode(test_spool.CASES[case]())
    first = now.ingestor.ingest(Incoming(data, syntax, calling_ae="BISHKEK_ECHO"))
    second = spooled_ingest(later, (data, syntax))
    assert first.outcome in (Outcome.STORED, Outcome.QUARANTINED), first
    if second.outcome is Outcome.VERIFYING:
        assert verifier.run_once() >= 1
    else:  # nothing for OCR to read, a deflated clip (read at once), held at once
        assert second.outcome is first.outcome, second
    assert later.archive.index.ocr_queue.waiting() == 0
    uid = str(first.dataset.SOPInstanceUID)
    assert str(second.dataset.SOPInstanceUID) == uid
    assert ended_as(later.archive, uid) == ended_as(now.archive, uid)


def test_large_clips_are_answered_before_ocr(
    large: tuple[test_spool.Side, test_spool.Side, Verifier],
) -> None:
    """The cases above go the deferred way where they should (not all at once)."""
    later = large[1]
    for case in ("us rgb blanked", "us jpeg in fragments", "capture in fragments", "xa native"):
        result = spooled_ingest(later, test_spool.CASES[case]())
        assert result.outcome is Outcome.VERIFYING, (case, result)
    deflated = spooled_ingest(later, test_spool.CASES["deflated us blanked"]())
    assert deflated.outcome is Outcome.STORED, deflated
    assert large[2].run_once() == 4


def test_identity_burned_into_a_large_clip_is_held_after_the_answer(
    large: tuple[test_spool.Side, test_spool.Side, Verifier],
) -> None:
    later, verifier = large[1], large[2]
    ds = clip_with_text(12)
    assert len(ds.PixelData) > 3 * (1 << 20)
    result = spooled_ingest(later, ds)
    assert (result.outcome, result.status) == (Outcome.VERIFYING, SUCCESS)
    uid = str(result.dataset.SOPInstanceUID)
    assert stored_uids(later.archive, {uid}) == set()
    assert verifier.run_once() == 1
    (held,) = later.archive.index.quarantined(uid)
    assert held["reason"].startswith("OCR found identity text"), held["reason"]
    assert stored_uids(later.archive, {uid}) == set()
    assert later.ingestor.spool.directory is not None
    assert [p for p in later.ingestor.spool.directory.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("damage", ["flipped", "cut", "swapped"])
def test_a_damaged_held_clip_stays_held_saying_so(
    large: tuple[test_spool.Side, test_spool.Side, Verifier], damage: str
) -> None:
    """A held clip whose bytes changed on disk (or another instance's blob
    copied over it) opens for nobody: kept held, nothing stored."""
    later, verifier = large[1], large[2]
    results = [spooled_ingest(later, test_spool.CASES["us rgb blanked"]()) for _ in range(2)]
    uids = [str(r.dataset.SOPInstanceUID) for r in results]
    assert {r.outcome for r in results} == {Outcome.VERIFYING}
    index, held = later.archive.index, later.archive.held
    key, other = (index.quarantined_blob(uid) for uid in uids)
    assert key is not None and other is not None
    path = held.path(key)
    blob = bytearray(path.read_bytes())
    if damage == "flipped":
        blob[len(blob) // 2] ^= 0x01
    elif damage == "cut":
        del blob[-1000:]
    else:
        blob = bytearray(held.path(other).read_bytes())
    path.write_bytes(bytes(blob))
    assert verifier.run_once() == 2
    assert stored_uids(later.archive, {uids[0]}) == set()
    (row,) = index.quarantined(uids[0])
    assert row["reason"].startswith("held copy unreadable for OCR (HeldBlobError)"), row
    assert stored_uids(later.archive, {uids[1]}) == {uids[1]}


def _plaintext_with_identity(archive: Archive, uid: str) -> bytes:
    """The held copy's own plaintext with the child's identity put back into
    its header: what someone with the disk but not the key could write."""
    plain = archive.read_held(uid)
    assert plain is not None
    ds = dcmread(BytesIO(plain))
    ds.PatientName, ds.PatientID = "Asanov^Bolot", "KG-7201010"
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("sealed", [False, True], ids=["plaintext", "sealed-again"])
def test_a_held_copy_put_back_otherwise_is_refused(
    large: tuple[test_spool.Side, test_spool.Side, Verifier], size: str, sealed: bool
) -> None:
    """Only rows held before blobs were encrypted may hold a plaintext: a
    DICOM file swapped in for a sealed held copy is never read, let alone
    stored. Nor is a copy that opens with the key but is not the one the row
    recorded (an older copy of the same instance put back, say)."""
    later, verifier = large[1], large[2]
    archive = later.archive
    if size == "large":
        result = spooled_ingest(later, test_spool.CASES["us rgb blanked"]())
    else:
        study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
        result = later.ingestor.ingest(incoming(echo(1, study, series)))
    assert result.outcome is Outcome.VERIFYING
    uid = str(result.dataset.SOPInstanceUID)
    forged = _plaintext_with_identity(archive, uid)
    if sealed:
        forged = archive._cipher().seal(uid, forged)
    key = archive.index.quarantined_blob(uid)
    assert key is not None
    archive.held.path(key).write_bytes(forged)
    assert verifier.run_once() >= 1
    assert archive.read(uid) is None
    (row,) = archive.index.quarantined(uid)
    assert row["reason"] == "held copy unreadable for OCR (HeldBlobError)", row
