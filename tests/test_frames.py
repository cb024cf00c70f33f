"""Frames reach the browser as stored: values kept (grey depth, sign, colour),
memory bounded, each frame decoded once, bad input answered clearly.

Instances are written to the archive directly (not through ingest), so a
blob may carry what a careless sender leaves (bits above BitsStored, a short
pixel stream, broken fragments): what the viewer must survive.
"""

from __future__ import annotations

import logging
import threading
import tracemalloc
from io import BytesIO

import numpy as np
import pytest
from flask.testing import FlaskClient
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)
from werkzeug.security import generate_password_hash

from dicomnode.config import Config
from dicomnode.ops.samples import PATIENTS, UID_ROOT, XA_STORAGE, base_dataset, xa_instance
from storage.archive import Archive, DuplicatePolicy
from storage.record import record_from_dataset
from tests.test_browser import log_in as browser_log_in
from tests.test_browser import page, web_node  # noqa: F401 (fixtures)
from tests.test_viewer import as_user
from viewer import create_app, framecache, framedecode, frames, framestore

RNG = np.random.default_rng(15)


@pytest.fixture
def client(config: Config, archive: Archive) -> FlaskClient:
    archive.index.accounts.add("amina", generate_password_hash("correct horse"), "cardiologist")
    client = create_app(config, archive, b"k" * 32).test_client()
    as_user(client, "amina")
    return client


def image(pixels: np.ndarray, photometric: str = "MONOCHROME2", **attrs: object) -> Dataset:
    """An XA instance holding ``pixels`` (frames, rows, columns[, samples])
    stored as given (the dtype's bytes), with ``attrs`` over the defaults."""
    ds = base_dataset(
        PATIENTS[0],
        XA_STORAGE,
        study_uid=generate_uid(UID_ROOT),
        series_uid=generate_uid(UID_ROOT),
        modality="XA",
    )
    count, rows, columns = pixels.shape[:3]
    samples = pixels.shape[3] if pixels.ndim == 4 else 1
    bits = pixels.dtype.itemsize * 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = samples, photometric
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, count
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.FrameTime = "40"
    if samples == 3:
        ds.PlanarConfiguration = 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def put(archive: Archive, ds: Dataset, damage: tuple[bytes, bytes] = (b"", b"")) -> str:
    """Written to the archive as it is (no de-identification, no checks), the
    bytes ``damage[0]`` replaced by ``damage[1]``."""
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue().replace(*damage) if damage[0] else buffer.getvalue()
    syntax = str(ds.file_meta.TransferSyntaxUID)
    record = record_from_dataset(ds, issuer="NCC Bishkek", transfer_syntax=syntax)
    archive.store(record, data)
    return str(ds.SOPInstanceUID)


def raw(client: FlaskClient, uid: str, first: int, last: int) -> bytes:
    response = client.get(f"/api/instances/{uid}/raw/{first}-{last}")
    assert response.status_code == 200, response.data
    return response.data


def shown(client: FlaskClient, uid: str) -> tuple[dict, list[np.ndarray]]:
    """/meta, and every frame as the browser's numbers (grey: stored values
    masked and signed; colour: RGB), read the way clip.js reads them."""
    meta = client.get(f"/api/instances/{uid}/meta").json
    assert meta["delivery"] == "raw", meta
    data = raw(client, uid, 1, meta["frames"])
    size = meta["raw"]["bytes"]
    assert len(data) == size * meta["frames"]
    shape = meta["raw"], meta["rows"], meta["columns"]
    return meta, [
        framedecode.values(*shape, data[i * size : (i + 1) * size]) for i in range(meta["frames"])
    ]


# --- grey keeps its depth ------------------------------------------------------------


