"""Finished research exports as the web serves them on a node of several
processes (hosts): where the package is kept, who may read it, when it goes,
and what a careless or hostile request gets."""

from __future__ import annotations

import io
import os
import stat
import uuid
import zipfile
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dicomnode.config import Config
from dicomnode.jobs.export import Cohort
from dicomnode.jobs.exports import submit, work_folder
from dicomnode.node import open_archive
from storage.archive import Archive
from tests.conftest import make_config
from tests.s3server import CREDENTIALS, LocalS3
from tests.test_jobs import _fill, _start, _web, export_runner, finished, wait_for

CSRF = {"X-CSRF-Token": "token"}


def _elsewhere(config: Config, tmp_path: Path) -> Config:
    """The same node on another host: its own local data_dir."""
    return replace(config, data_dir=tmp_path / "other-host")


def _unzipped(answer: Any) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(answer.data)) as zipped:
        return zipped.namelist()


def test_a_download_served_by_another_process_finds_the_package(
    config: Config, cohort_archive: Archive, tmp_path: Path
) -> None:
    """Run on one host, downloaded through another's web: the package is in
    the shared store, not in the runner's own data_dir."""
    client = _web(_elsewhere(config, tmp_path), cohort_archive)
    job_id = _start(client)
    with export_runner(config, cohort_archive):
        assert finished(cohort_archive, job_id)["state"] == "done"
    answer = client.get(f"/api/exports/{job_id}/download")
    assert answer.status_code == 200, answer.get_data(as_text=True)[:200]
    assert "DICOMDIR" in _unzipped(answer)
    assert cohort_archive.index.exports.get(job_id)["state"] == "done"
    # Nothing of it is left in the runner's local folder; the stored one is 0600.
    assert [p.name for p in work_folder(config).iterdir()] == []
    (name,) = [n for n, _ in cohort_archive.blobs.packages()]
    handle, size = cohort_archive.blobs.open_package(name)
    with handle:
        assert size == len(answer.data) and stat.S_IMODE(os.fstat(handle.fileno()).st_mode) == 0o600


