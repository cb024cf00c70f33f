"""WADO-RS answers in what the Accept header allows (PS3.18 §8.7), else 406.

Clients at their defaults (OHIF's frames request, dicomweb-client's
instance request), clients asking for exactly one syntax, careless or
hostile headers. Stored instances are made here with pydicom (RLE, JPEG
2000) and Pillow (JPEG baseline), written to the archive directly
(``tests.test_frames.put``) and read through the Flask test client, and
through the real HTTP server with dicomweb-client.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from io import BytesIO

import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)
from werkzeug.security import generate_password_hash

from dicomnode.config import Config
from dicomnode.media import transcode
from dicomnode.node import Node
from storage.archive import Archive
from tests.conftest import dicomweb_world
from tests.test_dicomweb_hardening import peak_bytes, reads
from tests.test_frames import image, put
from tests.test_viewer import as_user
from viewer.dicomweb.negotiate import MAX_RANGES, NotAcceptable, parse

PASSWORD = "correct horse battery"
RNG = np.random.default_rng(17)
OHIF_FRAMES = "multipart/related; type=application/octet-stream; transfer-syntax=*"
EXPLICIT = f'multipart/related; type="application/dicom"; transfer-syntax={ExplicitVRLittleEndian}'

# What the node transcodes whole by default (transcode_max_mb).
LIMIT = Config().transcode_max_mb << 20


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, Archive]]:
    yield from dicomweb_world(tmp_path_factory.mktemp("wado"), PASSWORD)


@pytest.fixture
def archive(world: tuple[Flask, Archive]) -> Archive:
    return world[1]


@pytest.fixture
def client(world: tuple[Flask, Archive]) -> FlaskClient:
    client = world[0].test_client()
    as_user(client, "pacs")
    return client


def smooth(frames: int, size: int, samples: int = 1) -> np.ndarray:
    """8-bit frames a JPEG keeps close (gradients and a disc, some noise)."""
    y, x = np.mgrid[0:size, 0:size]
    out = []
    for n in range(frames):
        grey = (x * 2 + y + n * 9) % 200 + 20
        grey = np.where((x - size / 2) ** 2 + (y - size / 2) ** 2 < (size / 4) ** 2, 230, grey)
        grey = grey + RNG.integers(0, 4, grey.shape)
        out.append(np.stack([grey, 255 - grey, grey // 2], -1) if samples == 3 else grey)
    return np.clip(np.array(out), 0, 255).astype(np.uint8)


def stored_as(pixels: np.ndarray, syntax: str) -> Dataset:
    """An XA instance of ``pixels`` in ``syntax``: RLE and JPEG 2000 by pydicom,
    JPEG baseline by Pillow (as an echo machine's encoder would)."""
    ds = image(pixels, "RGB" if pixels.ndim == 4 else "MONOCHROME2")
    if syntax == JPEGBaseline8Bit:
        encoded = []
        for frame in pixels:
            buffer = BytesIO()
            Image.fromarray(frame).save(buffer, format="JPEG", quality=90)
            encoded.append(buffer.getvalue())
        ds.PixelData = encapsulate(encoded)
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.LossyImageCompression = "01"
        if pixels.ndim == 4:
            ds.PhotometricInterpretation = "YBR_FULL_422"
    elif syntax != ExplicitVRLittleEndian:
        ds.compress(syntax, generate_instance_uid=False)
    return ds


class Stored:
    def __init__(self, archive: Archive, ds: Dataset) -> None:
        self.dataset = ds
        self.study, self.series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
        self.sop = put(archive, ds)
        self.blob = archive.read(self.sop)

    @property
    def url(self) -> str:
        return f"/dicom-web/studies/{self.study}/series/{self.series}/instances/{self.sop}"

    def decoded(self) -> np.ndarray:
        """What pydicom decodes of the stored instance: (frames, rows, columns[, 3])."""
        array = dcmread(BytesIO(self.blob)).pixel_array
        return array if int(self.dataset.NumberOfFrames) > 1 else array[None]


@pytest.fixture(scope="module")
def runs(world: tuple[Flask, Archive]) -> dict[str, Stored]:
    archive = world[1]
    grey = smooth(4, 64)
    return {
        "native": Stored(archive, stored_as(grey, ExplicitVRLittleEndian)),
        "rle": Stored(archive, stored_as(grey, RLELossless)),
        "j2k": Stored(archive, stored_as(grey, JPEG2000Lossless)),
        "jpeg": Stored(archive, stored_as(grey, JPEGBaseline8Bit)),
        "jpeg-colour": Stored(archive, stored_as(smooth(3, 64, 3), JPEGBaseline8Bit)),
    }


def parts_of(response) -> list[tuple[str, bytes]]:
    """(Content-Type, payload) of each part of a multipart answer."""
    boundary = response.headers["Content-Type"].split("boundary=")[1].split(";")[0].strip('"')
    out = []
    for chunk in response.data.split(b"--" + boundary.encode())[1:-1]:
        head, _, body = chunk.partition(b"\r\n\r\n")
        out.append((head.decode().split("Content-Type:")[1].strip(), body[:-2]))
    return out


def frame_values(data: bytes, ds: Dataset) -> np.ndarray:
    rows, columns = int(ds.Rows), int(ds.Columns)
    samples = int(ds.SamplesPerPixel)
    shape = (rows, columns, samples) if samples == 3 else (rows, columns)
    return np.frombuffer(data, np.uint8).reshape(shape)


# --- the Accept header ---------------------------------------------------------------


def test_accept_as_clients_write_it() -> None:
    (ohif,) = parse(OHIF_FRAMES)
    assert (ohif.media, ohif.syntax, ohif.multipart) == ("application/octet-stream", "*", True)
    quoted = parse(
        'multipart/related; type="application/dicom"; transfer-syntax="1.2.840.10008.1.2.5"'
    )
    assert (quoted[0].media, quoted[0].syntax) == ("application/dicom", "1.2.840.10008.1.2.5")
    ranked = parse("image/png;q=0.2, image/gif, image/jpeg;q=0.5")
    assert [r.media for r in ranked] == ["image/gif", "image/jpeg", "image/png"]
    assert parse(None)[0].media == "*/*" and parse("")[0].media == "*/*"
    assert [r.media for r in parse("image/png;q=0, */*")] == ["*/*"]


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "image/jpeg garbage",
        "image/jpeg; q=2",
        "image/jpeg; q=abc",
        'multipart/related; type="application/dicom"; transfer-syntax=../../etc',
        "*/jpeg",
        "image/jpeg;;",
        "image/png;q=0",
        "image/jpeg; " + "; ".join(f"p{n}=1" for n in range(20)),
        "image/jpeg; transfer-syntax=" + "1" * 300,
    ],
)
def test_an_unreadable_accept_is_406_not_500(
    client: FlaskClient, runs: dict[str, Stored], header: str
) -> None:
    with pytest.raises(NotAcceptable):
        parse(header)
    for tail in ("", "/frames/1", "/rendered"):
        response = client.get(runs["rle"].url + tail, headers={"Accept": header})
        assert response.status_code == 406, (tail, response.status_code)
        assert "Accept" in response.get_data(as_text=True)