def grey_case(name: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """(true values, stored codes, attributes) of a grey run."""
    shape = (3, 20, 24)
    if name == "8-bit":
        truth = RNG.integers(0, 256, shape).astype(np.uint8)
        return truth, truth, {}
    if name == "16-bit":
        truth = RNG.integers(0, 65536, shape).astype(np.uint16)
        return truth, truth, {}
    if name == "signed 16-bit":
        truth = RNG.integers(-32768, 32768, shape).astype(np.int16)
        return truth, truth, {"PixelRepresentation": 1}
    garbage = (RNG.integers(0, 16, shape).astype(np.uint16) << 12).astype(np.uint16)
    if name == "12 of 16 bits, garbage above":
        truth = RNG.integers(0, 4096, shape).astype(np.uint16)
        return truth, truth | garbage, {"BitsStored": 12, "HighBit": 11}
    if name == "signed 12 of 16 bits, garbage above":
        truth = RNG.integers(-2048, 2048, shape).astype(np.int16)
        codes = (truth.view(np.uint16) & 0x0FFF) | garbage
        return truth, codes, {"BitsStored": 12, "HighBit": 11, "PixelRepresentation": 1}
    if name == "MONOCHROME1":
        truth = RNG.integers(0, 256, shape).astype(np.uint8)
        return truth, truth, {"PhotometricInterpretation": "MONOCHROME1"}
    raise AssertionError(name)


GREY = [
    "8-bit",
    "16-bit",
    "signed 16-bit",
    "12 of 16 bits, garbage above",
    "signed 12 of 16 bits, garbage above",
    "MONOCHROME1",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", GREY)
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless])
def test_grey_values_arrive_exactly_as_stored(
    client: FlaskClient, archive: Archive, name: str, syntax: str
) -> None:
    truth, codes, attrs = grey_case(name)
    ds = image(codes, **attrs)
    stored = ds.PixelData
    if syntax == RLELossless:
        ds.compress(RLELossless, generate_instance_uid=False)
    else:
        ds.file_meta.TransferSyntaxUID = syntax
    uid = put(archive, ds)
    meta, got = shown(client, uid)
    assert meta["raw"]["bits"] == codes.dtype.itemsize * 8
    assert meta["raw"]["signed"] is bool(attrs.get("PixelRepresentation"))
    assert meta["photometric"] == attrs.get("PhotometricInterpretation", "MONOCHROME2")
    for frame, expected in zip(got, truth, strict=True):
        assert frame.dtype.kind == "i" and (frame == expected).all()
    if syntax != RLELossless:  # uncompressed: the stored bytes themselves, not a copy
        assert raw(client, uid, 1, 3) == stored
        assert raw(client, uid, 2, 2) == stored[len(stored) // 3 : 2 * len(stored) // 3]


def test_deep_grey_has_its_window_and_rescale_for_the_browser(
    client: FlaskClient, archive: Archive
) -> None:
    truth = RNG.integers(0, 4096, (2, 16, 16)).astype(np.uint16)
    ds = image(truth, BitsStored=12, HighBit=11, WindowCenter=["1200", "300"])
    ds.WindowWidth, ds.RescaleSlope, ds.RescaleIntercept = ["800", "100"], "2", "-1024"
    ds.VOILUTFunction = "SIGMOID"
    meta = client.get(f"/api/instances/{put(archive, ds)}/meta").json
    assert meta["window"] == {"center": 1200, "width": 800}  # the first of several
    assert meta["rescale"] == {"slope": 2, "intercept": -1024}
    assert meta["voi_function"] == "SIGMOID"


def test_a_png_frame_is_windowed_and_monochrome1_inverted(
    client: FlaskClient, archive: Archive
) -> None:
    truth = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (2, 4, 1))  # 2 x 4 x 256
    ds = image(truth, "MONOCHROME1", BitsStored=12, HighBit=11)
    ds.WindowCenter, ds.WindowWidth = "2048", "4096"
    png = client.get(f"/api/instances/{put(archive, ds)}/frames/1")
    shown = np.asarray(Image.open(BytesIO(png.data)))
    assert png.mimetype == "image/png" and shown.shape == (4, 256)
    assert shown[0, 0] == 255 and shown[0, -1] <= 1  # low values white in MONOCHROME1
    assert (np.diff(shown[0].astype(int)) <= 0).all()


# --- colour as it was ---------------------------------------------------------------


@pytest.mark.parametrize("planar", [0, 1])
def test_rgb_of_either_planar_configuration_arrives_as_stored(
    client: FlaskClient, archive: Archive, planar: int
) -> None:
    truth = RNG.integers(0, 256, (4, 18, 22, 3)).astype(np.uint8)
    stored = truth if not planar else truth.transpose(0, 3, 1, 2)  # R plane, G plane, B plane
    ds = image(np.ascontiguousarray(stored).reshape(4, 18, 22, 3), "RGB")
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    ds.PlanarConfiguration = planar
    uid = put(archive, ds)
    meta, got = shown(client, uid)
    assert meta["raw"]["planar"] == planar and meta["grey"] is False
    assert raw(client, uid, 1, 4) == ds.PixelData
    for frame, expected in zip(got, truth, strict=True):
        assert (frame == expected).all()


def jpeg_run(count: int, mode: str, subsampling: int) -> list[bytes]:
    """JPEG baseline frames as a device writes them (YCbCr, 4:2:2 for colour)."""
    out = []
    for index in range(count):
        shape = (48, 64, 3) if mode == "RGB" else (48, 64)
        pixels = np.full(shape, 40 + 60 * index, np.uint8)
        pixels[10:30, 10:50] = 220
        buffer = BytesIO()
        Image.fromarray(pixels, mode).save(buffer, "JPEG", quality=95, subsampling=subsampling)
        out.append(buffer.getvalue())
    return out


def jpeg_instance(photometric: str) -> tuple[Dataset, list[bytes]]:
    colour = photometric.startswith("YBR")
    fragments = jpeg_run(3, "RGB" if colour else "L", 1)
    pixels = np.zeros((3, 48, 64, 3) if colour else (3, 48, 64), np.uint8)
    ds = image(pixels, photometric)
    ds.PixelData = encapsulate(fragments)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    return ds, fragments


def test_ybr_full_422_jpeg_goes_as_stored_and_decodes_to_the_same_colour(
    client: FlaskClient, archive: Archive
) -> None:
    ds, fragments = jpeg_instance("YBR_FULL_422")
    uid = put(archive, ds)
    meta = client.get(f"/api/instances/{uid}/meta").json
    assert meta["delivery"] == "jpeg"  # the browser's decoder converts YBR once
    for number, fragment in enumerate(fragments, 1):
        response = client.get(f"/api/instances/{uid}/frames/{number}")
        padded = fragment + b"\0" * (len(fragment) % 2)  # fragments are of even length
        assert response.mimetype == "image/jpeg" and response.data == padded
    # Decoded on the server (raw), the colour is what the browser shows.
    decoded = framedecode.values(meta["raw"], 48, 64, raw(client, uid, 2, 2))
    browser = np.asarray(Image.open(BytesIO(fragments[1])).convert("RGB"))
    assert np.abs(decoded.astype(int) - browser).max() <= 2


