"""WADO-RS metadata at every level and bulk data under /dicom-web, as a
DICOMweb client at its defaults uses them: HTTP Basic only (no browser
session), every BulkDataURI the metadata gives followed and resolved."""

from __future__ import annotations

import base64
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from io import BytesIO
from typing import Any

import numpy as np
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, generate_uid
from werkzeug.security import generate_password_hash

from dicomnode.ingest.pipeline import Outcome
from dicomnode.node import Node
from dicomnode.ops.samples import PATIENTS, UID_ROOT, xa_instance
from storage.keys import Level
from storage.query import Query
from tests.conftest import incoming
from viewer import create_app

PASSWORD = "correct horse battery"
PATIENT = PATIENTS[0]
OVERLAY = bytes(range(256)) * 16  # 4 kB: bulk data in metadata
WAVEFORM = np.arange(6000, dtype="<u2").tobytes()  # 12 kB, inside a sequence
ICC = b"\x00\x00\x0c\x48" + bytes(5000)


@dataclass
class Stored:
    """What the node stored of the synthetic study (de-identified UIDs)."""

    study: str
    native_series: str
    native: str  # 5-frame native XA with overlay, waveform sequence, ICC profile
    rle_series: str
    rle: str  # 4-frame RLE XA


@dataclass
class Web:
    node: Node
    url: str
    client: DICOMwebClient
    session: requests.Session
    stored: Stored


def _rich(study: str) -> Dataset:
    """A native multi-frame with large binary values at the top level and
    nested in a sequence (as a cath lab's haemodynamic waveform would be)."""
    ds = xa_instance(
        PATIENT, frames=5, rows=32, cols=32, transfer_syntax=ExplicitVRLittleEndian, study_uid=study
    )
    ds.add_new(0x60000010, "US", 32)
    ds.add_new(0x60000011, "US", 128)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", OVERLAY)
    ds.add_new(0x00282000, "OB", ICC)
    wave = Dataset()
    wave.WaveformOriginality = "ORIGINAL"
    wave.NumberOfWaveformChannels = 1
    wave.NumberOfWaveformSamples = 6000
    wave.SamplingFrequency = 1000
    wave.WaveformBitsAllocated = 16
    wave.WaveformSampleInterpretation = "SS"
    wave.WaveformData = WAVEFORM
    ds.WaveformSequence = Sequence([wave])
    return ds


def _only(node: Node, **keys: str) -> dict[str, Any]:
    rows = list(
        node.archive.index.find(
            Query(
                Level.IMAGE,
                {"StudyInstanceUID": "", "SeriesInstanceUID": "", "SOPInstanceUID": "", **keys},
            )
        )
    )
    assert len(rows) == 1, rows
    return rows[0]


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    from tests.conftest import make_config

    config = replace(make_config(tmp_path_factory.mktemp("meta")), http_host="127.0.0.1")
    with Node(config, web=True) as node:
        accounts = node.archive.index.accounts
        hashed = generate_password_hash(PASSWORD)
        accounts.add("pacs", hashed, "cardiologist", "NCC Bishkek")
        accounts.add("dushanbe", hashed, "cardiologist", "RCC Dushanbe")
        study = generate_uid(UID_ROOT)
        rich = _rich(study)
        rle = xa_instance(
            PATIENT, frames=4, rows=32, cols=32, transfer_syntax=RLELossless, study_uid=study
        )
        rle.InstanceNumber = 2
        uids = {}
        for name, ds in (("native", rich), ("rle", rle)):
            result = node.ingestor.ingest(incoming(ds))
            assert result.outcome is Outcome.STORED, result
            uids[name] = ds.SOPInstanceUID
        rows = list(
            node.archive.index.find(
                Query(
                    Level.IMAGE,
                    {
                        "StudyInstanceUID": "",
                        "SeriesInstanceUID": "",
                        "SOPInstanceUID": "",
                        "NumberOfFrames": "",
                    },
                )
            )
        )
        assert len(rows) == 2
        by_frames = {int(r["NumberOfFrames"] or 1): r for r in rows}
        stored = Stored(
            by_frames[5]["StudyInstanceUID"],
            by_frames[5]["SeriesInstanceUID"],
            by_frames[5]["SOPInstanceUID"],
            by_frames[4]["SeriesInstanceUID"],
            by_frames[4]["SOPInstanceUID"],
        )
        url = f"http://127.0.0.1:{node.http_port}/dicom-web"
        session = create_session_from_user_pass("pacs", PASSWORD)
        yield Web(node, url, DICOMwebClient(url=url, session=session), session, stored)


