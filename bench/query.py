"""Query benchmark: C-FIND and QIDO-RS over 100,000 instances in 5,000 studies.

    python -m bench.query [--studies 5000]     # (or `make bench`)

The same synthetic studies (de-identified already: pseudonyms as names,
4 series of 5 instances each, dates over eight years) go into the node's
index by the fast path — bulk inserts of the rows the ingest writes, no
blobs, since a query reads none — on SQLite and on PostgreSQL, and into
Orthanc over REST, in the same run. Then each server answers, over one
association or one keep-alive connection:

- study level: PatientName wildcard + StudyDate range (the prefix varies);
- series level: by StudyInstanceUID (a random study each time);
- the same two as QIDO-RS.

Printed: p50/p95 latency in ms per server and back end, the node's
in-process time (the index alone), and the ratio to Orthanc.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import random
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
from sqlalchemy import insert, text

from bench.ingest import OUT
from bench.peers import NODE_CLI, free_port, node_env, orthanc, start_node, wait_for_http
from dicomnode.ops.samples import UID_ROOT
from storage.blobs import BlobStore
from storage.index import Index
from storage.keys import Level
from storage.query import Query
from storage.record import record_from_dataset
from storage.schema import instances, patients, series, studies
from tests.postgres import LocalPostgres

PASSWORD = "cine timing run 2026"
REPEATS = 200
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
DATES = "20250101-20250630"
US = "1.2.840.10008.5.1.4.1.1.6.1"


def synthetic(count: int, seed: int = 2026) -> Iterator[Dataset]:
    """``count`` studies of 4 series × 5 instances, on count // 2.5 patients."""
    rng = random.Random(seed)
    people = [
        "CHD-"
        + "".join(rng.choice(ALPHABET) for _ in range(4))
        + "-"
        + "".join(rng.choice(ALPHABET) for _ in range(4))
        for _ in range(max(1, count * 2 // 5))
    ]
    start = datetime(2019, 1, 1).toordinal()
    for number in range(count):
        pseudonym = rng.choice(people)
        date = datetime.fromordinal(start + rng.randrange(8 * 365)).strftime("%Y%m%d")
        study = generate_uid(UID_ROOT)
        modality = rng.choice(["US", "XA"])
        for series_number in range(1, 5):
            series_uid = generate_uid(UID_ROOT)
            for instance_number in range(1, 6):
                ds = Dataset()
                ds.SOPClassUID, ds.SOPInstanceUID = US, generate_uid(UID_ROOT)
                ds.PatientName = ds.PatientID = pseudonym
                ds.PatientSex = rng.choice("MF")
                ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_uid
                ds.StudyDate, ds.StudyTime = date, "101500"
                ds.AccessionNumber, ds.StudyID = f"A{number:06d}", str(number)
                ds.StudyDescription = "Echo, ASD closure planning"
                ds.Modality, ds.SeriesNumber = modality, series_number
                ds.InstanceNumber = instance_number
                ds.file_meta = FileMetaDataset()
                ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
                ds.file_meta.MediaStorageSOPClassUID = US
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                yield ds


def populate_index(url: str, datasets: list[Dataset]) -> float:
    """Bulk-insert the rows the ingest would write; seconds taken."""
    begin = time.perf_counter()
    index = Index(url)
    rows: dict[str, list[dict]] = {"patients": [], "studies": [], "series": [], "instances": []}
    keys: dict[tuple, int] = {}
    now = datetime.now(UTC)
    for ds in datasets:
        record = record_from_dataset(
            ds, issuer="NCC Bishkek", transfer_syntax=ExplicitVRLittleEndian, sending_ae="BENCH"
        )
        c = record.columns
        parent = None
        for level, table, key in (
            (Level.PATIENT, "patients", c[Level.PATIENT]["patient_key"]),
            (Level.STUDY, "studies", c[Level.STUDY]["studyinstanceuid"]),
            (Level.SERIES, "series", c[Level.SERIES]["seriesinstanceuid"]),
        ):
            if (table, key) not in keys:
                keys[(table, key)] = len(rows[table]) + 1
                row = {"pk": keys[(table, key)], **c[level]}
                if parent is not None:
                    row[{"studies": "patient_pk", "series": "study_pk"}[table]] = parent
                rows[table].append(row)
            parent = keys[(table, key)]
        rows["instances"].append(
            {
                **c[Level.IMAGE],
                "series_pk": parent,
                "blob_key": BlobStore.key_for(ds.SOPInstanceUID),
                "size": 1000,
                "sending_ae": "BENCH",
                "received_at": now,
                "copies_received": 1,
            }
        )
    with index.engine.begin() as conn:
        for table in (patients, studies, series, instances):
            batch = rows[table.name]
            for start in range(0, len(batch), 5000):
                conn.execute(insert(table), batch[start : start + 5000])
    with index.engine.begin() as conn:  # planner statistics, as autovacuum would gather
        conn.execute(text("ANALYZE"))
    index.close()
    return time.perf_counter() - begin


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.95) - 1] * 1000