def test_ten_thousand_media_ranges_are_refused_before_they_are_read(
    client: FlaskClient, runs: dict[str, Stored]
) -> None:
    header = ", ".join(["image/jpeg; q=0.5"] * 10_000)
    with pytest.raises(NotAcceptable) as refused:
        parse(header)
    assert refused.value.status == 400
    response = client.get(runs["rle"].url + "/frames/1", headers={"Accept": header})
    assert response.status_code == 400 and "Accept: at most" in response.get_data(as_text=True)
    short = ",".join(["*/*"] * (MAX_RANGES + 1))  # within the characters, beyond the ranges
    response = client.get(runs["rle"].url + "/frames/1", headers={"Accept": short})
    assert response.status_code == 400 and "media ranges" in response.get_data(as_text=True)
    # Just under the bound is read.
    assert len(parse(", ".join(["image/jpeg"] * MAX_RANGES))) == MAX_RANGES
    huge = 'multipart/related; type="' + "a" * 100_000 + '"'
    assert client.get(runs["rle"].url, headers={"Accept": huge}).status_code == 400


# --- instances -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rle", "j2k", "jpeg", "jpeg-colour"])
def test_an_instance_asked_in_explicit_vr_little_endian_is_decompressed(
    client: FlaskClient, runs: dict[str, Stored], kind: str
) -> None:
    run = runs[kind]
    response = client.get(run.url, headers={"Accept": EXPLICIT})
    assert response.status_code == 200
    ((content_type, data),) = parts_of(response)
    assert content_type == f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
    ds = dcmread(BytesIO(data))
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.SOPInstanceUID == run.sop  # the same instance, another encoding
    assert np.array_equal(ds.pixel_array, run.decoded()[:, ...].reshape(ds.pixel_array.shape))
    if kind == "jpeg-colour":
        assert ds.PhotometricInterpretation == "RGB"
    if kind.startswith("jpeg"):
        assert ds.LossyImageCompression == "01"  # still marked lossy