def _bulk_uris(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(where, BulkDataURI) of every bulk value in DICOM JSON, at any depth."""
    if isinstance(value, list):
        for n, item in enumerate(value):
            yield from _bulk_uris(item, f"{path}[{n}]")
    elif isinstance(value, dict):
        if "BulkDataURI" in value:
            yield path, value["BulkDataURI"]
        for key, inner in value.items():
            if key in ("Value",) or (len(key) == 8 and isinstance(inner, dict)):
                yield from _bulk_uris(inner, f"{path}/{key}")


def _stored(web: Web, uid: str) -> Dataset:
    return dcmread(BytesIO(web.node.archive.read(uid)))


def _basic(user: str = "pacs") -> dict[str, str]:
    token = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# ---------------------------------------------------------------- metadata


@pytest.mark.slow
def test_series_metadata_as_ohif_asks_for_it(web: Web) -> None:
    """OHIF v3's default (lazy) loading asks series by series."""
    s = web.stored
    native = web.client.retrieve_series_metadata(s.study, s.native_series)
    assert [m["00080018"]["Value"][0] for m in native] == [s.native]
    rle = web.client.retrieve_series_metadata(s.study, s.rle_series)
    assert [m["00080018"]["Value"][0] for m in rle] == [s.rle]
    study = web.client.retrieve_study_metadata(s.study)
    assert {m["00080018"]["Value"][0] for m in study} == {s.native, s.rle}
    assert web.session.cookies.get_dict() == {}  # Basic only: no browser session involved


@pytest.mark.slow
def test_metadata_never_names_the_patient(web: Web) -> None:
    s = web.stored
    for answer in (
        web.client.retrieve_study_metadata(s.study),
        web.client.retrieve_series_metadata(s.study, s.native_series),
        [web.client.retrieve_instance_metadata(s.study, s.native_series, s.native)],
    ):
        text = str(answer)
        assert PATIENT.name not in text and PATIENT.patient_id not in text
        assert str(PATIENT.name).split("^")[0] not in text


def test_every_bulk_data_uri_resolves_with_basic_auth(web: Web) -> None:
    """At study, series and instance level: every BulkDataURI, nested ones
    too, resolves under /dicom-web with the credentials that fetched it,
    to the stored value."""
    s = web.stored
    native = _stored(web, s.native)
    levels = {
        "study": web.client.retrieve_study_metadata(s.study),
        "series": web.client.retrieve_series_metadata(s.study, s.native_series),
        "instance": [web.client.retrieve_instance_metadata(s.study, s.native_series, s.native)],
    }
    for level, metadata in levels.items():
        uris = dict(_bulk_uris(metadata))
        assert uris, level
        for where, uri in uris.items():
            assert uri.startswith(f"{web.url}/studies/{s.study}/series/"), (level, uri)
            assert "/api/" not in uri
            parts = web.client.retrieve_bulkdata(uri)
            assert parts and all(parts), (level, where)
        mine = next(m for m in metadata if m["00080018"]["Value"][0] == s.native)
        # Overlays are removed at ingest (they can carry burned-in identity):
        # none is named, and its path is unknown.
        assert "60003000" not in mine and 0x60003000 not in native
        assert len(uris) >= 3 if level != "study" else len(uris) >= 4
        icc = web.client.retrieve_bulkdata(mine["00282000"]["BulkDataURI"])
        assert icc == [ICC]
        waveform = mine["54000100"]["Value"][0]["54001010"]
        assert web.client.retrieve_bulkdata(waveform["BulkDataURI"]) == [WAVEFORM]
        pixels = web.client.retrieve_bulkdata(mine["7FE00010"]["BulkDataURI"])
        assert pixels == [native.PixelData]
    assert web.session.cookies.get_dict() == {}


def test_pixel_data_bulk_data_covers_every_frame(web: Web) -> None:
    """Native: the whole value (all 5 frames). Encapsulated: one part per
    frame, equal to the stored frames (PS3.18 §8.7.3.3)."""
    s = web.stored
    (native_meta,) = web.client.retrieve_series_metadata(s.study, s.native_series)
    (native,) = web.client.retrieve_bulkdata(native_meta["7FE00010"]["BulkDataURI"])
    assert len(native) == 5 * 32 * 32 and native == _stored(web, s.native).PixelData
    (rle_meta,) = web.client.retrieve_series_metadata(s.study, s.rle_series)
    assert rle_meta["7FE00010"]["vr"] == "OB"
    frames = web.client.retrieve_bulkdata(rle_meta["7FE00010"]["BulkDataURI"])
    stored = list(generate_frames(_stored(web, s.rle).PixelData, number_of_frames=4))
    assert len(frames) == 4 and frames == stored
    raw = requests.get(rle_meta["7FE00010"]["BulkDataURI"], headers=_basic(), timeout=30)
    assert raw.status_code == 200
    assert raw.headers["Content-Type"].startswith("multipart/related")
    assert f"transfer-syntax={RLELossless}".encode() in raw.content


def test_bulk_data_media_types(web: Web) -> None:
    s = web.stored
    base = f"{web.url}/studies/{s.study}/series"
    native = f"{base}/{s.native_series}/instances/{s.native}/bulkdata/7FE00010"
    rle = f"{base}/{s.rle_series}/instances/{s.rle}/bulkdata/7FE00010"

    def get(url: str, accept: str | None) -> requests.Response:
        return requests.get(url, headers={**_basic(), "Accept": accept}, timeout=30)

    single = get(native, "application/octet-stream")
    assert (
        single.status_code == 200 and single.headers["Content-Type"] == "application/octet-stream"
    )
    assert single.content == _stored(web, s.native).PixelData
    for accept in (None, "*/*", 'multipart/related; type="application/octet-stream"'):
        answer = get(native, accept)
        assert answer.status_code == 200, accept
        assert 'type="application/octet-stream"' in answer.headers["Content-Type"]
    for url, accept in (
        (native, "image/png"),
        (native, "application/dicom+json"),
        (rle, "application/octet-stream"),  # four frames are not one part
        (native, 'multipart/related; type="image/jp2"'),  # a native value is not recompressed
    ):
        answer = get(url, accept)
        assert answer.status_code == 406, (url, accept)
        assert PATIENT.name not in answer.text
    ohif = get(rle, "multipart/related; type=application/octet-stream; transfer-syntax=*")
    assert ohif.status_code == 200, ohif.text  # what OHIF's dicomweb-client sends
    (meta,) = web.client.retrieve_series_metadata(s.study, s.native_series)
    waveform = meta["54000100"]["Value"][0]["54001010"]["BulkDataURI"]
    single = get(waveform, "application/octet-stream")
    assert single.status_code == 200 and single.content == WAVEFORM
    rle_typed = get(rle, 'multipart/related; type="image/dicom-rle"')
    assert rle_typed.status_code == 200
    assert 'type="image/dicom-rle"' in rle_typed.headers["Content-Type"]


def test_metadata_media_types(web: Web) -> None:
    s = web.stored
    url = f"{web.url}/studies/{s.study}/series/{s.native_series}/metadata"
    for accept in (None, "*/*", "application/dicom+json", "application/json, */*;q=0.1"):
        answer = requests.get(url, headers={**_basic(), "Accept": accept}, timeout=30)
        assert answer.status_code == 200, accept
        assert answer.headers["Content-Type"].startswith("application/dicom+json")
        assert answer.json()[0]["00080018"]["Value"] == [s.native]
    for accept in (
        'multipart/related; type="application/dicom+xml"',
        "application/dicom+xml",
        "application/dicom+json;q=0, text/html",
    ):
        answer = requests.get(url, headers={**_basic(), "Accept": accept}, timeout=30)
        assert answer.status_code == 406, accept


def test_bad_bulk_data_paths_are_client_errors(web: Web) -> None:
    s = web.stored
    base = f"{web.url}/studies/{s.study}/series/{s.native_series}/instances/{s.native}/bulkdata"
    cases = {
        "zzzzzzzz": 400,
        "7FE0001": 400,
        "7FE00010x": 400,
        "-1": 400,
        "54000100/-1/54001010": 400,
        "54000100/0/54001010": 400,
        "54000100/01/54001010": 400,
        "54000100/1": 400,
        "54000100/١/54001010": 400,
        "54000100/2/54001010": 404,  # one item only
        "54000100/1/54001011": 404,
        "00100010": 404,  # a name is not bulk data (nor sent)
        "12345678": 404,
        "00282000/1/54001010": 404,  # not a sequence
        "60003000": 404,  # the overlay, removed at ingest
        "7FE00008": 404,  # no float pixel data here
    }
    for path, status in cases.items():
        answer = requests.get(f"{base}/{path}", headers=_basic(), timeout=30)
        assert answer.status_code == status, (path, answer.status_code, answer.text[:200])
        assert PATIENT.name not in answer.text
    deep = "/".join(["54000100/1"] * 10_000) + "/54001010"
    answer = requests.get(f"{base}/{deep}", headers=_basic(), timeout=60)
    assert answer.status_code in (400, 414, 431), answer.status_code
    app = create_app(web.node.config, web.node.archive, b"k" * 32)
    inner = f"/dicom-web/studies/{s.study}/series/{s.native_series}/instances/{s.native}/bulkdata"
    answer = app.test_client().get(f"{inner}/{deep}", headers=_basic())
    assert answer.status_code == 400
    # The right path under another instance's series: 404, as any unknown path.
    wrong = (
        f"{web.url}/studies/{s.study}/series/{s.rle_series}/instances/{s.native}/bulkdata/7FE00010"
    )
    assert requests.get(wrong, headers=_basic(), timeout=30).status_code == 404


def test_another_hospitals_account_gets_404(web: Web) -> None:
    s = web.stored
    (meta,) = web.client.retrieve_series_metadata(s.study, s.native_series)
    uris = [uri for _, uri in _bulk_uris(meta)]
    assert len(uris) >= 3
    series = f"{web.url}/studies/{s.study}/series/{s.native_series}/metadata"
    for url in (*uris, series):
        answer = requests.get(url, headers=_basic("dushanbe"), timeout=30)
        assert answer.status_code == 404, url
        assert s.native not in answer.text and PATIENT.name not in answer.text
    denied = [r for r in web.node.archive.index.audit.rows() if r["event"] == "access-denied"]
    assert any(r["user"] == "dushanbe" for r in denied)


def test_each_read_is_audited(web: Web) -> None:
    s = web.stored
    trail = web.node.archive.index.audit

    def reads() -> Counter[str]:
        return Counter(r["detail"] for r in trail.rows() if r["event"] == "study-view")

    before = reads()
    (meta,) = web.client.retrieve_series_metadata(s.study, s.native_series)
    web.client.retrieve_bulkdata(meta["00282000"]["BulkDataURI"])
    web.client.retrieve_bulkdata(meta["7FE00010"]["BulkDataURI"])
    added = reads() - before
    assert added == Counter({"DICOMweb metadata series": 1, "DICOMweb bulk data": 2})


def test_uris_follow_a_trusted_proxy_only(web: Web) -> None:
    """Behind a trusted reverse proxy the URIs name the proxy's scheme and
    host; anyone else's X-Forwarded-* headers are ignored."""
    s = web.stored
    url = f"/dicom-web/studies/{s.study}/series/{s.native_series}/metadata"
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "pacs.example.org"}
    trusted = replace(web.node.config, trusted_proxies="127.0.0.1")
    app = create_app(trusted, web.node.archive, b"k" * 32)
    (meta,) = app.test_client().get(url, headers={**_basic(), **forwarded}).json
    assert meta["7FE00010"]["BulkDataURI"].startswith("https://pacs.example.org/dicom-web/studies/")
    plain = create_app(web.node.config, web.node.archive, b"k" * 32)
    (meta,) = plain.test_client().get(url, headers={**_basic(), **forwarded}).json
    assert meta["7FE00010"]["BulkDataURI"].startswith("http://localhost/dicom-web/studies/")


