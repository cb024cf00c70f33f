"""STOW-RS bodies as streams: parts exact whatever the chunking, bounds on
parts and headers, a careless or hostile sender's bodies answered with a
reason, each instance answered once."""

from __future__ import annotations

import io
import random

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.keys import Level
from storage.query import Query
from viewer.multipart import MAX_PART_HEADERS, MultipartError, boundary_of, parts
from viewer.stow import PartSink


class Trickle(io.RawIOBase):
    """A body that arrives in short, random reads, as a socket gives it."""

    def __init__(self, data: bytes, seed: int) -> None:
        self._data, self._at, self._random = data, 0, random.Random(seed)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        n = self._random.randint(1, 4000)
        piece = self._data[self._at : self._at + n]
        self._at += len(piece)
        return piece


def body(payloads: list[bytes], boundary: bytes, preamble: bytes = b"") -> bytes:
    out = preamble
    for payload in payloads:
        out += b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n" + payload + b"\r\n"
    return out + b"--" + boundary + b"--\r\nepilogue"


def read_all(data: bytes, boundary: bytes, seed: int = 0, max_parts: int = 100) -> list[bytes]:
    sinks = parts(Trickle(data, seed), boundary, lambda h: io.BytesIO(), max_parts)
    return [s.getvalue() for s in sinks]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.binary(max_size=3000), max_size=6),
    st.integers(0, 2**32),
    st.sampled_from([b"b", b"abc123", b"x" * 70, b"--odd--"]),
)
def test_every_part_comes_back_byte_for_byte_whatever_the_chunking(payloads, seed, boundary):
    wire = b"\r\n--" + boundary
    for _ in range(10):  # a payload may not contain its delimiter (RFC 2046)
        payloads = [p.replace(wire, b"") for p in payloads]
    payloads = [p for p in payloads if wire not in p]
    assert read_all(body(payloads, boundary, b"preamble\r\n"), boundary, seed) == payloads


def test_payloads_that_contain_near_misses_of_the_boundary_stay_whole() -> None:
    boundary = b"frontier"
    tricky = [b"--frontie", b"\r\n--frontie", b"\r\n-frontier", b"frontier--", b"\r\n--front\r"]
    assert read_all(body(tricky, boundary), boundary) == tricky


@pytest.mark.parametrize(
    "data, why",
    [
        (b"--b\r\n\r\nhalf a part", "ends before its closing boundary"),
        (b"no boundary at all", "ends before its closing boundary"),
        (b"--b\r\n" + b"X-Junk: y\r\n" * 2000 + b"\r\npayload\r\n--b--", "16 KiB"),
        (b"--b" + b" " * (MAX_PART_HEADERS + 10), "too long"),
    ],
)
def test_broken_bodies_are_refused_with_a_reason(data: bytes, why: str) -> None:
    with pytest.raises(MultipartError, match=why):
        read_all(data, b"b")


def test_the_part_count_is_bounded_before_the_parts_are_kept() -> None:
    many = b"".join(b"--b\r\n\r\n\r\n" for _ in range(200)) + b"--b--"
    kept = []
    with pytest.raises(MultipartError, match="more than 50 parts"):
        for sink in parts(io.BytesIO(many), b"b", lambda h: io.BytesIO(), 50):
            kept.append(sink)
    assert len(kept) == 50  # all allowed parts were handed over, the 51st refused


@pytest.mark.parametrize(
    "content_type, boundary",
    [
        ('multipart/related; type="application/dicom"; boundary=abc', b"abc"),
        ('Multipart/Related; boundary="q r"; type=application/dicom', b"q r"),
        ("multipart/form-data; boundary=abc", None),
        ("application/dicom", None),
        ("multipart/related", None),
        ("multipart/related; boundary=" + "x" * 73, b"x" * 73),  # Orthanc's, over RFC 2046's 70
    ],
)
def test_only_multipart_related_with_a_boundary_is_read(content_type, boundary) -> None:
    assert boundary_of(content_type) == boundary


def part10(payload: bytes = b"") -> bytes:
    from pydicom.uid import ExplicitVRLittleEndian

    from dicomnode.media.filemeta import file_meta

    return file_meta("1.2.840.10008.5.1.4.1.1.7", "1.2.3.4", ExplicitVRLittleEndian, None) + payload


class FakeSpool:
    def __init__(self) -> None:
        self.opened: list[bytearray] = []

    def open(self) -> Spooled:
        spooled = Spooled()
        self.opened.append(spooled)
        return spooled


class Spooled(bytearray):
    closed = False

    def write(self, data: bytes) -> None:
        self.extend(data)

    def close(self) -> None:
        self.closed = True


