"""A decompression bomb retrieved in another transfer syntax.

An attacker (or a careless modality) stores a few kilobytes of constant
compressed frames that decode to hundreds of megabytes, then asks for the
instance uncompressed, the default of every DICOMweb client. Before, the node
built the whole decoded instance (3-4 times its size) before the first byte,
without bound and for as long as it took whoever went away. Now: Explicit VR
Little Endian streams frame by frame (memory one frame, first bytes at once,
work stops with the client); every whole-instance transcode is bounded by
``transcode_max_mb`` (406 over DICOMweb, a failed sub-operation over DIMSE).

Memory is measured with tracemalloc (what Python and numpy allocate), never
by wall-clock.
"""

from __future__ import annotations

import struct
import threading
import tracemalloc
from collections.abc import Iterator
from io import BytesIO

import numpy as np
import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelGet,
    XRayAngiographicImageStorage,
)
from werkzeug.security import generate_password_hash

from dicomnode.config import ConfigError, RemoteAE, validate
from dicomnode.media import transcode
from dicomnode.node import Node, open_archive
from storage.archive import Archive
from tests.conftest import REMOTES, dicomweb_world, make_config
from tests.test_dicomweb_hardening import multipart
from tests.test_frames import image, put
from tests.test_viewer import as_user

PASSWORD = "correct horse battery"
MiB = 1 << 20
LIMIT_MB = 64
SIZE, FRAMES = 2048, 16  # 8 MiB a frame, 128 MiB decoded: twice the limit
DEFAULT = 'multipart/related; type="application/dicom"'  # dicomweb-client's instance Accept
EXPLICIT = f"{DEFAULT}; transfer-syntax={ExplicitVRLittleEndian}"


