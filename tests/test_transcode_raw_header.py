"""A frame's data set made from a header straight from ``dcmread``.

pydicom keeps every element of a file it reads raw (a `RawDataElement`,
no keyword) until it is asked for; `transcode.frame_dataset` once picked the
attributes to drop by keyword and so failed on any header not read through
first (found by mypy: ``RawDataElement`` has no ``keyword``).
"""

from __future__ import annotations

from io import BytesIO

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from dicomnode.media import transcode


def _file(name: str) -> bytes:
    path = get_testdata_file(name)
    assert path is not None, f"{name} not in pydicom-data"
    with open(path, "rb") as f:
        return f.read()


def _header(data: bytes) -> Dataset:
    return dcmread(BytesIO(data), stop_before_pixels=True)


def _native_frames(data: bytes) -> tuple[Dataset, list[bytes]]:
    whole = dcmread(BytesIO(data))
    size = int(whole.Rows) * int(whole.Columns) * int(whole.BitsAllocated) // 8
    pixels = bytes(whole.PixelData)
    return whole, [pixels[i : i + size] for i in range(0, len(pixels), size)]


def test_a_raw_header_makes_the_same_frame_as_a_read_one() -> None:
    data = _file("emri_small.dcm")  # native, 10 frames
    whole, frames = _native_frames(data)
    raw = _header(data)
    assert any(isinstance(e, RawDataElement) for e in raw._dict.values())
    read = _header(data)
    for _ in read:  # every element converted
        pass
    made = transcode.frame_dataset(raw, frames[3])
    expected = transcode.frame_dataset(read, frames[3])
    assert "NumberOfFrames" in made and int(made.NumberOfFrames) == 1
    assert bytes(made.PixelData) == frames[3]
    assert sorted(made.keys()) == sorted(expected.keys())
    array, _ = transcode.decode_frame(raw, frames[3])
    assert np.array_equal(array, whole.pixel_array[3])
    decoded, _ = transcode.decoded_frame(_header(data), frames[3])
    assert decoded == frames[3]


def test_a_raw_header_of_an_encapsulated_image_decodes_its_frames() -> None:
    data = _file("emri_small_RLE.dcm")
    whole = dcmread(BytesIO(data))
    stored = list(generate_frames(whole.PixelData, number_of_frames=int(whole.NumberOfFrames)))
    array, _ = transcode.decode_frame(_header(data), stored[5])
    assert np.array_equal(array, whole.pixel_array[5])


def test_the_raw_header_is_left_as_it_was() -> None:
    data = _file("emri_small.dcm")
    _, frames = _native_frames(data)
    raw = _header(data)
    before = {tag: type(e) for tag, e in raw._dict.items()}
    transcode.frame_dataset(raw, frames[0])
    assert {tag: type(e) for tag, e in raw._dict.items()} == before