def test_transfer_syntax_star_sends_the_stored_file_byte_for_byte(
    client: FlaskClient, runs: dict[str, Stored]
) -> None:
    for run in runs.values():
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
        ((content_type, data),) = parts_of(client.get(run.url, headers={"Accept": accept}))
        assert data == run.blob
        assert content_type.endswith(str(run.dataset.file_meta.TransferSyntaxUID))


def test_the_default_is_explicit_vr_little_endian_unless_only_lossy_data_is_held(
    client: FlaskClient, runs: dict[str, Stored]
) -> None:
    """PS3.18 §8.7.3: no transfer-syntax means the default, except for pixel
    data the node holds only in lossy form (sent as it is)."""
    for accept in (None, "multipart/related; type=application/dicom", "*/*"):
        headers = {"Accept": accept} if accept else {}
        ((_, rle),) = parts_of(client.get(runs["rle"].url, headers=headers))
        assert dcmread(BytesIO(rle)).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        ((_, jpeg),) = parts_of(client.get(runs["jpeg"].url, headers=headers))
        assert jpeg == runs["jpeg"].blob


def test_q_values_choose_among_transfer_syntaxes(
    client: FlaskClient, runs: dict[str, Stored]
) -> None:
    accept = (
        f'multipart/related; type="application/dicom"; transfer-syntax={RLELossless}; q=0.4, '
        f'multipart/related; type="application/dicom"; transfer-syntax={JPEG2000Lossless}; q=0.9'
    )
    ((content_type, data),) = parts_of(client.get(runs["native"].url, headers={"Accept": accept}))
    assert content_type.endswith(JPEG2000Lossless)
    ds = dcmread(BytesIO(data))
    assert ds.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert np.array_equal(ds.pixel_array, runs["native"].decoded())
    # The stored syntax, when acceptable at all, is not transcoded into another.
    ((_, same),) = parts_of(client.get(runs["j2k"].url, headers={"Accept": accept}))
    assert same == runs["j2k"].blob
    accept = accept.replace("q=0.4", "q=1")
    ((content_type, data),) = parts_of(client.get(runs["native"].url, headers={"Accept": accept}))
    assert dcmread(BytesIO(data)).file_meta.TransferSyntaxUID == RLELossless


@pytest.mark.parametrize(
    "accept",
    [
        "application/pdf",
        'multipart/related; type="image/jpeg"',
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2',
        f'multipart/related; type="application/dicom"; transfer-syntax={JPEGBaseline8Bit}',
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.3.4',
    ],
)
def test_what_cannot_be_made_is_406_saying_what_can(
    client: FlaskClient, runs: dict[str, Stored], archive: Archive, accept: str
) -> None:
    before = len(reads(archive))
    response = client.get(runs["rle"].url, headers={"Accept": accept})
    assert response.status_code == 406
    message = response.get_json()["message"] if response.is_json else response.get_data(True)
    assert "transfer-syntax=*" in message and ExplicitVRLittleEndian in message
    assert len(reads(archive)) == before  # nothing was read