@pytest.mark.slow
def test_on_an_object_store_with_local_data_dirs_any_process_serves_it(
    tmp_path: Path, s3: LocalS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    bucket = s3.bucket("chd-" + uuid.uuid4().hex[:12])
    config = make_config(tmp_path, blob_url=f"s3://{bucket}/hub", s3_endpoint_url=s3.endpoint)
    archive = open_archive(config)
    try:
        _fill(config, archive)
        client = _web(_elsewhere(config, tmp_path), archive)
        job_id = _start(client)
        with export_runner(config, archive):
            assert finished(archive, job_id)["state"] == "done"
        answer = client.get(f"/api/exports/{job_id}/download")
        assert answer.status_code == 200, answer.get_data(as_text=True)[:200]
        assert "DICOMDIR" in _unzipped(answer)
        assert [n for n, _ in archive.blobs.packages()] == [f"{job_id}.zip"]
        assert [k for k, _ in archive.blobs.listing()] != []  # instances untouched
        assert all(not k.endswith(".zip") for k, _ in archive.blobs.listing())
        assert not list((config.data_dir / "exports").iterdir())
        # Past export_keep_hours the package goes, and the job says so.
        client.application.config["NODE_CONFIG"] = replace(config, export_keep_hours=0)
        assert client.get(f"/api/exports/{job_id}/download").status_code == 410
        assert list(archive.blobs.packages()) == []
        assert archive.index.exports.get(job_id)["state"] == "expired"
    finally:
        archive.close()


def test_an_unreachable_store_answers_503_and_does_not_expire_the_job(
    config: Config, cohort_archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _web(config, cohort_archive)
    job_id = _start(client)
    with export_runner(config, cohort_archive):
        finished(cohort_archive, job_id)

    def down(*args: Any) -> Any:
        raise OSError("object store s3://x/hub: SlowDown")

    monkeypatch.setattr(cohort_archive.blobs, "open_package", down)
    assert client.get(f"/api/exports/{job_id}/download").status_code == 503
    assert cohort_archive.index.exports.get(job_id)["state"] == "done"
    monkeypatch.undo()
    assert client.get(f"/api/exports/{job_id}/download").status_code == 200


def test_an_expired_export_answers_410_every_time(config: Config, cohort_archive: Archive) -> None:
    client = _web(replace(config, export_keep_hours=0), cohort_archive)
    job_id = _start(client)
    with export_runner(config, cohort_archive):
        finished(cohort_archive, job_id)
    for _ in range(2):
        gone = client.get(f"/api/exports/{job_id}/download")
        assert gone.status_code == 410, gone.get_data(as_text=True)[:200]
    assert cohort_archive.index.exports.get(job_id)["state"] == "expired"
    assert list(cohort_archive.blobs.packages()) == []


def test_the_runner_prunes_packages_past_their_hours_and_expires_their_jobs(
    config: Config, cohort_archive: Archive
) -> None:
    first = submit(cohort_archive, "zarina", Cohort(), False)["id"]
    with export_runner(config, cohort_archive):
        finished(cohort_archive, first)
    second = submit(cohort_archive, "zarina", Cohort(), False)["id"]
    with export_runner(replace(config, export_keep_hours=0), cohort_archive):
        finished(cohort_archive, second)
    assert [n for n, _ in cohort_archive.blobs.packages()] == [f"{second}.zip"]
    assert cohort_archive.index.exports.get(first)["state"] == "expired"


def _admin(config: Config, archive: Archive) -> Any:
    from tests.test_viewer import as_user

    client = _web(config, archive)
    from werkzeug.security import generate_password_hash

    from tests.test_viewer import PASSWORD

    archive.index.accounts.add("farrukh", generate_password_hash(PASSWORD), "admin")
    as_user(client, "farrukh")
    return client


@pytest.mark.parametrize(
    ("sent", "linkable"),
    [
        ({"json": {}}, False),
        ({"json": {"linkable": False}}, False),
        ({"json": {"linkable": True}}, True),
        ({"data": {}}, False),
        ({"data": {"linkable": "1"}}, True),  # the form's checkbox
    ],
)
def test_linkable_is_what_was_asked(
    config: Config, archive: Archive, sent: dict[str, Any], linkable: bool
) -> None:
    client = _admin(config, archive)
    started = client.post("/api/exports", headers=CSRF, **sent)
    assert started.status_code == 202, started.get_data(as_text=True)[:200]
    assert started.get_json()["linkable"] is linkable
    assert archive.index.exports.get(started.get_json()["id"])["linkable"] is linkable


@pytest.mark.parametrize(
    "sent",
    [
        {"json": {"linkable": "false"}},  # truthy as a string: a standing key by mistake
        {"json": {"linkable": "0"}},
        {"json": {"linkable": "true"}},
        {"json": {"linkable": 1}},
        {"json": {"linkable": None}},
        {"json": {"linkable": [True]}},
        {"data": {"linkable": "false"}},
        {"data": {"linkable": "on "}},
        {"data": {"linkable": ""}},
    ],
)
def test_linkable_in_any_other_spelling_is_refused(
    config: Config, archive: Archive, sent: dict[str, Any]
) -> None:
    client = _admin(config, archive)
    refused = client.post("/api/exports", headers=CSRF, **sent)
    assert refused.status_code == 400, refused.get_data(as_text=True)[:200]
    assert "linkable" in refused.get_json()["message"]
    assert archive.index.exports.all() == []


def test_leftovers_of_jobs_no_longer_running_are_swept_but_a_running_ones_are_kept(
    config: Config, cohort_archive: Archive
) -> None:
    jobs, folder = cohort_archive.index.exports, work_folder(config)
    folder.mkdir(parents=True, exist_ok=True)
    running = submit(cohort_archive, "li", Cohort(), False)["id"]
    assert [r["id"] for r in jobs.claim("elsewhere-1", 1, timedelta(hours=1))] == [running]
    done = submit(cohort_archive, "li", Cohort(), False)["id"]
    jobs.claim("elsewhere-1", 1, timedelta(hours=1))
    jobs.finish(done, "elsewhere-1", "done")
    leftovers = {
        "running": folder / f"{running}.zip.part",
        "done": folder / f"{done}.zip.part",
        "unknown": folder / "00000000deadbeef.zip.part",
        "unuploaded": folder / f"{done}.zip",
        "staging": folder / f".{done}.zip.staging",
    }
    for name, path in leftovers.items():
        if name == "staging":
            path.mkdir()
            (path / "x.dcm").write_bytes(b"x")
        else:
            path.write_bytes(b"PK half")
    job_id = submit(cohort_archive, "zarina", Cohort(), False)["id"]
    with export_runner(config, cohort_archive):
        assert finished(cohort_archive, job_id)["state"] == "done"
    wait_for(lambda: not leftovers["done"].exists(), 5, "the sweep")
    assert sorted(p.name for p in folder.iterdir()) == [f"{running}.zip.part"]
    # A done job's package left in the work folder (an older version kept
    # them there) is stored on the way, so its download keeps working.
    assert sorted(n for n, _ in cohort_archive.blobs.packages()) == sorted(
        [f"{done}.zip", f"{job_id}.zip"]
    )


@pytest.fixture
def cohort_archive(config: Config, archive: Archive) -> Archive:
    _fill(config, archive)
    return archive


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    from storage.blobs import open_stores

    if request.param == "file":
        return open_stores("", tmp_path)[0]
    server: LocalS3 = request.getfixturevalue("s3")
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    bucket = server.bucket("chd-" + uuid.uuid4().hex[:12])
    return open_stores(f"s3://{bucket}/hub", tmp_path, server.endpoint)[0]


@pytest.mark.slow
def test_every_store_keeps_packages_apart_from_instances(store: Any) -> None:
    big = os.urandom(40 << 20)  # more than one part of a multipart upload
    store.put_package("0123456789abcdef.zip", io.BytesIO(big))
    store.put_package("fedcba9876543210.zip", io.BytesIO(b"PK small"))
    store.put(store.key_for("2.25.1"), b"instance")
    handle, size = store.open_package("0123456789abcdef.zip")
    with handle:
        assert size == len(big) and handle.read() == big
    assert sorted(n for n, _ in store.packages()) == [
        "0123456789abcdef.zip",
        "fedcba9876543210.zip",
    ]
    assert [k for k, _ in store.listing()] == [store.key_for("2.25.1")]
    store.delete_package("0123456789abcdef.zip")
    with pytest.raises(FileNotFoundError):
        store.open_package("0123456789abcdef.zip")
    for hostile in ("../../blobs/ab/cd/x.zip", "x.zip", "0123456789abcdef.dcm", ".zip"):
        with pytest.raises(ValueError, match="escape"):
            store.put_package(hostile, io.BytesIO(b"x"))
        with pytest.raises(ValueError, match="escape"):
            store.open_package(hostile)
