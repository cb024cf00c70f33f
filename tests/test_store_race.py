"""Two processes on one SQLite index storing one SOP Instance UID at once
(`dicomnode serve` and `dicomnode import`, each with its own in-process
lock): the second must not write over the first's acknowledged blob."""

from __future__ import annotations

import hashlib
import threading
import time
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import select
from sqlalchemy.engine import Connection

from dicomnode.ops.check import verify
from dicomnode.ops.samples import PATIENTS, UID_ROOT, XA_STORAGE, base_dataset
from storage.archive import Archive, DuplicatePolicy, StoreOutcome
from storage.record import record_from_dataset
from storage.schema import instances


def _instance(fill: int) -> tuple[Dataset, bytes]:
    ds = base_dataset(
        PATIENTS[0],
        XA_STORAGE,
        study_uid=UID_ROOT + "7.1",
        series_uid=UID_ROOT + "7.2",
        modality="XA",
    )
    ds.SOPInstanceUID = UID_ROOT + "7.3"
    ds.Rows = ds.Columns = 4
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes([fill]) * 16
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return ds, out.getvalue()


@pytest.mark.parametrize("policy", list(DuplicatePolicy))
def test_a_second_process_never_writes_over_an_instance_being_stored(
    tmp_path: Path, policy: DuplicatePolicy
) -> None:
    url = f"sqlite:///{tmp_path}/index.sqlite"
    first, second = Archive(tmp_path, url, policy), Archive(tmp_path, url, policy)
    (ds1, data1), (ds2, data2) = _instance(1), _instance(2)

    def record(ds: Dataset):
        return record_from_dataset(ds, issuer="NCC", transfer_syntax=ExplicitVRLittleEndian)

    inside = threading.Event()

    def slow(conn: Connection, outcome: object) -> None:
        inside.set()  # the first store is in its transaction: the second starts now
        time.sleep(1.0)  # a large blob's fsync

    outcomes: dict[str, StoreOutcome] = {}
    worker = threading.Thread(
        target=lambda: outcomes.__setitem__("first", first.store(record(ds1), data1, also=slow))
    )
    try:
        worker.start()
        assert inside.wait(30)
        outcomes["second"] = second.store(record(ds2), data2)
        worker.join(60)
        uid = str(ds1.SOPInstanceUID)
        with first.index.engine.connect() as conn:
            sha = conn.execute(
                select(instances.c.sha256).where(instances.c.sopinstanceuid == uid)
            ).scalar_one()
        on_disk = hashlib.sha256(first.read(uid) or b"").hexdigest()
        assert on_disk == sha  # the row describes the file it points at
        report = verify(first)
        assert not report.damaged and not report.missing, report.summary()
        if policy is DuplicatePolicy.KEEP_FIRST:
            assert outcomes == {"first": StoreOutcome.STORED, "second": StoreOutcome.DUPLICATE}
            assert sha == hashlib.sha256(data1).hexdigest()
        else:  # the later one replaced the first, whole
            assert sha == hashlib.sha256(data2).hexdigest()
    finally:
        first.close()
        second.close()