def timed(run: Callable[[int], int]) -> tuple[float, float, float]:
    """p50, p95 (ms) and mean matches of ``run(i)`` over REPEATS calls."""
    samples, matches = [], 0
    for i in range(REPEATS):
        begin = time.perf_counter()
        matches += run(i)
        samples.append(time.perf_counter() - begin)
    return (*percentiles(samples), matches / REPEATS)


def prefix(i: int) -> str:
    return f"CHD-{ALPHABET[i % len(ALPHABET)]}*"


def in_process(url: str, study_uids: list[str]) -> dict[str, tuple]:
    index = Index(url)
    rng = random.Random(1)

    def study_query(i: int) -> int:
        keys = {
            "PatientName": prefix(i),
            "StudyDate": DATES,
            "StudyInstanceUID": "",
            "PatientID": "",
            "AccessionNumber": "",
            "ModalitiesInStudy": "",
            "NumberOfStudyRelatedInstances": "",
        }
        return len(list(index.find(Query(level=Level.STUDY, keys=keys))))

    def series_query(_: int) -> int:
        keys = {
            "StudyInstanceUID": rng.choice(study_uids),
            "SeriesInstanceUID": "",
            "Modality": "",
            "SeriesNumber": "",
            "NumberOfSeriesRelatedInstances": "",
        }
        return len(list(index.find(Query(level=Level.SERIES, keys=keys))))

    try:
        return {"study": timed(study_query), "series": timed(series_query)}
    finally:
        index.close()


def c_find(port: int, called: str, study_uids: list[str]) -> dict[str, tuple]:
    ae = AE(ae_title="BENCHFIND")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established, f"{called} refused the association"

    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    assoc.dimse_timeout = 30
    rng = random.Random(1)

    def ask(identifier: Dataset) -> int:
        found = 0
        for status, reply in assoc.send_c_find(
            identifier, StudyRootQueryRetrieveInformationModelFind
        ):
            if not status:
                raise RuntimeError("C-FIND: no answer (timeout or abort)")
            if status.Status in (0xFF00, 0xFF01) and reply is not None:
                found += 1
        return found

    def study_query(i: int) -> int:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.PatientName, ds.StudyDate = prefix(i), DATES
        ds.StudyInstanceUID = ds.PatientID = ds.AccessionNumber = ds.ModalitiesInStudy = ""
        ds.NumberOfStudyRelatedInstances = ""
        return ask(ds)

    def series_query(_: int) -> int:
        ds = Dataset()
        ds.QueryRetrieveLevel = "SERIES"
        ds.StudyInstanceUID = rng.choice(study_uids)
        ds.SeriesInstanceUID = ds.Modality = ds.SeriesNumber = ""
        ds.NumberOfSeriesRelatedInstances = ""
        return ask(ds)

    try:
        return {"study": timed(study_query), "series": timed(series_query)}
    finally:
        assoc.release()