@pytest.mark.slow
def test_a_series_is_transcoded_one_instance_at_a_time(
    client: FlaskClient, archive: Archive
) -> None:
    """A series of RLE runs asked for uncompressed: each part made as it is
    sent, so memory holds about one instance whatever the series holds."""

    def series(count: int) -> str:
        first = stored_as(smooth(24, 128), RLELossless)
        Stored(archive, first)
        for _ in range(count - 1):
            ds = stored_as(smooth(24, 128), RLELossless)
            ds.StudyInstanceUID = first.StudyInstanceUID
            ds.SeriesInstanceUID = first.SeriesInstanceUID
            Stored(archive, ds)
        return f"/dicom-web/studies/{first.StudyInstanceUID}/series/{first.SeriesInstanceUID}"

    one, eight = series(1), series(8)
    instance = 24 * 128 * 128
    assert _drain(client, eight, EXPLICIT) > 8 * instance
    _drain(client, one, EXPLICIT)  # layouts and codecs loaded before measuring
    alone = peak_bytes(lambda: _drain(client, one, EXPLICIT))
    together = peak_bytes(lambda: _drain(client, eight, EXPLICIT))
    assert together < alone + instance, f"{together} bytes for 8 instances, {alone} for one"


def _drain(client: FlaskClient, url: str, accept: str) -> int:
    response = client.get(url, headers={"Accept": accept}, buffered=False)
    total = 0
    try:
        for chunk in response.response:
            total += len(chunk)
    finally:
        response.close()
    assert response.status_code == 200
    return total


# --- frames ----------------------------------------------------------------------------


def test_ohifs_default_frames_request_gets_the_stored_frames_streamed(
    client: FlaskClient, runs: dict[str, Stored]
) -> None:
    for kind in ("native", "rle", "jpeg", "j2k"):
        run = runs[kind]
        response = client.get(f"{run.url}/frames/2,1", headers={"Accept": OHIF_FRAMES})
        assert response.status_code == 200 and "Content-Length" in response.headers
        stored = [transcode_free_frames(run)[1], transcode_free_frames(run)[0]]
        assert [data for _, data in parts_of(response)] == stored
        syntax = run.dataset.file_meta.TransferSyntaxUID
        assert all(ct.endswith(f"transfer-syntax={syntax}") for ct, _ in parts_of(response))


def transcode_free_frames(run: Stored) -> list[bytes]:
    """The stored bytes of each frame."""
    from pydicom.encaps import generate_frames

    ds = dcmread(BytesIO(run.blob))
    count = int(ds.NumberOfFrames)
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        return list(generate_frames(ds.PixelData, number_of_frames=count))
    size = len(ds.PixelData) // count
    return [ds.PixelData[i * size : (i + 1) * size] for i in range(count)]


@pytest.mark.parametrize("kind", ["rle", "j2k", "jpeg"])
def test_frames_asked_uncompressed_are_decoded(
    client: FlaskClient, runs: dict[str, Stored], kind: str
) -> None:
    run = runs[kind]
    accept = 'multipart/related; type="application/octet-stream"'
    response = client.get(f"{run.url}/frames/3,1", headers={"Accept": accept})
    assert response.status_code == 200
    (first, second) = parts_of(response)
    assert first[0] == f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
    decoded = run.decoded()
    assert np.array_equal(frame_values(first[1], run.dataset), decoded[2])
    assert np.array_equal(frame_values(second[1], run.dataset), decoded[0])


def test_an_rle_frame_asked_as_jpeg_baseline_is_a_jpeg_of_that_frame(
    client: FlaskClient, runs: dict[str, Stored]
) -> None:
    run = runs["rle"]
    accept = f'multipart/related; type="image/jpeg"; transfer-syntax={JPEGBaseline8Bit}'
    response = client.get(f"{run.url}/frames/2", headers={"Accept": accept})
    assert response.status_code == 200
    ((content_type, data),) = parts_of(response)
    assert content_type == f"image/jpeg; transfer-syntax={JPEGBaseline8Bit}"
    shown = np.asarray(Image.open(BytesIO(data))).astype(int)
    assert np.abs(shown - run.decoded()[1].astype(int)).mean() < 3


