"""DICOMweb as an attacker with any account uses it: frame lists that would
build gigabytes, path segments that are matching keys (``*``, ``\\`` lists),
Unicode digits, reads that leave no trace in the audit trail.

Instances are written to the archive directly (``tests.test_frames.put``)
and asked for through the Flask test client (fast, in-process, so tracemalloc
sees the server's allocations); one test goes through the real HTTP server
and HTTP Basic, as OHIF or a script would.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit
from werkzeug.security import generate_password_hash

from dicomnode.config import Config
from dicomnode.node import Node
from storage.archive import Archive
from tests.conftest import dicomweb_world
from tests.test_frames import image, put
from tests.test_viewer import as_user
from viewer import readaudit, scope
from viewer.uids import is_uid

PASSWORD = "correct horse battery"
RNG = np.random.default_rng(16)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, Archive]]:
    yield from dicomweb_world(tmp_path_factory.mktemp("dicomweb"), PASSWORD)


@pytest.fixture
def app(world: tuple[Flask, Archive]) -> Flask:
    return world[0]


@pytest.fixture
def archive(world: tuple[Flask, Archive]) -> Archive:
    return world[1]


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    client = app.test_client()
    as_user(client, "pacs")
    return client


class Stored:
    """One instance in the archive, its pixels and its DICOMweb URL."""

    def __init__(self, archive: Archive, pixels: np.ndarray, overlay: int = 0) -> None:
        ds = image(pixels)
        if overlay:  # bulk data before Pixel Data
            ds.add_new(0x60000010, "US", 1024)
            ds.add_new(0x60000011, "US", overlay * 8 // 1024)
            ds.add_new(0x60003000, "OW", b"\x01" * overlay)
        self.dataset = ds
        self.frames = [frame.tobytes() for frame in pixels]
        self.study, self.series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
        self.sop = put(archive, ds)

    @property
    def url(self) -> str:
        return f"/dicom-web/studies/{self.study}/series/{self.series}/instances/{self.sop}"


def grey(frames: int, size: int) -> np.ndarray:
    return RNG.integers(0, 256, (frames, size, size)).astype(np.uint8)


def multipart(body: bytes, content_type: str) -> list[bytes]:
    """The payloads of a multipart/related answer."""
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"')
    chunks = body.split(b"--" + boundary.encode())[1:-1]
    return [chunk.partition(b"\r\n\r\n")[2][:-2] for chunk in chunks]


def peak_bytes(work: Callable[[], object]) -> int:
    """The most memory Python held during ``work`` beyond what it held before."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        work()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def drained(client: FlaskClient, url: str) -> tuple[int, int]:
    """Status and byte count of an answer read chunk by chunk, as a client
    on the network would (nothing of it kept)."""
    response = client.get(url, buffered=False)
    total = 0
    try:
        for chunk in response.response:
            total += len(chunk)
    finally:
        response.close()
    return response.status_code, total


def reads(archive: Archive) -> list[dict]:
    """The "study-view" records, oldest first."""
    return [r for r in reversed(archive.index.audit.rows()) if r["event"] == "study-view"]


# --- frame lists -----------------------------------------------------------------------


def test_5000_repetitions_of_a_frame_are_refused_before_anything_is_built(
    client: FlaskClient, archive: Archive
) -> None:
    run = Stored(archive, grey(4, 64))  # 4 KB a frame: 20 MB if every repetition were sent
    url = f"{run.url}/frames/" + ",".join(["1"] * 5000)
    answer: dict[str, object] = {}
    peak = peak_bytes(lambda: answer.update(response=client.get(url)))
    response = answer["response"]
    assert response.status_code == 400, response.status_code
    assert "256" in response.json["message"]
    assert peak < 1 << 20, f"{peak} bytes held for a refused frame list"