def test_monochrome1_jpeg_is_decoded_so_the_browser_can_invert_it(
    client: FlaskClient, archive: Archive
) -> None:
    ds, fragments = jpeg_instance("MONOCHROME1")
    meta, got = shown(client, put(archive, ds))
    assert meta["delivery"] == "raw" and meta["photometric"] == "MONOCHROME1"
    stored = np.asarray(Image.open(BytesIO(fragments[0])))
    assert np.abs(got[0] - stored).max() <= 1  # stored values: the browser inverts


def test_palette_colour_is_applied_with_its_16_bit_entries(
    client: FlaskClient, archive: Archive
) -> None:
    indices = RNG.integers(0, 256, (2, 10, 12)).astype(np.uint8)
    ds = image(indices, "PALETTE COLOR")
    ramp = np.arange(256, dtype=np.uint16)
    for colour, table in (("Red", ramp), ("Green", 255 - ramp), ("Blue", ramp // 2)):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", (table * 257).astype("<u2").tobytes())
    meta, got = shown(client, put(archive, ds))
    assert meta["raw"]["samples"] == 3 and meta["grey"] is False
    expected = np.stack([indices, 255 - indices, indices // 2], axis=-1)
    for frame, want in zip(got, expected, strict=True):
        assert (frame == want).all()


def test_angio_run_in_rle_arrives_value_for_value(client: FlaskClient, archive: Archive) -> None:
    ds = xa_instance(PATIENTS[1], frames=5, rows=40, cols=56)  # RLE Lossless
    truth = ds.pixel_array
    uid = put(archive, ds)
    meta, got = shown(client, uid)
    assert meta["frames"] == 5 and meta["fps"] == pytest.approx(15, abs=0.1)
    for frame, expected in zip(got, truth, strict=True):
        assert (frame == expected).all()
    with client.application.app_context():  # decoding never wrote to the shared header
        header = framestore.layout(uid).header
    assert header.NumberOfFrames == 5 and "PixelData" not in header


# --- frame numbers, ranges, HTTP ----------------------------------------------------


def test_a_single_frame_and_ranges_outside_it(client: FlaskClient, archive: Archive) -> None:
    truth = RNG.integers(0, 256, (1, 30, 40)).astype(np.uint8)
    ds = image(truth)
    del ds.NumberOfFrames  # a single-frame IOD has none
    uid = put(archive, ds)
    meta, got = shown(client, uid)
    assert meta["frames"] == 1 and (got[0] == truth[0]).all()
    for bad in ("1-2", "2-2", "1-999999999999"):
        answer = client.get(f"/api/instances/{uid}/raw/{bad}")
        assert answer.status_code == 404, bad
        assert b"frames are numbered 1 to 1" in answer.data
    assert client.get(f"/api/instances/{uid}/frames/2").status_code == 404
    # Reversed, zero, negative, not digits or not ASCII digits: asked wrongly.
    for bad in ("0-1", "0-0", "2-1", "-1-1", "1-99999999999999999999", "1-2-3", "1-x", "+1-1"):
        answer = client.get(f"/api/instances/{uid}/raw/{bad}")
        assert answer.status_code == 400 and b"raw/A-B" in answer.data, bad
    for bad in ("\uff11-\uff11", "1-\u0661", "\u0967-1"):  # fullwidth, Arabic-Indic, Devanagari
        assert client.get(f"/api/instances/{uid}/raw/{bad}").status_code == 400, bad
    for bad in ("0", "\u0661", "\uff11", "1.0", " 1"):
        answer = client.get(f"/api/instances/{uid}/frames/{bad}")
        assert answer.status_code == 400 and b"frame" in answer.data, bad


def test_raw_frames_are_immutable_with_their_type_length_and_etag(
    client: FlaskClient, archive: Archive
) -> None:
    truth = RNG.integers(0, 65536, (3, 8, 8)).astype(np.uint16)
    uid = put(archive, image(truth))
    version = client.get(f"/api/instances/{uid}/meta").json["version"]
    response = client.get(f"/api/instances/{uid}/raw/2-3?v={version}")
    assert response.mimetype == "application/octet-stream"
    assert response.headers["Content-Length"] == str(2 * 8 * 8 * 2)
    assert "immutable" in response.headers["Cache-Control"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    again = client.get(
        f"/api/instances/{uid}/raw/2-3?v={version}",
        headers={"If-None-Match": response.headers["ETag"]},
    )
    assert again.status_code == 304
    other = client.get(f"/api/instances/{uid}/raw/1-3").headers["ETag"]
    assert other != response.headers["ETag"]
    # Without the version (a link kept elsewhere): asked again each time.
    plain = client.get(f"/api/instances/{uid}/raw/2-3")
    assert plain.headers["Cache-Control"] == "private, no-cache"
    assert plain.headers["ETag"] == response.headers["ETag"]


@pytest.mark.slow
def test_a_replaced_duplicate_is_never_served_from_the_old_cache(
    client: FlaskClient, archive: Archive
) -> None:
    archive.duplicates = DuplicatePolicy.REPLACE
    ds = image(np.full((2, 8, 8), 10, np.uint8))
    uid = put(archive, ds)
    paths = ["raw/1-1", "raw/1-2", "frames/1", "thumbnail"]
    old_meta = client.get(f"/api/instances/{uid}/meta")
    assert old_meta.headers["Cache-Control"] == "no-store"  # the versions are always current
    old = old_meta.json["version"]
    before = {p: client.get(f"/api/instances/{uid}/{p}?v={old}") for p in paths}
    assert all(r.status_code == 200 for r in before.values())
    ds.PixelData = np.full((2, 8, 8), 200, np.uint8).tobytes()  # the same SOP instance re-sent
    put(archive, ds)
    new = client.get(f"/api/instances/{uid}/meta").json["version"]
    assert new != old
    for path, response in before.items():
        etag = response.headers["ETag"]
        stale = client.get(f"/api/instances/{uid}/{path}", headers={"If-None-Match": etag})
        assert stale.status_code == 200 and stale.headers["ETag"] != etag, path
        assert stale.data != response.data and stale.headers["Cache-Control"] == "private, no-cache"
        # An open page asking for what it was told: refused, never mixed in.
        mixed = client.get(f"/api/instances/{uid}/{path}?v={old}", headers={"If-None-Match": etag})
        assert mixed.status_code == 409 and b"replaced" in mixed.data, path
        fresh = client.get(f"/api/instances/{uid}/{path}?v={new}")
        assert fresh.data == stale.data and "immutable" in fresh.headers["Cache-Control"]
    assert set(raw(client, uid, 1, 2)) == {200}


@pytest.mark.slow
def test_a_rewritten_file_of_the_same_digest_gets_a_new_version(
    client: FlaskClient, archive: Archive
) -> None:
    """The blob rewritten without the index knowing (a failed re-send, a
    restore): the file's identity changes the version too."""
    ds = image(np.full((1, 4, 4), 10, np.uint8))
    uid = put(archive, ds)
    old = client.get(f"/api/instances/{uid}/meta").json["version"]
    ds.PixelData = np.full((1, 4, 4), 99, np.uint8).tobytes()
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    archive.blobs.path(archive.index.instance_blob(uid)).write_bytes(buffer.getvalue())
    assert client.get(f"/api/instances/{uid}/meta").json["version"] != old
    assert client.get(f"/api/instances/{uid}/raw/1-1?v={old}").status_code == 409
    assert set(raw(client, uid, 1, 1)) == {99}


def test_no_one_but_a_user_gets_frames(config: Config, archive: Archive) -> None:
    uid = put(archive, image(np.zeros((1, 4, 4), np.uint8)))
    anonymous = create_app(config, archive, b"k" * 32).test_client()
    assert anonymous.get(f"/api/instances/{uid}/raw/1-1").status_code == 401


# --- bad input: a clear 4xx, never a 500 --------------------------------------------


@pytest.mark.slow
def test_a_short_pixel_stream_shows_the_frames_it_holds(
    client: FlaskClient, archive: Archive
) -> None:
    truth = RNG.integers(0, 256, (10, 16, 16)).astype(np.uint8)
    ds = image(truth)
    ds.PixelData = ds.PixelData[: 16 * 16 * 3 + 100]  # 3 frames and a bit of a fourth
    uid = put(archive, ds)
    meta, got = shown(client, uid)
    assert meta["frames"] == 3 and meta["frame_time_ms"] == 40
    assert meta["frame_times_ms"] is None  # one time for every frame, said once
    assert all((g == t).all() for g, t in zip(got, truth[:3], strict=False))
    assert client.get(f"/api/instances/{uid}/raw/4-4").status_code == 404


@pytest.mark.parametrize(
    ("damage", "status", "message"),
    [
        ("rows", 422, b"shorter than one frame"),
        ("huge", 413, b"frames larger than 64 MB are not shown"),
        ("odd", 422, b"the stored instance cannot be read (BytesLengthException)"),
        ("bits", 415, b"cannot be shown"),
        ("fragment", 422, b"frame 2 cannot be decoded"),
        ("no pixels", 404, b"no image"),
        ("sequence", 422, b"not a valid fragment sequence"),
    ],
)
def test_damaged_instances_are_refused_with_the_reason(
    client: FlaskClient, archive: Archive, damage: str, status: int, message: bytes
) -> None:
    ds = xa_instance(PATIENTS[2], frames=3, rows=16, cols=16, transfer_syntax=RLELossless)
    bad = (b"", b"")
    if damage == "rows":
        ds = image(np.zeros((2, 16, 16), np.uint8))
        ds.Rows = 60000  # a header that lies: nothing is allocated for it
    elif damage == "huge":
        ds.Rows = ds.Columns = 30000  # compressed: nothing says it is not that large
    elif damage == "odd":  # Samples per Pixel (US) three bytes long
        bad = (b"\x28\x00\x02\x00US\x02\x00\x01\x00", b"\x28\x00\x02\x00US\x03\x00\x01\x00\x00")
    elif damage == "bits":
        ds = image(np.zeros((2, 16, 16), np.uint8))
        ds.BitsAllocated = 12
    elif damage == "fragment":
        fragments = list(generate_frames(ds.PixelData, number_of_frames=3))
        fragments[1] = b"\x01\x00\x00\x00" + b"\x40\x00\x00\x00" + b"\xff" * 60
        ds.PixelData = encapsulate(fragments)
    elif damage == "no pixels":
        del ds.PixelData
    elif damage == "sequence":
        data = encapsulate(list(generate_frames(ds.PixelData, number_of_frames=3)))
        at = 8 + int.from_bytes(data[4:8], "little")  # the first fragment's item tag
        ds.PixelData = data[:at] + b"\x10\x00\x10\x00" + data[at + 4 :]
    uid = put(archive, ds, bad)
    meta = client.get(f"/api/instances/{uid}/meta")
    answer = meta if meta.status_code != 200 else client.get(f"/api/instances/{uid}/raw/1-3")
    assert answer.status_code == status, answer.data
    assert message in answer.data
    assert uid.encode() not in answer.data and PATIENTS[2].patient_id.encode() not in answer.data


def jpeg_items(*items: bytes) -> bytes:
    """Pixel Data's value made of these items exactly (no Basic Offset Table
    unless the first is one), each padded to even length."""
    out = b""
    for item in items:
        item += b"\0" * (len(item) % 2)
        out += b"\xfe\xff\x00\xe0" + len(item).to_bytes(4, "little") + item
    return out  # the writer ends the sequence


@pytest.mark.parametrize("frames", [1, 2])
def test_jpeg_items_that_are_not_jpeg_are_refused_not_sent_as_jpeg(
    client: FlaskClient, archive: Archive, frames: int
) -> None:
    good = jpeg_run(frames, "L", 1)
    ds = image(np.zeros((frames, 48, 64), np.uint8), "MONOCHROME2")
    junk = b"\x00\x01junk\xff\xd9"[: 6 if frames == 1 else 8]  # 6 bytes: not taken as a table
    ds.PixelData = jpeg_items(junk, *good) if frames == 1 else jpeg_items(b"", junk[:6], *good)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    uid = put(archive, ds)
    assert client.get(f"/api/instances/{uid}/meta").json["delivery"] == "jpeg"
    for path in ("thumbnail", "frames/1"):
        answer = client.get(f"/api/instances/{uid}/{path}")
        assert answer.status_code == 422, (path, answer.status_code)
        assert b"frame 1 is not a JPEG image" in answer.data and answer.mimetype != "image/jpeg"


def test_a_jpeg_that_ends_early_is_a_422(client: FlaskClient, archive: Archive) -> None:
    (good,) = jpeg_run(1, "L", 1)
    ds = image(np.zeros((1, 48, 64), np.uint8), "MONOCHROME2")
    ds.PixelData = jpeg_items(b"", good[:40])  # the header, cut off
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    uid = put(archive, ds)
    answer = client.get(f"/api/instances/{uid}/thumbnail")
    assert answer.status_code == 422 and b"frame 1 cannot be decoded" in answer.data


@pytest.mark.parametrize("path", ["raw/1-1", "frames/1", "thumbnail"])
def test_values_in_a_damaged_header_never_reach_the_log(
    client: FlaskClient, archive: Archive, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    ds = xa_instance(PATIENTS[2], frames=2, rows=16, cols=16, transfer_syntax=RLELossless)
    ds.PhotometricInterpretation = "ZZLEAKVAL"  # pydicom's error quotes it
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ZZLEAKTWO"]
    uid = put(archive, ds)
    for colour in (False, True):  # as PNG (one sample, unknown model), and decoded for /raw
        if colour:
            ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
            ds.SOPInstanceUID = generate_uid(UID_ROOT)
            uid = put(archive, ds)
        with caplog.at_level(logging.DEBUG):
            answer = client.get(f"/api/instances/{uid}/{path}")
        if answer.status_code == 415:  # PNG-only: no raw
            continue
        assert answer.status_code == 422, (colour, answer.status_code, answer.data)
        assert b"ZZLEAK" not in answer.data
    assert caplog.records and "ZZLEAK" not in caplog.text
    assert all(uid not in r.getMessage() for r in caplog.records)


def test_a_million_tiny_frames_are_refused_at_once(client: FlaskClient, archive: Archive) -> None:
    ds = image(np.zeros((1, 1, 1), np.uint8))
    ds.NumberOfFrames, ds.PixelData = 1_000_000, bytes(1_000_000)
    uid = put(archive, ds)
    for path in ("meta", "raw/1-1", "raw/1-1000000", "frames/1", "thumbnail"):
        answer = client.get(f"/api/instances/{uid}/{path}")
        assert answer.status_code == 413, path
        assert b"this image has 1000000 frames; the viewer shows at most 20000" in answer.data
    jpeg = image(np.zeros((1, 8, 8), np.uint8))
    jpeg.NumberOfFrames = 10**9  # compressed: refused before any fragment is read
    jpeg.PixelData = jpeg_items(b"", *jpeg_run(2, "L", 1))
    jpeg["PixelData"].VR = "OB"
    jpeg.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    answer = client.get(f"/api/instances/{put(archive, jpeg)}/meta")
    assert answer.status_code == 413 and b"at most 20000" in answer.data


def test_tiny_frames_come_a_few_hundred_at_a_time_and_meta_stays_small(
    client: FlaskClient, archive: Archive
) -> None:
    ds = image(np.zeros((20_000, 1, 1), np.uint8))  # the most frames shown
    uid = put(archive, ds)
    response = client.get(f"/api/instances/{uid}/meta")
    meta = response.json
    assert meta["frames"] == 20_000 and meta["per_request"] == frames.REQUEST_FRAMES == 256
    assert len(response.data) < 2000 and meta["frame_times_ms"] is None
    assert meta["frame_time_ms"] == 40 and meta["fps"] == 25
    assert client.get(f"/api/instances/{uid}/raw/1-257").status_code == 400
    assert len(raw(client, uid, 19_745, 20_000)) == 256
    # Frames of their own times: listed, one per frame (bounded by the frames).
    ds = image(np.zeros((3000, 1, 1), np.uint8))
    ds.FrameTimeVector = [0] + [40 if i % 2 else 20 for i in range(1, 3000)]
    varied = client.get(f"/api/instances/{put(archive, ds)}/meta").json
    assert len(varied["frame_times_ms"]) == 3000 and varied["frame_times_ms"][:2] == [40, 20]
    assert varied["frame_time_ms"] == pytest.approx(30, abs=0.01)


def test_more_than_16_bits_go_as_png(client: FlaskClient, archive: Archive) -> None:
    truth = RNG.integers(0, 1 << 20, (2, 8, 8)).astype(np.uint32)
    uid = put(archive, image(truth, BitsStored=20, HighBit=19))
    assert client.get(f"/api/instances/{uid}/meta").json["delivery"] == "image"
    assert client.get(f"/api/instances/{uid}/raw/1-1").status_code == 415
    png = client.get(f"/api/instances/{uid}/frames/2")
    assert png.mimetype == "image/png" and Image.open(BytesIO(png.data)).size == (8, 8)


def test_unknown_instances_are_not_found(client: FlaskClient) -> None:
    for path in ("meta", "raw/1-1", "frames/1", "thumbnail"):
        answer = client.get(f"/api/instances/1.2.3.4/{path}")
        assert answer.status_code == 404 and b"no such instance" in answer.data


# --- bounded work and memory --------------------------------------------------------


@pytest.mark.slow
def test_a_2000_frame_run_is_served_in_bounded_requests_and_memory(
    client: FlaskClient, archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    truth = np.arange(2000, dtype=np.uint16)[:, None, None] * 31 + np.zeros((64, 64), np.uint16)
    uid = put(archive, image(truth))
    monkeypatch.setattr(frames, "REQUEST_BYTES", 1 << 20)  # 128 frames of 8 KiB
    meta = client.get(f"/api/instances/{uid}/meta").json
    assert meta["frames"] == 2000 and meta["per_request"] == 128
    refused = client.get(f"/api/instances/{uid}/raw/1-129")
    assert refused.status_code == 400 and b"at most 128 frames" in refused.data
    tracemalloc.start()
    try:
        response = client.get(f"/api/instances/{uid}/raw/1001-1128", buffered=False)
        sent = sum(len(chunk) for chunk in response.response)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sent == 128 * 64 * 64 * 2
    assert peak < sent / 4  # streamed a frame at a time, never the range (or the 16 MB file)
    last = np.frombuffer(raw(client, uid, 2000, 2000), "<u2")
    assert (last == 1999 * 31).all()


@pytest.mark.slow
def test_decoded_frames_of_a_2000_frame_run_stay_within_the_cache_bound(
    client: FlaskClient, archive: Archive
) -> None:
    ds = xa_instance(PATIENTS[3], frames=2000, rows=16, cols=16, transfer_syntax=RLELossless)
    truth = ds.pixel_array
    uid = put(archive, ds)
    cache = framecache.FrameCache(max_bytes=64 * 1024)
    client.application.extensions["frame_cache"] = cache
    meta = client.get(f"/api/instances/{uid}/meta").json
    step = meta["per_request"]
    for first in range(1, 2001, step):
        last = min(first + step - 1, 2000)
        got = np.frombuffer(raw(client, uid, first, last), np.uint8).reshape(-1, 16, 16)
        assert (got == truth[first - 1 : last]).all()
        assert cache.size <= 64 * 1024
    assert cache.builds == 2000  # each frame decoded once


@pytest.mark.slow
def test_concurrent_first_requests_decode_each_frame_once(
    client: FlaskClient, archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = xa_instance(PATIENTS[4], frames=6, rows=64, cols=64, transfer_syntax=RLELossless)
    truth = ds.pixel_array.tobytes()
    uid = put(archive, ds)
    app = client.application
    others = 5
    waiting = threading.Semaphore(0)

    class Watched(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waiting.release()  # a request is waiting for a build in progress
            return super().wait(timeout)

    class Pending(framecache._Pending):
        def __init__(self) -> None:
            super().__init__()
            self.done = Watched()

    decoded: list[int] = []
    original = framedecode.decode

    def slow_first_decode(found: framestore.Layout, index: int) -> object:
        if not decoded:  # hold the first build until every other request waits on it
            for _ in range(others):
                assert waiting.acquire(timeout=60)
        decoded.append(index)
        return original(found, index)

    assert client.get(f"/api/instances/{uid}/meta").status_code == 200  # layout known
    monkeypatch.setattr(framecache, "_Pending", Pending)
    monkeypatch.setattr(framedecode, "decode", slow_first_decode)
    answers: list[bytes] = []

    def fetch() -> None:
        browser = app.test_client()
        as_user(browser, "amina")
        answers.append(browser.get(f"/api/instances/{uid}/raw/1-6").data)

    threads = [threading.Thread(target=fetch) for _ in range(others + 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert answers == [truth] * (others + 1)
    assert sorted(decoded) == list(range(6))  # six frames, six decodes, six requests
    assert app.extensions["frame_layouts"].builds == 1


# --- in the browser -----------------------------------------------------------------

# Every clip Clip.open returns, kept for the test (the viewer holds its own).
CAPTURE_CLIPS = """
window.openedClips = [];
Object.defineProperty(window, "Clip", {
  configurable: true,
  get() { return this.__clip; },
  set(value) {
    const open = value.open.bind(value);
    value.open = async (...args) => {
      const clip = await open(...args);
      openedClips.push(clip);
      return clip;
    };
    this.__clip = value;
  },
});
"""

READ_CLIP = """async ([uid, display]) => {
  const clip = await Clip.open([uid]);
  await clip.loaded;
  const values = [], shown = [];
  for (let i = 0; i < clip.count; i++) {
    values.push(Array.from(clip.values(i)));
    const canvas = clip.source(i, display || undefined);
    const rgba = canvas.getContext("2d").getImageData(0, 0, clip.width, clip.height).data;
    shown.push(Array.from(rgba));
  }
  clip.close();
  return { values, shown, windowing: clip.windowing, defaultWindow: clip.defaultWindow };
}"""


def linear(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 (VOI LINEAR) to 0-255, the reference for clip.js."""
    y = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255
    y = np.where(x <= center - 0.5 - (width - 1) / 2, 0, y)
    y = np.where(x > center - 0.5 + (width - 1) / 2, 255, y)
    return np.floor(np.clip(y, 0, 255) + 0.5)


@pytest.mark.slow
@pytest.mark.peers
def test_the_browser_reads_and_windows_every_layout_value_for_value(page, web_node) -> None:  # noqa: F811
    cases: dict[str, tuple[np.ndarray, dict]] = {}
    for name in GREY:
        truth, codes, attrs = grey_case(name)
        ds = image(codes, **attrs)
        if name.startswith("signed 12"):
            ds.RescaleSlope, ds.RescaleIntercept = "2", "100"
            ds.compress(RLELossless, generate_instance_uid=False)  # decoded on the server
        cases[put(web_node.archive, ds)] = (truth, attrs)
    for planar in (0, 1):
        truth = RNG.integers(0, 256, (2, 6, 10, 3)).astype(np.uint8)
        ds = image(truth, "RGB", PlanarConfiguration=planar)
        stored = truth.transpose(0, 3, 1, 2) if planar else truth
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        cases[put(web_node.archive, ds)] = (truth, {"planar": planar})
    browser_log_in(page)
    page.add_script_tag(url="/static/clip.js")
    for uid, (truth, attrs) in cases.items():
        count = truth.shape[0]
        colour = truth.ndim == 4
        display = None
        if attrs.get("BitsStored") == 12:
            display = {"center": 300, "width": 2000, "invert": True}
        got = page.evaluate(READ_CLIP, [uid, display])
        values = np.array(got["values"]).reshape(truth.shape)
        assert (values == truth).all(), attrs
        shown = np.array(got["shown"], dtype=np.int64).reshape(count, *truth.shape[1:3], 4)
        assert (shown[..., 3] == 255).all()
        if colour:
            assert not got["windowing"] and (shown[..., :3] == truth).all()
            continue
        assert got["windowing"] and (shown[..., 0] == shown[..., 2]).all()
        if display is None:  # the default window
            window = got["defaultWindow"]
            if truth.dtype == np.uint8:  # 8 bits: the stored values, as before
                assert window == {"center": 128, "width": 256}
            expected = linear(truth * 1.0, window["center"], window["width"])
        else:
            scaled = truth * 2.0 + 100 if attrs.get("PixelRepresentation") else truth * 1.0
            expected = 255 - linear(scaled, display["center"], display["width"])
        if attrs.get("PhotometricInterpretation") == "MONOCHROME1":
            expected = 255 - expected
        assert np.abs(shown[..., 0] - expected).max() <= 1, attrs


@pytest.mark.slow
@pytest.mark.peers
def test_the_800x600_clip_arrives_whole_and_plays_without_the_network(page, web_node) -> None:  # noqa: F811
    from pydicom import dcmread

    from dicomnode.ops.samples import sample_file

    ds = dcmread(sample_file("ultrasounds/ultrasound-multiframe.dcm"))
    assert (ds.NumberOfFrames, ds.Rows, ds.Columns, ds.PlanarConfiguration) == (30, 600, 800, 1)
    put(web_node.archive, ds)
    page.add_init_script(CAPTURE_CLIPS)
    browser_log_in(page)
    page.goto(page.base + f"/studies/{ds.StudyInstanceUID}")
    page.wait_for_function(
        """() => {
          const clip = window.openedClips.find((c) => c.count === 30 && c.width === 800);
          if (!clip) return false;
          for (let i = 0; i < clip.count; i++) if (!clip.ready(i)) return false;
          return true;
        }"""
    )
    page.wait_for_function("() => window.viewerState()[0].playing")
    page.route("**/api/**", lambda route: route.abort())  # nothing more may be needed
    page.evaluate(
        """() => {
          window.framesShown = new Set();
          const watch = () => {
            framesShown.add(window.viewerState()[0].frame);
            requestAnimationFrame(watch);
          };
          requestAnimationFrame(watch);
        }"""
    )
    page.wait_for_function("() => window.framesShown.size === 30")  # a whole loop, offline
    colour = page.evaluate(
        """() => {
          const clip = window.openedClips.find((c) => c.count === 30);
          const rgba = clip.source(7).getContext("2d").getImageData(0, 0, 800, 600).data;
          return Array.from(rgba.subarray(0, 4 * 800 * 2));
        }"""
    )
    expected = ds.pixel_array[7][:2].reshape(-1, 3)  # planar configuration 1, as pydicom reads it
    assert (np.array(colour).reshape(-1, 4)[:, :3] == expected).all()


@pytest.mark.slow
@pytest.mark.peers
def test_a_clip_larger_than_the_browser_budget_streams_through_it(page, web_node) -> None:  # noqa: F811
    truth = np.arange(60, dtype=np.uint16)[:, None, None] * 1000 + np.zeros((32, 32), np.uint16)
    uid = put(web_node.archive, image(truth))  # 60 frames of 2 KiB
    browser_log_in(page)
    page.add_script_tag(url="/static/clip.js")
    most, firsts = page.evaluate(
        """async (uid) => {
          Clip.budget = 10 * 2048;  // ten frames
          const clip = await Clip.open([uid]);
          let most = 0;
          const firsts = [];
          for (let i = 0; i < clip.count; i++) {  // play it through, frame by frame
            while (!clip.ready(i)) await new Promise((r) => requestAnimationFrame(r));
            clip.source(i);
            firsts.push(clip.values(i)[0]);
            let held = 0;
            for (let j = 0; j < clip.count; j++) held += clip.ready(j) ? 1 : 0;
            most = Math.max(most, held);
          }
          await clip.loaded;  // every frame came once
          clip.close();
          return [most, firsts];
        }""",
        uid,
    )
    assert most <= 10
    assert firsts == [i * 1000 for i in range(60)]


@pytest.mark.slow
def test_a_replaced_file_is_read_again_not_served_from_old_offsets(
    client: FlaskClient, archive: Archive
) -> None:
    first = RNG.integers(0, 256, (3, 12, 12)).astype(np.uint8)
    ds = image(first)
    uid = put(archive, ds)
    assert client.get(f"/api/instances/{uid}/meta").json["frames"] == 3
    second = RNG.integers(0, 256, (5, 12, 12)).astype(np.uint8)
    ds.NumberOfFrames, ds.PixelData = 5, second.tobytes()
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)  # a duplicate kept under REPLACE
    archive.blobs.path(archive.index.instance_blob(uid)).write_bytes(buffer.getvalue())
    meta, got = shown(client, uid)
    assert meta["frames"] == 5 and all((g == s).all() for g, s in zip(got, second, strict=True))


@pytest.mark.slow
@pytest.mark.peers
def test_the_browser_shows_a_replaced_instance_not_its_cached_pixels(page, web_node) -> None:  # noqa: F811
    """Frames cached for good by the browser: a re-sent instance (duplicates
    = "replace") must still be drawn with its new pixels, in a grey raw clip,
    a JPEG clip and the thumbnail <img> alike."""
    web_node.archive.duplicates = DuplicatePolicy.REPLACE
    grey = image(np.full((2, 8, 8), 10, np.uint8))
    (first,) = jpeg_run(1, "L", 1)
    jpeg = image(np.zeros((1, 48, 64), np.uint8))
    jpeg.PixelData, jpeg.file_meta.TransferSyntaxUID = encapsulate([first]), JPEGBaseline8Bit
    jpeg["PixelData"].VR = "OB"
    uids = [put(web_node.archive, grey), put(web_node.archive, jpeg)]
    browser_log_in(page)
    read = """async (uid) => {
      const clip = await Clip.open([uid]);
      await clip.loaded;
      const canvas = document.createElement("canvas");
      Object.assign(canvas, { width: clip.width, height: clip.height });
      const ctx = canvas.getContext("2d");
      ctx.drawImage(clip.source(clip.count - 1), 0, 0);
      const thumb = new Image();
      thumb.src = `/api/instances/${uid}/thumbnail`;
      await thumb.decode();
      const small = document.createElement("canvas");
      small.getContext("2d").drawImage(thumb, 0, 0);
      clip.close();
      const pixel = (c) => c.getContext("2d").getImageData(0, 0, 1, 1).data[0];
      return [pixel(canvas), pixel(small)];
    }"""

    def read_all() -> list[list[int]]:
        page.goto(page.base + "/")  # a new page: what it holds is the HTTP cache's
        page.add_script_tag(url="/static/clip.js")
        return [page.evaluate(read, uid) for uid in uids]

    before = read_all()
    grey.PixelData = np.full((2, 8, 8), 200, np.uint8).tobytes()
    jpeg.PixelData = encapsulate(jpeg_run(4, "L", 1)[3:])  # 220 where 40 was
    jpeg["PixelData"].VR = "OB"
    put(web_node.archive, grey)
    put(web_node.archive, jpeg)
    after = read_all()
    assert before[0] == [10, 10] and after[0] == [200, 200]
    assert abs(before[1][0] - 40) <= 3 and abs(after[1][0] - 220) <= 3
    assert abs(before[1][1] - 40) <= 3 and abs(after[1][1] - 220) <= 3


def test_an_identical_replacement_is_still_shown(client: FlaskClient, archive: Archive) -> None:
    """The most common duplicate, replaced under `duplicates = "replace"`:
    same bytes, a new blob key, the old file gone; every view still answers."""
    archive.duplicates = DuplicatePolicy.REPLACE
    ds = image(np.full((2, 8, 8), 10, np.uint8))
    uid = put(archive, ds)
    assert client.get(f"/api/instances/{uid}/frames/1").status_code == 200
    before = archive.index.instance_blob(uid)
    put(archive, ds)
    assert archive.index.instance_blob(uid) != before
    for view in ("meta", "frames/1", "raw/1-1", "thumbnail"):
        assert client.get(f"/api/instances/{uid}/{view}").status_code == 200, view