def constant_rle(rows: int, columns: int, value: int) -> bytes:
    """One RLE Lossless frame of 16-bit ``value`` everywhere (PS3.5 Annex G):
    two byte-plane segments of 128-byte replicate runs."""

    def segment(byte: int) -> bytes:
        count = rows * columns
        runs = bytes([0x81, byte]) * (count // 128)  # -127: the next byte 128 times
        rest = count % 128
        if rest:
            runs += bytes([(257 - rest) & 0xFF, byte])
        return runs

    high, low = segment(value >> 8), segment(value & 0xFF)
    header = struct.pack("<16I", 2, 64, 64 + len(high), *([0] * 13))
    return header + high + low


def bomb(frames: int = FRAMES, size: int = SIZE) -> Dataset:
    """The attacker's instance: constant 16-bit frames, RLE Lossless."""
    ds = image(np.zeros((1, 1, 1), np.uint16))
    ds.Rows, ds.Columns, ds.NumberOfFrames = size, size, frames
    ds.BitsStored, ds.HighBit = 12, 11
    ds.PixelData = encapsulate([constant_rle(size, size, 100 + n) for n in range(frames)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = RLELossless
    return ds


def url_of(ds: Dataset) -> str:
    return (
        f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, Archive]]:
    yield from dicomweb_world(
        tmp_path_factory.mktemp("limits"), PASSWORD, transcode_max_mb=LIMIT_MB
    )


@pytest.fixture
def client(world: tuple[Flask, Archive]) -> FlaskClient:
    client = world[0].test_client()
    as_user(client, "pacs")
    return client


@pytest.fixture(scope="module")
def stored_bomb(world: tuple[Flask, Archive]) -> Dataset:
    ds = bomb()
    put(world[1], ds)
    return ds


class Peak:
    """tracemalloc's peak beyond what was held at the start."""

    def __enter__(self) -> Peak:
        tracemalloc.start()
        self.before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        return self

    def now(self) -> int:
        return tracemalloc.get_traced_memory()[1] - self.before

    def __exit__(self, *exc: object) -> None:
        self.peak = self.now()
        tracemalloc.stop()


# --- WADO-RS: Explicit VR Little Endian streams -----------------------------------------


@pytest.mark.parametrize("accept", [DEFAULT, EXPLICIT])
def test_the_bomb_streams_in_one_frames_memory_first_bytes_first(
    client: FlaskClient, stored_bomb: Dataset, accept: str
) -> None:
    frame = SIZE * SIZE * 2
    with Peak() as memory:
        response = client.get(url_of(stored_bomb), headers={"Accept": accept}, buffered=False)
        assert response.status_code == 200, response.get_data()
        assert f"transfer-syntax={ExplicitVRLittleEndian}" in response.headers["Content-Type"]
        chunks = iter(response.response)
        start = b""
        while len(start) < 4096:  # the part's head, the file's header, Pixel Data's tag
            start += next(chunks)
        first_bytes = memory.now()
        total = len(start)
        try:
            for chunk in chunks:
                total += len(chunk)
        finally:
            response.close()
    assert b"DICM" in start and b"\xe0\x7f\x10\x00OW" in start
    # The first bytes leave with about a frame decoded, not 128 MiB.
    assert first_bytes < 3 * frame, first_bytes
    # A few frames at most (decoder output, its bytes, the chunk the client
    # holds); whole, it was 3-4 x 128 MiB.
    assert memory.peak < 6 * frame, memory.peak
    assert total > FRAMES * frame


def test_a_client_that_goes_away_stops_the_decoding(
    client: FlaskClient, stored_bomb: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[int] = []
    real = transcode.decoded_frame

    def counted(header: Dataset, data: bytes) -> tuple[bytes, Dataset]:
        decoded.append(1)
        return real(header, data)

    monkeypatch.setattr(transcode, "decoded_frame", counted)
    response = client.get(url_of(stored_bomb), headers={"Accept": DEFAULT}, buffered=False)
    assert response.status_code == 200
    chunks = iter(response.response)
    next(chunks)
    next(chunks)
    response.close()  # what the WSGI server does when the client disconnects
    assert 1 <= len(decoded) <= 2, len(decoded)


def test_streamed_is_what_decompressed_makes(
    client: FlaskClient, world: tuple[Flask, Archive]
) -> None:
    """Same data set as ``transcode.decompressed``: pixels and every attribute,
    for RLE grey (odd length: the pad byte), JPEG 2000 and JPEG baseline colour
    (YBR_FULL_422 made RGB, lossy history set)."""
    rng = np.random.default_rng(5)
    grey = image(rng.integers(0, 256, (3, 33, 35)).astype(np.uint8))
    grey.compress(RLELossless, generate_instance_uid=False)
    deep = image(rng.integers(0, 4096, (2, 40, 48)).astype(np.uint16))
    deep.compress(JPEG2000Lossless, generate_instance_uid=False)
    pixels = rng.integers(0, 256, (2, 32, 48, 3)).astype(np.uint8)
    colour = image(pixels, "RGB", PhotometricInterpretation="YBR_FULL_422")
    colour.PixelData = encapsulate([_jpeg(frame) for frame in pixels])  # as an echo machine
    colour["PixelData"].VR = "OB"
    colour.file_meta.TransferSyntaxUID = JPEGBaseline8Bit  # lossy said by the syntax only
    for ds in (grey, deep, colour):
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        put(world[1], ds)
        response = client.get(url_of(ds), headers={"Accept": EXPLICIT})
        assert response.status_code == 200, response.get_data()
        (part,) = multipart(response.data, response.headers["Content-Type"])
        got = dcmread(BytesIO(part))
        want = transcode.decompressed(dcmread(BytesIO(buffer.getvalue())), limit=None)
        assert got.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert got["PixelData"].VR == want["PixelData"].VR
        assert got.PixelData == want.PixelData
        assert np.array_equal(got.pixel_array, want.pixel_array)
        assert {e.tag: e.value for e in got if e.tag != 0x7FE00010} == {
            e.tag: e.value for e in want if e.tag != 0x7FE00010
        }


# --- WADO-RS: other targets bounded -----------------------------------------------------


@pytest.mark.parametrize(
    "target", [JPEG2000Lossless, JPEGLSLossless, DeflatedExplicitVRLittleEndian]
)
def test_whole_transcodes_beyond_the_limit_are_406_before_decoding(
    client: FlaskClient, stored_bomb: Dataset, target: str
) -> None:
    if target not in transcode.instance_targets():
        pytest.skip(f"no encoder for {target} here")
    with Peak() as memory:
        response = client.get(
            url_of(stored_bomb), headers={"Accept": f"{DEFAULT}; transfer-syntax={target}"}
        )
    assert response.status_code == 406, response.status_code
    text = response.get_data(as_text=True)
    assert "too large to transcode here" in text
    assert "transfer-syntax=*" in text and "frames" in text
    assert memory.peak < 8 * MiB, memory.peak


def test_a_study_with_one_bomb_is_406_in_another_syntax(
    client: FlaskClient, world: tuple[Flask, Archive]
) -> None:
    small = image(np.arange(2 * 16 * 16, dtype=np.uint16).reshape(2, 16, 16))
    small.compress(RLELossless, generate_instance_uid=False)
    large = bomb()
    large.StudyInstanceUID = small.StudyInstanceUID
    put(world[1], small)
    put(world[1], large)
    study = f"/dicom-web/studies/{small.StudyInstanceUID}"
    response = client.get(
        study, headers={"Accept": f"{DEFAULT}; transfer-syntax={JPEG2000Lossless}"}
    )
    assert response.status_code == 406
    assert "too large to transcode here" in response.get_data(as_text=True)
    response = client.get(study, headers={"Accept": DEFAULT})  # streamed: both sent
    assert response.status_code == 200
    assert len(multipart(response.data, response.headers["Content-Type"])) == 2


def test_under_the_limit_other_syntaxes_still_work(
    client: FlaskClient, world: tuple[Flask, Archive]
) -> None:
    ds = bomb(frames=2, size=256)
    put(world[1], ds)
    response = client.get(
        url_of(ds), headers={"Accept": f"{DEFAULT}; transfer-syntax={JPEG2000Lossless}"}
    )
    assert response.status_code == 200
    (part,) = multipart(response.data, response.headers["Content-Type"])
    got = dcmread(BytesIO(part))
    assert got.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert [int(f.max()) for f in got.pixel_array] == [100, 101]


def test_decompressed_refuses_before_decoding() -> None:
    ds = dcmread(BytesIO(_saved(bomb(frames=64, size=4096))))  # 2 GiB decoded
    with Peak() as memory, pytest.raises(transcode.TooLarge, match="2048 MiB"):
        transcode.decompressed(ds, limit=512 * MiB)
    assert memory.peak < MiB


def test_the_limit_is_validated(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert make_config(tmp_path).transcode_max_mb == 256
    with pytest.raises(ConfigError, match="transcode_max_mb"):
        validate(make_config(tmp_path, transcode_max_mb=0))


def _jpeg(frame: np.ndarray) -> bytes:
    buffer = BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _saved(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# --- DIMSE: C-GET by a peer that takes only Implicit VR Little Endian -------------------


def test_c_get_of_an_instance_over_the_limit_fails_that_sub_operation(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Never called back: C-GET answers on the viewer's own association.
    viewer = RemoteAE("VIEWER", "127.0.0.1", 104, "-", query_issuers=("NCC Bishkek",))
    config = make_config(tmp_path, transcode_max_mb=1, remote_aes=(*REMOTES, viewer))
    small, large = bomb(frames=2, size=64), bomb(frames=4, size=512)  # 16 KiB, 2 MiB decoded
    large.StudyInstanceUID, large.SeriesInstanceUID = (
        small.StudyInstanceUID,
        small.SeriesInstanceUID,
    )
    with Node(config, web=False) as node:
        for ds in (small, large):
            put(node.archive, ds)
        received: dict[str, Dataset] = {}

        def store(event: evt.Event) -> int:
            ds = event.dataset
            ds.file_meta = event.file_meta
            received[str(ds.SOPInstanceUID)] = ds
            return 0x0000

        client = AE(ae_title="VIEWER")
        client.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        client.add_requested_context(XRayAngiographicImageStorage, ImplicitVRLittleEndian)
        assoc = client.associate(
            "127.0.0.1",
            node.dicom.port,
            ae_title="CHDNODE",
            ext_neg=[build_role(XRayAngiographicImageStorage, scp_role=True)],
            evt_handlers=[(evt.EVT_C_STORE, store)],
        )
        assert assoc.is_established
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = small.StudyInstanceUID
        try:
            answers = list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
        finally:
            assoc.release()
    status, identifier = answers[-1]
    assert status.Status == 0xB000, hex(status.Status)
    assert status.NumberOfCompletedSuboperations == 1
    assert status.NumberOfFailedSuboperations == 1
    assert status.ErrorComment == "1 not sent: decoded size over this node's transcode limit"
    failed = identifier.FailedSOPInstanceUIDList
    listed = [str(failed)] if isinstance(failed, str) else [str(u) for u in failed]
    assert listed == [large.SOPInstanceUID]
    assert list(received) == [small.SOPInstanceUID]
    assert received[small.SOPInstanceUID].file_meta.TransferSyntaxUID == ImplicitVRLittleEndian


# --- a real client over HTTP that goes away ---------------------------------------------


@pytest.mark.slow
def test_over_http_a_client_that_disconnects_stops_the_work(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """The WSGI server closes the body when the client is gone: decoding
    stops there, far short of the instance's frames."""
    from viewer.dicomweb import wado

    decoded: list[int] = []
    closed = threading.Event()
    real_frame, real_streamed = transcode.decoded_frame, wado._streamed

    def counted(header: Dataset, data: bytes) -> tuple[bytes, Dataset]:
        decoded.append(1)
        return real_frame(header, data)

    def watched(*args: object) -> Iterator[bytes]:
        try:
            yield from real_streamed(*args)  # type: ignore[arg-type]
        finally:
            closed.set()

    monkeypatch.setattr(transcode, "decoded_frame", counted)
    monkeypatch.setattr(wado, "_streamed", watched)
    config = make_config(tmp_path, http_host="127.0.0.1")
    with Node(config, web=True) as node:
        node.archive.index.accounts.add(
            "pacs", generate_password_hash(PASSWORD), "cardiologist", "NCC Bishkek"
        )
        ds = bomb(frames=64)  # 512 MiB decoded
        put(node.archive, ds)
        url = f"http://127.0.0.1:{node.http_port}{url_of(ds)}"
        response = requests.get(
            url, auth=("pacs", PASSWORD), headers={"Accept": DEFAULT}, stream=True, timeout=60
        )
        assert response.status_code == 200
        assert b"DICM" in response.raw.read(4096)
        response.close()
        assert closed.wait(120), "the server never closed the body"
    assert len(decoded) < 64 // 2, len(decoded)


# --- forwarding -------------------------------------------------------------------------


def test_forwarding_an_instance_over_the_limit_waits_with_its_reason(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dicomnode.jobs.forwarding import Forwarder
    from tests.test_forwarding import Destination

    # The destination binds port 0 and is asked which it got.
    destination = Destination(0, {XRayAngiographicImageStorage: [ImplicitVRLittleEndian]})
    ward = RemoteAE("WARD", "127.0.0.1", destination.server.server_address[1], "ward archive")
    config = make_config(tmp_path, transcode_max_mb=1, remote_aes=(*REMOTES, ward))
    archive = open_archive(config)
    large = bomb(frames=4, size=512)  # 2 MiB decoded
    put(archive, large)
    forwarder = Forwarder(config, archive)
    try:
        assert forwarder.enqueue_study(str(large.StudyInstanceUID), "WARD") == 1
        assert forwarder.run_once() == {"sent": 0, "waiting": 1}
    finally:
        destination.server.shutdown()
    assert destination.received == []
    (row,) = archive.index.forwarding.due_or_later()
    assert "more than the 1 MiB this node transcodes whole" in row["last_error"]
    archive.close()
