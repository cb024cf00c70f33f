"""The planted-identity suite through the whole ingest: nothing of it on disk."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom import dcmread

from dicomnode.deid.pixels import region_mask
from dicomnode.deid.scanner import encoded_forms, scan
from dicomnode.ingest.pipeline import Ingestor, Outcome
from dicomnode.ops.samples import PATIENTS
from storage.archive import Archive
from tests.conftest import incoming
from tests.test_deid_header import needles, planted


def test_nothing_planted_reaches_disk(
    ingestor: Ingestor, archive: Archive, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    for patient in PATIENTS:
        result = ingestor.ingest(incoming(planted(patient)))
        assert result.outcome is Outcome.STORED, result
    stored = [dcmread(p) for p in archive.blobs.root.rglob("*.dcm")]
    assert len(stored) == len(PATIENTS)
    wanted = [n for p in PATIENTS for n in needles(p)]
    for ds in stored:
        assert scan(ds, wanted) == []
        outside = ~region_mask(ds)
        assert not np.asarray(ds.pixel_array)[outside].any()  # the banner rows
    # Byte by byte, every file the node wrote: blobs, index, WAL.
    files = [p for p in archive.data_dir.rglob("*") if p.is_file()]
    forms = {form for n in wanted if len(n) >= 5 for form in encoded_forms(n)}
    for path in files:
        data = path.read_bytes()
        leaked = [form for form in forms if form in data]
        assert leaked == [], (path.name, leaked[:3])
    text = caplog.text
    assert [n for n in wanted if len(n) >= 4 and n in text] == []