def qido(port: int, auth: str | None, study_uids: list[str]) -> dict[str, tuple]:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Accept": "application/dicom+json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    rng = random.Random(1)

    def get(path: str) -> int:
        connection.request("GET", "/dicom-web" + path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        if response.status == 204 or not body:
            return 0
        if response.status != 200:
            raise RuntimeError(f"QIDO {path}: HTTP {response.status}")
        return len(json.loads(body))

    def study_query(i: int) -> int:
        return get(f"/studies?PatientName={prefix(i)}&StudyDate={DATES}")

    def series_query(_: int) -> int:
        return get(f"/studies/{rng.choice(study_uids)}/series")

    return {"study": timed(study_query), "series": timed(series_query)}


@contextmanager
def serve_node(work: Path, url: str) -> Iterator[tuple[int, int]]:
    """The node on a populated index, with a web user for QIDO-RS."""
    dimse, web = free_port(), free_port()
    env = node_env(work, index_url=url, dimse_port=dimse, http_port=web, min_free_disk_mb=0)
    # A calling AE the node does not list sees no patients: BENCHFIND sees all.
    work.mkdir(parents=True, exist_ok=True)
    (work / "node.toml").write_text(
        '[[remote_ae]]\nae_title = "BENCHFIND"\nhost = "127.0.0.1"\nport = 104\n'
        'query_issuers = ["*"]\n'
    )
    env["DICOMNODE_CONFIG"] = str(work / "node.toml")
    subprocess.run(
        [*NODE_CLI, "user", "add", "bench", "--password-stdin"],
        env=env,
        input=PASSWORD + "\n",
        text=True,
        check=True,
        capture_output=True,
    )
    work.mkdir(parents=True, exist_ok=True)
    process = start_node(env, work / "node.log")
    try:
        wait_for_http(web)
        yield dimse, web
    finally:
        process.terminate()
        process.wait(timeout=60)


def load_orthanc(base_port: int, datasets: list[Dataset]) -> float:
    """POST every instance over 4 keep-alive connections; seconds taken."""
    begin = time.perf_counter()

    def upload(part: list[Dataset]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", base_port)
        for ds in part:
            buffer = BytesIO()
            dcmwrite(buffer, ds, enforce_file_format=True)
            for _ in range(3):  # Orthanc closes idle keep-alive connections
                try:
                    connection.request("POST", "/instances", body=buffer.getvalue())
                    response = connection.getresponse()
                    response.read()
                    break
                except (ConnectionError, http.client.HTTPException):
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", base_port)
            else:
                raise RuntimeError("Orthanc keeps closing the connection")
            if response.status != 200:
                raise RuntimeError(f"Orthanc refused an instance: HTTP {response.status}")

    threads = [threading.Thread(target=upload, args=(datasets[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    connection = http.client.HTTPConnection("127.0.0.1", base_port)
    connection.request("GET", "/statistics")
    count = json.loads(connection.getresponse().read())["CountInstances"]
    if count != len(datasets):
        raise RuntimeError(f"Orthanc holds {count} of {len(datasets)} instances")
    return time.perf_counter() - begin


def row(server: str, service: str, figures: dict[str, tuple], reference: dict | None) -> str:
    cells = []
    for kind in ("study", "series"):
        p50, p95, matches = figures[kind]
        ratio = f" ({reference[kind][0] / p50:.1f}×)" if reference else ""
        cells.append(f"{p50:.1f} / {p95:.1f}{ratio} | {matches:.1f}")
    return f"| {server} | {service} | " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=5000)
    args = parser.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    datasets = list(synthetic(args.studies))
    study_uids = sorted({ds.StudyInstanceUID for ds in datasets})
    print(f"{len(datasets)} instances in {len(study_uids)} studies", flush=True)
    results: list[tuple[str, str, dict]] = []
    postgres = LocalPostgres().start()
    try:
        with tempfile.TemporaryDirectory(dir=OUT) as tmp:
            work = Path(tmp)
            (work / "var").mkdir()
            backends = {
                "SQLite": f"sqlite:///{work / 'var' / 'index.sqlite'}",
                "PostgreSQL": postgres.database(),
            }
            for name, url in backends.items():
                seconds = populate_index(url, datasets)
                print(f"node index on {name} populated in {seconds:.1f} s", flush=True)
                results.append((f"node, {name}", "in-process", in_process(url, study_uids)))
                with serve_node(work / name, url) as (dimse, web):
                    results.append(
                        (f"node, {name}", "C-FIND", c_find(dimse, "CHDNODE", study_uids))
                    )
                    auth = f"bench:{PASSWORD}"
                    results.append((f"node, {name}", "QIDO-RS", qido(web, auth, study_uids)))
            # Orthanc answers C-FIND only from AEs it knows.
            finder = {"BENCHFIND": ["BENCHFIND", "127.0.0.1", 104]}
            with orthanc(work / "orthanc", dicomweb=True, sync=False, modalities=finder) as peer:
                seconds = load_orthanc(peer.http_port, datasets)
                print(f"Orthanc populated in {seconds:.1f} s", flush=True)
                results.append(
                    ("Orthanc", "C-FIND", c_find(peer.dicom_port, "ORTHANC", study_uids))
                )
                results.append(("Orthanc", "QIDO-RS", qido(peer.http_port, None, study_uids)))
    finally:
        postgres.stop()
    reference = {service: figures for server, service, figures in results if server == "Orthanc"}
    print(
        "\n| server | service | study p50 / p95 ms (× Orthanc) | matches | "
        "series p50 / p95 ms (× Orthanc) | matches |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for server, service, figures in results:
        print(
            row(server, service, figures, reference.get(service) if server != "Orthanc" else None)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