def test_frames_are_streamed_from_the_blob_one_at_a_time(
    client: FlaskClient, archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = Stored(archive, grey(256, 128))  # 16 KB a frame, 4 MB in all
    # Never the whole instance: neither the archive's read nor the store's.
    monkeypatch.setattr(archive, "read", lambda *_: pytest.fail("whole instance read"))
    monkeypatch.setattr(archive.blobs, "read", lambda *_: pytest.fail("whole blob read"))
    assert drained(client, f"{run.url}/frames/1")[0] == 200  # layout worked out once
    everything = f"{run.url}/frames/" + ",".join(str(n) for n in range(1, 257))
    answer: dict[str, tuple[int, int]] = {}
    peak = peak_bytes(lambda: answer.update(result=drained(client, everything)))
    status, size = answer["result"]
    assert status == 200 and size > 256 * 128 * 128
    assert peak < 1 << 20, f"{peak} bytes held while streaming 4 MB of frames"
    # What was streamed is each stored frame, in the order asked.
    response = client.get(f"{run.url}/frames/256,1,2")
    assert response.status_code == 200
    payloads = multipart(response.data, response.headers["Content-Type"])
    assert payloads == [run.frames[255], run.frames[0], run.frames[1]]
    assert int(response.headers["Content-Length"]) == len(response.data)


def test_a_frame_list_is_deduplicated_in_order_of_first_appearance(
    client: FlaskClient, archive: Archive
) -> None:
    run = Stored(archive, grey(3, 8))
    response = client.get(f"{run.url}/frames/3,1,3,1,2,3")
    assert response.status_code == 200, response.data
    payloads = multipart(response.data, response.headers["Content-Type"])
    assert payloads == [run.frames[2], run.frames[0], run.frames[1]]


def test_encapsulated_frames_go_as_stored_deduplicated(
    client: FlaskClient, archive: Archive
) -> None:
    fragments = [b"\xff\xd8frame %02d\xff\xd9" % n for n in range(3)]  # even lengths
    ds = image(grey(3, 8))
    ds.PixelData = encapsulate(fragments)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds["PixelData"].VR = "OB"
    sop = put(archive, ds)
    url = f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    response = client.get(f"{url}/instances/{sop}/frames/2,2,3")
    assert response.status_code == 200, response.data
    assert 'type="image/jpeg"' in response.headers["Content-Type"]
    assert multipart(response.data, response.headers["Content-Type"]) == fragments[1:]


def test_more_distinct_frames_than_the_cap_are_refused(
    client: FlaskClient, archive: Archive
) -> None:
    run = Stored(archive, grey(300, 4))
    listed = ",".join(str(n) for n in range(1, 258))
    response = client.get(f"{run.url}/frames/{listed}")
    assert response.status_code == 400 and "256" in response.json["message"]
    assert client.get(f"{run.url}/frames/301").status_code == 404


@pytest.fixture(scope="module")
def shared(world: tuple[Flask, Archive]) -> tuple[FlaskClient, Stored]:
    """A client and an instance for the many cases that only read."""
    client = world[0].test_client()
    as_user(client, "pacs")
    return client, Stored(world[1], grey(2, 8))


# int() takes all of these; a frame number is ASCII digits from 1, no zeros first.
NOT_NUMBERS = ["١", "０1", "01", "+1", "-1", " 1", "1 ", "1_0", "١,2", "1,,2", "1,", "0"]


@pytest.mark.parametrize("given", NOT_NUMBERS)
def test_a_frame_list_holds_ascii_numbers_only(
    shared: tuple[FlaskClient, Stored], given: str
) -> None:
    client, run = shared
    response = client.get(f"{run.url}/frames/{quote(given)}")
    assert response.status_code == 400, (given, response.status_code)
    assert response.json["message"]


@pytest.mark.parametrize("given", ["١", "０1", "01", "001", "٢"])
def test_a_rendered_frame_number_is_ascii_digits(
    shared: tuple[FlaskClient, Stored], given: str
) -> None:
    client, run = shared
    response = client.get(f"{run.url}/frames/{quote(given)}/rendered")
    assert response.status_code in (400, 404), (given, response.status_code)
    assert client.get(f"{run.url}/frames/2/rendered").status_code == 200


# --- UIDs in the path are one exact UID ---------------------------------------------------

ROUTES = [
    "/dicom-web/studies/{study}",
    "/dicom-web/studies/{study}/metadata",
    "/dicom-web/studies/{study}/series",
    "/dicom-web/studies/{study}/series/{series}",
    "/dicom-web/studies/{study}/series/{series}/instances",
    "/dicom-web/studies/{study}/series/{series}/instances/{instance}",
    "/dicom-web/studies/{study}/series/{series}/instances/{instance}/metadata",
    "/dicom-web/studies/{study}/series/{series}/instances/{instance}/rendered",
    "/dicom-web/studies/{study}/series/{series}/instances/{instance}/thumbnail",
    "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/1",
    "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/1/rendered",
]
NOT_UIDS = {
    "wildcard": "*",
    "trailing wildcard": "{uid}*",
    "single-character wildcard": "{uid}?",
    "list": "{uid}\\{uid}",
    "component with a leading zero": "1.2.03",
    "empty component": "1..2",
    "too long": "1." + "2" * 63,
    "Unicode digit": "1.٢",
    "space": "{uid} ",
}


def refused(response: Any) -> bool:
    """Refused as no UID: 400 saying so here, or 404 as for an unknown UID
    from `viewer.scope`, which checks every path UID before any view runs."""
    body = response.json() if callable(response.json) else response.json
    if response.status_code == 400:
        return "UID" in body["message"]
    return response.status_code == 404 and body["message"] == scope.DICOMWEB_NOT_FOUND


@pytest.mark.parametrize("name", NOT_UIDS)
def test_the_uid_rule_of_ps3_5(name: str) -> None:
    assert not is_uid(NOT_UIDS[name].format(uid="1.2.3"))


@pytest.mark.parametrize("uid", ["0", "1.2.3", "2.25.0.10", "1." + "2" * 62])
def test_uids_of_ps3_5_pass(uid: str) -> None:
    assert is_uid(uid)


def test_a_leading_zero_is_refused_with_a_reason(shared: tuple[FlaskClient, Stored]) -> None:
    """The scope's check lets it through (a well-formed digit string); this
    node's UIDs never have one, and a PS3.5 UID may not."""
    client = shared[0]
    response = client.get("/dicom-web/studies/1.2.01/metadata")
    assert response.status_code == 400
    assert response.json["message"].startswith("StudyInstanceUID in the path is not a UID")


def _cases() -> Iterator[tuple[str, str, str]]:
    for route in ROUTES:
        for part in ("study", "series", "instance"):
            if "{" + part + "}" in route:
                for name in NOT_UIDS:
                    yield route, part, name


@pytest.mark.parametrize(("route", "part", "bad"), list(_cases()))
def test_a_path_uid_is_one_exact_uid(
    shared: tuple[FlaskClient, Stored], route: str, part: str, bad: str
) -> None:
    client, run = shared
    uids = {"study": run.study, "series": run.series, "instance": run.sop}
    uids[part] = NOT_UIDS[bad].format(uid=uids[part])
    response = client.get(route.format(**{k: quote(v, safe="") for k, v in uids.items()}))
    assert refused(response), (bad, response.status_code, response.data[:200])
    archive = client.application.extensions["archive"]
    assert not any(r["object"] == uids[part] for r in reads(archive))


def test_a_star_does_not_retrieve_the_archive(client: FlaskClient, archive: Archive) -> None:
    first, second = Stored(archive, grey(2, 8)), Stored(archive, grey(2, 8))
    for url in ("/dicom-web/studies/*", f"/dicom-web/studies/{first.study}%5C{second.study}"):
        response = client.get(url)
        assert refused(response) and b"DICM" not in response.data
    assert not any("*" in r["object"] or "\\" in r["object"] for r in reads(archive))
    # The exact UID still works, and is matched as it is.
    assert client.get(f"/dicom-web/studies/{first.study}").status_code == 200
    other = first.study[:-1] + ("1" if first.study[-1] != "1" else "2")  # a UID nobody holds
    assert client.get(f"/dicom-web/studies/{other}").status_code == 404


def test_an_instance_is_read_only_under_its_own_study_and_series(
    client: FlaskClient, archive: Archive
) -> None:
    """/rendered and /thumbnail named the instance alone: any study's UID in
    the path served it (and the audit would name the wrong study)."""
    mine, other = Stored(archive, grey(2, 8)), Stored(archive, grey(2, 8))
    wrong = f"/dicom-web/studies/{other.study}/series/{other.series}/instances/{mine.sop}"
    for tail in ("rendered", "thumbnail", "frames/1", "frames/1/rendered", "metadata", ""):
        assert client.get(f"{wrong}/{tail}".rstrip("/")).status_code == 404, tail


# --- every read in the audit trail -----------------------------------------------------

READS = {
    "retrieve study": "/dicom-web/studies/{study}",
    "retrieve series": "/dicom-web/studies/{study}/series/{series}",
    "retrieve instance": "{url}",
    "study metadata": "/dicom-web/studies/{study}/metadata",
    "instance metadata": "{url}/metadata",
    "rendered": "{url}/rendered",
    "rendered frame": "{url}/frames/2/rendered",
    "thumbnail": "{url}/thumbnail",
    "frames": "{url}/frames/1,2",
}


def test_every_dicomweb_read_is_audited_once_with_its_study(
    client: FlaskClient, archive: Archive
) -> None:
    run = Stored(archive, grey(2, 8))
    details = {}
    for kind, route in READS.items():
        before = len(reads(archive))
        url = route.format(study=run.study, series=run.series, url=run.url)
        response = client.get(url)
        assert response.status_code == 200, (kind, response.status_code)
        response.close()  # a streamed answer read to its end
        new = reads(archive)[before:]
        assert len(new) == 1, (kind, new)
        (row,) = new
        assert (row["user"], row["object"], row["outcome"]) == ("pacs", run.study, 0)
        assert row["detail"].startswith("DICOMweb"), row["detail"]
        details[kind] = row["detail"]
        # Nothing of the child's identity in the record.
        name, patient = str(run.dataset.PatientName), str(run.dataset.PatientID)
        assert not any(name in str(v) or patient in str(v) for v in row.values())
    # Each kind of read says which it was (rendered names which frame only by route).
    assert len(set(details.values())) >= len(READS) - 1, details


def test_the_viewers_frame_reads_are_audited_once_a_minute_per_session_and_study(
    app: Flask, client: FlaskClient, archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(readaudit, "clock", lambda: now[0])
    run, other = Stored(archive, grey(3, 8)), Stored(archive, grey(3, 8))
    api = f"/api/instances/{run.sop}"
    before = len(reads(archive))
    for tail in ("meta", "thumbnail", "frames/1", "raw/1-2", "raw/3-3", "frames/2"):
        assert client.get(f"{api}/{tail}").status_code == 200, tail
    (row,) = reads(archive)[before:]  # a cine clip and its thumbnails: one record
    assert (row["user"], row["object"]) == ("pacs", run.study)
    assert row["detail"].startswith("viewer"), row["detail"]
    # Another study, another session, a minute later: each a record of its own.
    assert client.get(f"/api/instances/{other.sop}/meta").status_code == 200
    second = app.test_client()
    as_user(second, "pacs")
    assert second.get(f"{api}/meta").status_code == 200
    assert [r["object"] for r in reads(archive)[before:]] == [run.study, other.study, run.study]
    now[0] += readaudit.WINDOW_SECONDS + 1
    assert client.get(f"{api}/frames/1").status_code == 200
    assert len(reads(archive)) == before + 4
    # A read that finds nothing is no read of a study.
    assert client.get("/api/instances/1.2.3.4/meta").status_code == 404
    assert len(reads(archive)) == before + 4


def test_the_coalescing_memory_is_bounded() -> None:
    now = [0.0]
    seen = readaudit.Recent(capacity=100, window=60, clock=lambda: now[0])
    assert seen.first(("session", "1.2.3")) and not seen.first(("session", "1.2.3"))
    for n in range(10_000):
        assert seen.first(("session", f"2.{n}"))
    assert len(seen) <= 100
    now[0] += 61
    assert seen.first(("session", "1.2.3"))  # the window passed


# --- metadata without the whole file -----------------------------------------------------


def test_metadata_reads_the_header_only(
    client: FlaskClient, archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = Stored(archive, grey(1, 8))
    big = Stored(archive, grey(64, 256), overlay=1 << 20)  # 4 MB of pixels, 1 MB before them
    monkeypatch.setattr(archive, "read", lambda *_: pytest.fail("whole instance read"))
    monkeypatch.setattr(archive.blobs, "read", lambda *_: pytest.fail("whole blob read"))
    assert client.get(f"{small.url}/metadata").status_code == 200  # imports, caches
    answer: dict[str, object] = {}
    peak = peak_bytes(lambda: answer.update(response=client.get(f"{big.url}/metadata")))
    response = answer["response"]
    assert response.status_code == 200, response.data
    (body,) = response.json
    assert "BulkDataURI" in body["7FE00010"] and "BulkDataURI" in body["60003000"]
    assert body["00080018"]["Value"] == [big.sop]
    assert peak < 1 << 20, f"{peak} bytes held for a header"


# --- through the real server, by HTTP Basic -----------------------------------------------


@pytest.mark.slow
def test_over_http_wildcards_unicode_and_long_lists_are_refused_and_reads_audited(
    config: Config,
) -> None:
    with Node(replace(config, http_host="127.0.0.1"), web=True) as node:
        accounts = node.archive.index.accounts
        accounts.add("pacs", generate_password_hash(PASSWORD), "cardiologist", "NCC Bishkek")
        base = f"http://127.0.0.1:{node.http_port}"
        run = Stored(node.archive, grey(2, 8))

        def get(path: str) -> requests.Response:
            return requests.get(base + path, auth=("pacs", PASSWORD), timeout=30)

        assert refused(get("/dicom-web/studies/*"))
        assert refused(get(f"/dicom-web/studies/{run.study}%5C{run.study}"))
        assert get(f"{run.url}/frames/%D9%A1/rendered").status_code == 400  # Arabic-Indic 1
        assert get(f"{run.url}/frames/" + ",".join(["1"] * 5000)).status_code == 400
        assert get(f"{run.url}/metadata").status_code == 200
        assert [r["object"] for r in reads(node.archive)] == [run.study]