def test_image_jpeg_without_a_syntax_is_lossless_jpeg_so_never_made_lossy(
    client: FlaskClient, runs: dict[str, Stored]
) -> None:
    """PS3.18 Table 8.7.3-5: image/jpeg's default is JPEG Lossless SV1; the
    node has no encoder for it, so an RLE frame is 406, not a lossy JPEG;
    a JPEG baseline frame (only lossy data held) goes as stored."""
    accept = 'multipart/related; type="image/jpeg"'
    response = client.get(f"{runs['rle'].url}/frames/1", headers={"Accept": accept})
    assert response.status_code == 406
    assert JPEGBaseline8Bit in response.get_data(as_text=True)
    response = client.get(f"{runs['jpeg'].url}/frames/1", headers={"Accept": accept})
    assert [d for _, d in parts_of(response)] == transcode_free_frames(runs["jpeg"])[:1]


@pytest.mark.parametrize(
    ("media", "syntax"),
    [
        ("image/x-dicom-rle", RLELossless),
        ("image/dicom-rle", RLELossless),
        ("image/jp2", JPEG2000Lossless),
    ],
)
def test_frames_are_recompressed_losslessly_on_request(
    client: FlaskClient, runs: dict[str, Stored], media: str, syntax: str
) -> None:
    run = runs["native"]
    accept = f'multipart/related; type="{media}"'
    ((content_type, data),) = parts_of(
        client.get(f"{run.url}/frames/4", headers={"Accept": accept})
    )
    assert content_type == f"{media}; transfer-syntax={syntax}"
    array, _ = transcode.decode_frame(_header(run.dataset, syntax), data)
    assert np.array_equal(array, run.decoded()[3])


def _header(ds: Dataset, syntax: str) -> Dataset:
    header = Dataset({tag: e for tag, e in ds.items() if e.keyword != "PixelData"})
    header.file_meta = Dataset()
    header.file_meta.TransferSyntaxUID = syntax
    return header


@pytest.mark.parametrize(
    "accept",
    [
        'multipart/related; type="video/mp4"',
        'multipart/related; type="image/jpx"',
        "application/pdf",
        'multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.5',
    ],
)
def test_frames_that_cannot_be_made_are_406(
    client: FlaskClient, runs: dict[str, Stored], accept: str
) -> None:
    response = client.get(f"{runs['rle'].url}/frames/1", headers={"Accept": accept})
    assert response.status_code == 406
    assert "transfer-syntax=*" in response.get_data(as_text=True)


@pytest.mark.slow
def test_many_frames_transcoded_are_sent_one_at_a_time(
    client: FlaskClient, archive: Archive
) -> None:
    run = Stored(archive, stored_as(smooth(120, 256), RLELossless))
    url = f"{run.url}/frames/" + ",".join(str(n) for n in range(1, 121))
    accept = 'multipart/related; type="application/octet-stream"'
    assert _drain(client, url, accept) > 120 * 256 * 256
    peak = peak_bytes(lambda: _drain(client, url, accept))
    assert peak < 24 * 256 * 256, f"{peak} bytes held for 120 frames of 64 KiB"


# --- rendered and thumbnail ------------------------------------------------------------


def _levels(run: Stored) -> dict[str, str]:
    study = f"/dicom-web/studies/{run.study}"
    return {
        "study": study,
        "series": f"{study}/series/{run.series}",
        "instance": run.url,
        "frame": f"{run.url}/frames/3",
    }