def test_an_implicit_vr_instance_resolves_too(web: Web) -> None:
    """Stored as a sender sent it in Implicit VR: VRs from the dictionary,
    offsets still found."""
    study = generate_uid(UID_ROOT)
    ds = _rich(study)
    ds.PatientName = "Implicit^Test"
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    result = web.node.ingestor.ingest(incoming(ds))
    assert result.outcome is Outcome.STORED and result.dataset is not None, result
    row = _only(web.node, SOPInstanceUID=result.dataset.SOPInstanceUID)
    assert _stored(web, row["SOPInstanceUID"]).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    meta = web.client.retrieve_instance_metadata(
        row["StudyInstanceUID"], row["SeriesInstanceUID"], row["SOPInstanceUID"]
    )
    assert "Implicit" not in str(meta)
    stored = _stored(web, row["SOPInstanceUID"])
    assert web.client.retrieve_bulkdata(meta["7FE00010"]["BulkDataURI"]) == [stored.PixelData]
    assert web.client.retrieve_bulkdata(meta["00282000"]["BulkDataURI"]) == [ICC]
    waveform = meta["54000100"]["Value"][0]["54001010"]["BulkDataURI"]
    assert web.client.retrieve_bulkdata(waveform) == [WAVEFORM]


@pytest.mark.slow
def test_large_values_are_streamed_not_held(web: Web) -> None:
    """A 21 MB native run's Pixel Data bulk data, and metadata, are sent
    without holding the value: Python's peak allocation stays a few chunks."""
    study = generate_uid(UID_ROOT)
    big = xa_instance(
        PATIENT,
        frames=80,
        rows=512,
        cols=512,
        transfer_syntax=ExplicitVRLittleEndian,
        study_uid=study,
    )
    result = web.node.ingestor.ingest(incoming(big))
    assert result.outcome is Outcome.STORED and result.dataset is not None, result
    row = _only(web.node, SOPInstanceUID=result.dataset.SOPInstanceUID)
    del big
    base = (
        f"/dicom-web/studies/{row['StudyInstanceUID']}/series/{row['SeriesInstanceUID']}"
        f"/instances/{row['SOPInstanceUID']}"
    )
    client = create_app(web.node.config, web.node.archive, b"k" * 32).test_client()
    for url, least in ((f"{base}/bulkdata/7FE00010", 80 * 512 * 512), (f"{base}/metadata", 1000)):
        tracemalloc.start()
        try:
            answer = client.get(url, headers=_basic(), buffered=False)
            assert answer.status_code == 200
            size = sum(len(chunk) for chunk in answer.response)
            answer.close()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert size > least
        assert peak < 8 << 20, (url, peak)