def test_a_part_moves_to_the_spool_past_the_threshold_and_its_meta_is_split_off() -> None:
    spool = FakeSpool()
    sink = PartSink(spool, threshold=1000, limit=10_000)
    data = part10(b"\x08\x00" + bytes(2998))
    for i in range(0, len(data), 333):
        sink.write(data[i : i + 333])
    sink.finish()
    assert sink.syntax == "1.2.840.10008.1.2.1"
    assert bytes(sink.data) == b"\x08\x00" + bytes(2998)
    assert sink.data is spool.opened[0]


def test_a_part_over_the_instance_limit_is_dropped_and_its_spool_file_removed() -> None:
    spool = FakeSpool()
    sink = PartSink(spool, threshold=100_000, limit=200_000)
    sink.write(part10(bytes(1000)))
    for _ in range(300):
        sink.write(bytes(1000))
    assert "instance limit" in sink.problem and sink.status == 0xA700
    assert spool.opened[0].closed and sink.data == b""


def test_a_part_that_is_not_dicom_says_so() -> None:
    sink = PartSink(None, threshold=100, limit=5_000)
    sink.write(b"%PDF-1.4 not an image")
    sink.finish()
    assert sink.problem == "not a DICOM Part 10 file" and sink.status == 0xC000


# Through the node's own web server, as a sender's client posts.


@pytest.fixture
def web(config):
    from dataclasses import replace

    from werkzeug.security import generate_password_hash

    from dicomnode.node import Node

    tuned = replace(config, http_host="127.0.0.1", spool_threshold_mb=1)
    with Node(tuned, web=True) as node:
        node.archive.index.accounts.add(
            "pacs", generate_password_hash(PASSWORD), "cardiologist", "NCC Bishkek"
        )
        yield node, f"http://127.0.0.1:{node.http_port}/dicom-web/studies"


PASSWORD = "correct horse battery"
HEADERS = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b0undary'}


def post(url: str, body) -> requests.Response:
    return requests.post(url, data=body, auth=("pacs", PASSWORD), headers=HEADERS, timeout=120)


def encoded(ds) -> bytes:
    from tests.test_dicomweb import part10 as file_of

    return file_of(ds)


@pytest.mark.slow
def test_an_instance_sent_twice_in_one_request_is_stored_and_answered_once(web) -> None:
    from dicomnode.ops.samples import PATIENTS, xa_instance

    node, url = web
    one = encoded(xa_instance(PATIENTS[0], frames=2, rows=16, cols=16))
    response = post(url, body([one, one], b"b0undary"))
    assert response.status_code == 200, response.text
    assert len(response.json()["00081199"]["Value"]) == 1
    assert node.archive.index.stats()["instances"] == 1


@pytest.mark.slow
def test_a_hundred_thousand_empty_parts_are_refused_without_holding_them(web) -> None:
    node, url = web

    def parts_forever():
        yield b"--b0undary\r\n\r\n\r\n" * 100_000 + b"--b0undary--\r\n"

    response = post(url, parts_forever())
    assert response.status_code == 400
    assert "more than 10000 parts" in response.json()["message"]
    assert node.archive.index.stats()["instances"] == 0


@pytest.mark.slow
def test_a_body_cut_short_is_refused_and_what_arrived_whole_is_kept(web) -> None:
    from dicomnode.ops.samples import PATIENTS, xa_instance

    node, url = web
    whole_part = encoded(xa_instance(PATIENTS[0], frames=2, rows=16, cols=16))
    cut = b"--b0undary\r\n\r\n" + whole_part + b"\r\n--b0undary\r\n\r\n" + whole_part[:500]
    response = post(url, cut)
    assert response.status_code == 400
    assert "closing boundary" in response.json()["message"]
    assert "(1 stored before it)" in response.json()["message"]
    assert node.archive.index.stats()["instances"] == 1  # acknowledged by nobody, but intact
    (record,) = [r for r in node.archive.index.audit.rows() if r["event"] == "stow"]
    assert record["detail"].startswith("1 stored, 0 failed, body refused: ")


@pytest.mark.slow
def test_a_large_instance_goes_through_the_spool_and_is_stored_exactly(web) -> None:
    from pydicom import dcmread

    from dicomnode.ops.samples import PATIENTS, xa_instance

    node, url = web
    big = xa_instance(PATIENTS[1], frames=12, rows=256, cols=512, seed=3)  # 1.5 MiB > 1 MiB
    response = post(url, body([encoded(big)], b"b0undary"))
    assert response.status_code == 200, response.text
    stored_uid = response.json()["00081199"]["Value"][0]["00081155"]["Value"][0]
    rows = node.archive.index.find(Query(level=Level.IMAGE, keys={"SOPInstanceUID": ""}))
    rows = list(rows)
    assert [r["SOPInstanceUID"] for r in rows] == [stored_uid]  # the answer names what is held
    stored = [dcmread(io.BytesIO(node.archive.read(r["SOPInstanceUID"]))) for r in rows]
    assert len(stored) == 1
    assert stored[0].PixelData == big.PixelData
    assert str(stored[0].PatientName) != str(big.PatientName)