@pytest.mark.parametrize("media", ["image/jpeg", "image/png", "image/gif"])
def test_rendered_at_every_level_is_the_expected_frame(
    client: FlaskClient, runs: dict[str, Stored], archive: Archive, media: str
) -> None:
    run = runs["native"]
    decoded = run.decoded()
    for level, url in _levels(run).items():
        before = len(reads(archive))
        response = client.get(f"{url}/rendered", headers={"Accept": media})
        assert response.status_code == 200, (level, response.data[:200])
        assert response.mimetype == media
        shown = np.asarray(Image.open(BytesIO(response.data)).convert("L")).astype(int)
        expected = decoded[2 if level == "frame" else 0].astype(int)
        tolerance = 3 if media == "image/jpeg" else 0.5
        assert np.abs(shown - expected).mean() < tolerance, level
        assert len(reads(archive)) == before + 1


def test_rendered_defaults_and_refusals(client: FlaskClient, runs: dict[str, Stored]) -> None:
    run = runs["rle"]
    for accept in (None, "*/*", "image/*", "image/webp, image/jpeg;q=0.1"):
        response = client.get(f"{run.url}/rendered", headers={"Accept": accept} if accept else {})
        assert response.status_code == 200 and response.mimetype == "image/jpeg", accept
    for accept in ("video/mp4", "application/pdf", "image/jp2"):
        response = client.get(f"{run.url}/rendered", headers={"Accept": accept})
        assert response.status_code == 406 and "image/png" in response.get_data(as_text=True)


def test_rendered_viewport_and_window(client: FlaskClient, runs: dict[str, Stored]) -> None:
    run = runs["native"]
    response = client.get(f"{run.url}/rendered?viewport=32,16", headers={"Accept": "image/png"})
    assert Image.open(BytesIO(response.data)).size == (16, 16)
    # window=128,1: everything below 128 black, everything at or above it white.
    response = client.get(f"{run.url}/rendered?window=128,1", headers={"Accept": "image/png"})
    shown = np.asarray(Image.open(BytesIO(response.data)))
    assert np.array_equal(shown, np.where(run.decoded()[0] >= 128, 255, 0))
    for wrong in ("viewport=0,10", "viewport=1,2,3,4,5,6", "window=a,b", "quality=101"):
        assert client.get(f"{run.url}/rendered?{wrong}").status_code == 400, wrong


def test_thumbnails_at_every_level_are_small_images_of_the_expected_frame(
    client: FlaskClient, runs: dict[str, Stored]
) -> None:
    run = runs["native"]
    decoded = run.decoded()
    for level, url in _levels(run).items():
        for media in ("image/jpeg", "image/png"):
            response = client.get(f"{url}/thumbnail", headers={"Accept": media})
            assert response.status_code == 200 and response.mimetype == media, level
            shown = Image.open(BytesIO(response.data)).convert("L")
            assert max(shown.size) <= 192
            frame = Image.fromarray(decoded[2 if level == "frame" else 0]).resize(shown.size)
            difference = np.abs(np.asarray(shown, int) - np.asarray(frame, int)).mean()
            assert difference < 6, (level, media, difference)
    assert client.get(f"{run.url}/thumbnail", headers={"Accept": "video/mp4"}).status_code == 406


# --- a real client over HTTP -----------------------------------------------------------


@pytest.fixture
def web(config: Config) -> Iterator[tuple[Node, DICOMwebClient]]:
    with Node(replace(config, http_host="127.0.0.1"), web=True) as node:
        node.archive.index.accounts.add(
            "pacs", generate_password_hash(PASSWORD), "cardiologist", "NCC Bishkek"
        )
        url = f"http://127.0.0.1:{node.http_port}/dicom-web"
        session = create_session_from_user_pass("pacs", PASSWORD)
        yield node, DICOMwebClient(url=url, session=session)


