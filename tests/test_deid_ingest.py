"""The planted-identity suite through the whole ingest: nothing of it on disk."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.tag import Tag

from dicomnode.deid.pixels import region_mask
from dicomnode.deid.scanner import encoded_forms, scan
from dicomnode.ingest.pipeline import Ingestor, Outcome
from dicomnode.ops.samples import PATIENTS, SyntheticPatient
from storage.archive import Archive
from tests.conftest import incoming
from tests.test_deid_header import needles, planted


def _dates(patient: SyntheticPatient) -> set[str]:
    return {n for n in needles(patient) if n.replace(".", "").isdigit()}


def _written_dates(ds: Dataset) -> set[str]:
    """Every DA value the node wrote (shifted dates), at any depth."""
    found: set[str] = set()

    def walk(current: Dataset) -> None:
        for element in current:
            if element.VR == "SQ":
                for item in element.value:
                    walk(item)
            elif element.VR == "DA" and element.value:
                values = element.value if element.VM > 1 else [element.value]
                found.update(str(v) for v in values)

    walk(ds)
    return found


def _shifted_here(sent: Dataset, stored: Dataset, path: str) -> bool:
    """Whether the top-level DA element at ``path`` ("(gggg,eeee)") held
    another date when sent: the node wrote the stored one as its shift."""
    match = re.fullmatch(r"\(([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\)", path)
    if not match:
        return False
    tag = Tag(int(match[1], 16), int(match[2], 16))
    return (
        tag in sent
        and tag in stored
        and stored[tag].VR == "DA"
        and str(sent[tag].value) != str(stored[tag].value)
    )


def test_nothing_planted_reaches_disk(
    ingestor: Ingestor, archive: Archive, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    # A child's dates are identity in that child's file; elsewhere a shifted
    # date may fall on another child's birthday by chance (one run in many
    # did), so other children's dates count only where the node did not write
    # them as a shifted date.
    undated = [n for p in PATIENTS for n in needles(p) if n not in _dates(p)]
    written: set[str] = set()
    before: set[Path] = set()
    for patient in PATIENTS:
        sent = planted(patient)
        result = ingestor.ingest(incoming(sent))
        assert result.outcome is Outcome.STORED, result
        now = set(archive.blobs.root.rglob("*.dcm"))
        (path,) = now - before
        before = now
        ds = dcmread(path)
        assert [
            found
            for found in scan(ds, [*undated, *needles(patient)])
            # A date the node shifted onto the child's own birthday (one
            # shift in about 3650 lands there) is the shift, not the birthday.
            if not (found.needle in _dates(patient) and _shifted_here(sent, ds, found.path))
        ] == []
        outside = ~region_mask(ds)
        assert not np.asarray(ds.pixel_array)[outside].any()  # the banner rows
        written |= _written_dates(ds)
    wanted = [n for p in PATIENTS for n in needles(p) if n not in written]
    # Byte by byte, every file the node wrote: blobs, index, WAL.
    files = [p for p in archive.data_dir.rglob("*") if p.is_file()]
    forms = {form for n in wanted if len(n) >= 5 for form in encoded_forms(n)}
    for path in files:
        data = path.read_bytes()
        leaked = [form for form in forms if form in data]
        assert leaked == [], (path.name, leaked[:3])
    text = caplog.text
    assert [n for n in wanted if len(n) >= 4 and n in text] == []