# ------------------------------------------- negotiation shared with frames


def _parts(answer: requests.Response) -> list[tuple[str, bytes]]:
    """(Content-Type, payload) of each part of a multipart answer."""
    boundary = answer.headers["Content-Type"].split("boundary=")[1].split(";")[0].strip('"')
    out = []
    for chunk in answer.content.split(b"--" + boundary.encode())[1:-1]:
        head, _, body = chunk.partition(b"\r\n\r\n")
        out.append((head.decode().split("Content-Type:")[1].strip(), body[:-2]))
    return out


def _decoded_frames(ds: Dataset) -> list[bytes]:
    """Each frame's values as Explicit VR Little Endian holds them, decoded
    here by pydicom (not by the node's code)."""
    dtype = np.dtype(("<i" if ds.PixelRepresentation else "<u") + str(ds.BitsAllocated // 8))
    return [np.ascontiguousarray(f.astype(dtype)).tobytes() for f in ds.pixel_array]


EXPLICIT = f"transfer-syntax={ExplicitVRLittleEndian}"


@pytest.mark.parametrize(
    "accept",
    [
        f'multipart/related; type="application/octet-stream"; {EXPLICIT}',  # dicomweb-client
        f"multipart/related; type=application/octet-stream; {EXPLICIT}",  # OHIF's spelling
        f'multipart/related;type="application/octet-stream";transfer-syntax="{ExplicitVRLittleEndian}"',
        'multipart/related; type="image/jpeg", '  # not made: lossless JPEG has no encoder
        f'multipart/related; type="application/octet-stream"; {EXPLICIT}; q=0.5',
    ],
)
def test_encapsulated_pixel_data_asked_uncompressed_is_decoded(web: Web, accept: str) -> None:
    """A client that cannot decode RLE asks for the frames uncompressed by
    name: each part is one frame decoded (was 406)."""
    s = web.stored
    (meta,) = web.client.retrieve_series_metadata(s.study, s.rle_series)
    answer = requests.get(
        meta["7FE00010"]["BulkDataURI"], headers={**_basic(), "Accept": accept}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith(
        'multipart/related; type="application/octet-stream"'
    )
    parts = _parts(answer)
    assert [media for media, _ in parts] == [f"application/octet-stream; {EXPLICIT}"] * 4
    assert [body for _, body in parts] == _decoded_frames(_stored(web, s.rle))


def test_dicomweb_client_asking_uncompressed_gets_decoded_frames(web: Web) -> None:
    s = web.stored
    (meta,) = web.client.retrieve_series_metadata(s.study, s.rle_series)
    frames = web.client.retrieve_bulkdata(
        meta["7FE00010"]["BulkDataURI"],
        media_types=(("application/octet-stream", ExplicitVRLittleEndian),),
    )
    assert frames == _decoded_frames(_stored(web, s.rle))


@pytest.mark.parametrize(
    "accept",
    [
        None,
        "*/*",
        "multipart/related",
        'multipart/related; type="application/octet-stream"',  # PS3.18: Explicit VR LE
        "multipart/related; type=application/octet-stream; transfer-syntax=*",  # OHIF
        'multipart/related; type="image/dicom-rle"',
        'multipart/related; type="image/x-dicom-rle"',
        'multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.50',
        'multipart/related; type="image/jp2"',
        'multipart/related; type="image/jpeg"',  # lossless JPEG: no encoder, 406
        'multipart/related; type="image/png"',
        f'multipart/related; type="application/octet-stream"; {EXPLICIT}; q=0, image/gif',
    ],
)
def test_pixel_data_bulk_data_answers_as_the_frames_resource(web: Web, accept: str | None) -> None:
    """Encapsulated Pixel Data asked for in any way is sent as the frames
    resource sends all its frames: the same media types, syntaxes and bytes,
    or the same refusal."""
    s = web.stored
    base = f"{web.url}/studies/{s.study}/series/{s.rle_series}/instances/{s.rle}"
    headers = {**_basic(), "Accept": accept}
    bulk = requests.get(f"{base}/bulkdata/7FE00010", headers=headers, timeout=30)
    frames = requests.get(f"{base}/frames/1,2,3,4", headers=headers, timeout=30)
    assert bulk.status_code == frames.status_code, (bulk.text, frames.text)
    if frames.status_code != 200:
        assert bulk.status_code == 406 and PATIENT.name not in bulk.text
        return
    assert _parts(bulk) == _parts(frames)
    media = frames.headers["Content-Type"].split("; boundary=")[0]
    assert bulk.headers["Content-Type"].split("; boundary=")[0] == media
    assert bulk.headers.get("Vary") == "Accept"


def test_octet_stream_without_a_syntax_is_explicit_vr_little_endian(web: Web) -> None:
    """PS3.18 Table 8.7.3-4: application/octet-stream defaults to Explicit
    VR Little Endian, so compressed frames are decoded, as /frames does;
    the stored bytes are ``transfer-syntax=*`` (OHIF's request)."""
    s = web.stored
    (meta,) = web.client.retrieve_series_metadata(s.study, s.rle_series)
    uri = meta["7FE00010"]["BulkDataURI"]
    plain = 'multipart/related; type="application/octet-stream"'
    answer = requests.get(uri, headers={**_basic(), "Accept": plain}, timeout=30)
    assert answer.status_code == 200
    assert [body for _, body in _parts(answer)] == _decoded_frames(_stored(web, s.rle))
    ohif = f"{plain}; transfer-syntax=*"
    answer = requests.get(uri, headers={**_basic(), "Accept": ohif}, timeout=30)
    stored = list(generate_frames(_stored(web, s.rle).PixelData, number_of_frames=4))
    assert [body for _, body in _parts(answer)] == stored
    assert {media for media, _ in _parts(answer)} == {
        f"image/dicom-rle; transfer-syntax={RLELossless}"
    }


def test_accept_headers_beyond_the_bounds_are_refused_unread(web: Web) -> None:
    """Metadata and bulk data read Accept with the one bounded parser: a
    header of thousands of ranges or characters is 400, one range with
    too many parameters 406; none is a 500 or a 200."""
    s = web.stored
    base = f"{web.url}/studies/{s.study}/series/{s.rle_series}"
    urls = (f"{base}/metadata", f"{base}/instances/{s.rle}/bulkdata/7FE00010")
    native = f"{web.url}/studies/{s.study}/series/{s.native_series}/instances/{s.native}"
    for url in (*urls, f"{native}/bulkdata/00282000"):
        for accept, status in (
            (", ".join(["*/*;q=0.5"] * 2000), 400),
            ("*/*; x=" + "a" * 5000, 400),
            ("*/*; " + "; ".join(f"p{n}=1" for n in range(20)), 406),
            ("*/*; q=nan", 406),
            ("*/*; q=2", 406),
        ):
            answer = requests.get(url, headers={**_basic(), "Accept": accept}, timeout=30)
            assert answer.status_code == status, (url, accept[:40], answer.status_code)
            assert "Accept" in answer.text and PATIENT.name not in answer.text


def test_a_value_as_octet_stream_ignores_the_ranges_it_cannot_meet(web: Web) -> None:
    """Native values: single part when application/octet-stream ranks
    first, multipart when a multipart range does; a compressed syntax named
    for them is not made (406), and ``multipart/*`` is a multipart range."""
    s = web.stored
    url = f"{web.url}/studies/{s.study}/series/{s.native_series}/instances/{s.native}"
    icc = f"{url}/bulkdata/00282000"

    def get(accept: str) -> requests.Response:
        return requests.get(icc, headers={**_basic(), "Accept": accept}, timeout=30)

    first = get('application/octet-stream, multipart/related; type="application/octet-stream"')
    assert first.headers["Content-Type"] == "application/octet-stream" and first.content == ICC
    ranked = get(
        'application/octet-stream; q=0.2, multipart/related; type="application/octet-stream"'
    )
    assert ranked.headers["Content-Type"].startswith("multipart/related")
    assert [body for _, body in _parts(ranked)] == [ICC]
    assert get("multipart/*").status_code == 200
    refused = get(
        'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.5'
    )
    assert refused.status_code == 406


def _damaged_rle(web: Web, frame: int) -> str:
    """A stored 4-frame RLE instance whose frame ``frame`` (from 1) puts its
    segment far beyond its end (a careless encoder's or a damaged disk's):
    it cannot be decoded. Its bulk data URI."""
    ds = xa_instance(
        PATIENT, frames=4, rows=32, cols=32, transfer_syntax=RLELossless,
        study_uid=generate_uid(UID_ROOT),
    )  # fmt: skip
    result = web.node.ingestor.ingest(incoming(ds))
    assert result.outcome is Outcome.STORED and result.dataset is not None, result
    row = _only(web.node, SOPInstanceUID=result.dataset.SOPInstanceUID)
    archive = web.node.archive
    path = archive.blobs.path(archive.index.instance_blob(row["SOPInstanceUID"]))
    with open(path, "rb") as stored:
        data = bytearray(stored.read())
    frames = list(
        generate_frames(_stored(web, row["SOPInstanceUID"]).PixelData, number_of_frames=4)
    )
    at = data.find(frames[frame - 1])
    assert at > 0 and data.find(frames[frame - 1], at + 1) == -1
    data[at + 4 : at + 8] = (0xFFFF0000).to_bytes(4, "little")
    with open(path, "wb") as out:
        out.write(data)
    return (
        f"{web.url}/studies/{row['StudyInstanceUID']}/series/{row['SeriesInstanceUID']}"
        f"/instances/{row['SOPInstanceUID']}/bulkdata/7FE00010"
    )


def test_frames_that_cannot_be_decoded_are_a_clear_4xx_or_a_cut_body(web: Web) -> None:
    """A first frame that cannot be decoded is 422 before anything is sent;
    a later one ends the body without its closing boundary, so a client
    never takes three frames for four."""
    accept = f'multipart/related; type="application/octet-stream"; {EXPLICIT}'
    first = requests.get(_damaged_rle(web, 1), headers={**_basic(), "Accept": accept}, timeout=30)
    assert first.status_code == 422 and "frame 1" in first.text
    assert PATIENT.name not in first.text
    later = requests.get(_damaged_rle(web, 3), headers={**_basic(), "Accept": accept}, timeout=30)
    assert later.status_code == 200
    boundary = later.headers["Content-Type"].split("boundary=")[1]
    assert later.content.count(f"--{boundary}\r\n".encode()) == 2
    assert f"--{boundary}--".encode() not in later.content


@pytest.mark.slow
def test_decoded_pixel_data_is_made_a_frame_at_a_time(web: Web) -> None:
    """A 40-frame 512 x 512 RLE run asked uncompressed (10 MB decoded):
    Python's peak allocation stays a few frames, not the run."""
    big = xa_instance(
        PATIENT, frames=40, rows=512, cols=512, transfer_syntax=RLELossless,
        study_uid=generate_uid(UID_ROOT),
    )  # fmt: skip
    result = web.node.ingestor.ingest(incoming(big))
    assert result.outcome is Outcome.STORED and result.dataset is not None, result
    row = _only(web.node, SOPInstanceUID=result.dataset.SOPInstanceUID)
    del big
    url = (
        f"/dicom-web/studies/{row['StudyInstanceUID']}/series/{row['SeriesInstanceUID']}"
        f"/instances/{row['SOPInstanceUID']}/bulkdata/7FE00010"
    )
    client = create_app(web.node.config, web.node.archive, b"k" * 32).test_client()
    accept = f'multipart/related; type="application/octet-stream"; {EXPLICIT}'
    tracemalloc.start()
    try:
        answer = client.get(url, headers={**_basic(), "Accept": accept}, buffered=False)
        assert answer.status_code == 200
        size = sum(len(chunk) for chunk in answer.response)
        answer.close()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert size > 40 * 512 * 512
    assert peak < 3 << 20, peak