@pytest.mark.slow
def test_dicomweb_client_asks_and_gets_what_it_asked_for(web) -> None:
    node, client = web
    grey = smooth(3, 64)
    rle = stored_as(grey, RLELossless)
    put(node.archive, rle)
    keys = str(rle.StudyInstanceUID), str(rle.SeriesInstanceUID), str(rle.SOPInstanceUID)
    # Its default is transfer-syntax=*: as stored.
    kept = client.retrieve_instance(*keys)
    assert kept.file_meta.TransferSyntaxUID == RLELossless
    media = (("application/dicom", ExplicitVRLittleEndian),)
    ds = client.retrieve_instance(*keys, media_types=media)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(ds.pixel_array, grey)
    (ds,) = client.retrieve_series(*keys[:2], media_types=(("application/dicom",),))
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian  # the standard's default
    (frame,) = client.retrieve_instance_frames(
        *keys, frame_numbers=[2], media_types=(("image/jpeg", JPEGBaseline8Bit),)
    )
    assert np.abs(np.asarray(Image.open(BytesIO(frame)), int) - grey[1]).mean() < 3
    (frame,) = client.retrieve_instance_frames(
        *keys, frame_numbers=[3], media_types=(("application/octet-stream", "*"),)
    )
    assert np.array_equal(transcode.decode_frame(rle, frame)[0], grey[2])
    png = client.retrieve_series_rendered(*keys[:2], media_types=("image/png",))
    assert np.array_equal(np.asarray(Image.open(BytesIO(png))), grey[0])
    with pytest.raises(Exception, match="406"):
        client.retrieve_instance_rendered(*keys, media_types=("image/jp2",))
    # Over the real server: a header of ten thousand ranges is refused, never read.
    url = f"{client.base_url}/studies/{keys[0]}/series/{keys[1]}/instances/{keys[2]}/frames/1"
    flood = ", ".join(['multipart/related; type="image/jpeg"; q=0.5'] * 10_000)
    refused = client._session.get(url, headers={"Accept": flood}, timeout=30)
    assert refused.status_code in (400, 431), refused.status_code
    ohif = client._session.get(url, headers={"Accept": OHIF_FRAMES}, timeout=30)
    assert ohif.status_code == 200 and ohif.headers["Content-Length"] == str(len(ohif.content))


# --- the transcoder on its own (also for the DIMSE side) -------------------------------


@pytest.mark.parametrize(
    "target",
    ["1.2.840.10008.1.2", ExplicitVRLittleEndian, "1.2.840.10008.1.2.1.99", RLELossless],
)
def test_transcode_keeps_the_instance_and_its_pixels(runs: dict[str, Stored], target: str) -> None:
    for kind in ("rle", "j2k", "jpeg-colour"):
        run = runs[kind]
        made = dcmread(BytesIO(transcode.transcode(run.blob, target, limit=LIMIT)))
        assert made.file_meta.TransferSyntaxUID == target
        assert made.SOPInstanceUID == run.sop and made.PatientID == run.dataset.PatientID
        assert np.array_equal(made.pixel_array.reshape(run.decoded().shape), run.decoded())


def test_transcode_failures_name_no_value() -> None:
    with pytest.raises(transcode.TranscodeError) as failed:
        transcode.transcode(b"\x00" * 200 + b"not DICOM", ExplicitVRLittleEndian, limit=LIMIT)
    assert "not DICOM" not in str(failed.value)
    assert not transcode.can_make(JPEGBaseline8Bit, "1.2.3.4")
    assert not transcode.can_make(RLELossless, JPEGBaseline8Bit)  # never lossy, whole instances
    assert transcode.can_make(RLELossless, JPEGBaseline8Bit, frame=True)


def test_video_goes_as_stored_to_a_client_naming_no_transfer_syntax() -> None:
    """An echo clip stored as MPEG-4 or HEVC cannot be decoded here; it is
    lossy, so a default request (no transfer-syntax) gets it as stored
    rather than a 406 for the whole study (PS3.18 §8.7.3)."""
    from pydicom.uid import HEVCMP51, MPEG4HP41, ExplicitVRLittleEndian, RLELossless

    from viewer.dicomweb.wado import _pick_syntax

    for video in (MPEG4HP41, HEVCMP51):
        assert _pick_syntax(video, [None]) == video
        assert _pick_syntax(video, [ExplicitVRLittleEndian]) is None  # asked by name: 406
    assert _pick_syntax(RLELossless, [None]) == ExplicitVRLittleEndian
