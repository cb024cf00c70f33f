import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.blobs import read_ahead
from storage.fileblobs import FileBlobStore as BlobStore


def test_path_is_a_digest_of_the_uid_never_the_uid(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    key = store.key_for("1.2.3.4")
    assert "1.2.3.4" not in key
    assert key == store.key_for("1.2.3.4")
    assert key != store.key_for("1.2.3.5")
    assert key.count("/") == 2 and key.endswith(".dcm")


def test_put_is_whole_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    key = store.key_for("1.2.3")
    store.put(key, b"first")
    store.put(key, b"second")
    assert store.read(key) == b"second"
    assert list((tmp_path / ".tmp").rglob("*.part")) == []


def test_interrupted_writes_are_dropped_at_start_but_not_a_live_writers(
    tmp_path: Path,
) -> None:
    """Several processes share a store: only a dead writer's temp files go."""
    host = socket.gethostname()
    dead = tmp_path / ".tmp" / f"{host}-{_dead_pid()}"
    other_host = tmp_path / ".tmp" / "pacs-2-4242"
    old_other_host = tmp_path / ".tmp" / "pacs-3-4242"
    for folder in (dead, other_host, old_other_host):
        folder.mkdir(parents=True)
        (folder / "half.part").write_bytes(b"never acknowledged")
    os.utime(old_other_host, (0, 0))
    (tmp_path / ".tmp" / "stray.part").write_bytes(b"from the single-process layout")
    store = BlobStore(tmp_path)
    left = sorted(p.name for p in (tmp_path / ".tmp").iterdir())
    assert left == sorted([store._tmp.name, other_host.name])
    assert oct(store._tmp.stat().st_mode & 0o777) == "0o700"


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    with pytest.raises(TypeError):
        store.put(store.key_for("1.2"), "not bytes")  # type: ignore[arg-type]
    assert not store.exists(store.key_for("1.2"))
    assert list((tmp_path / ".tmp").rglob("*.part")) == []


def test_key_cannot_escape_the_store(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    with pytest.raises(ValueError, match="escape"):
        store.put("../../outside.dcm", b"x")
    assert not (tmp_path / "outside.dcm").exists()


def test_chunks_read_ahead_arrive_in_order_and_errors_reach_the_writer(tmp_path: Path) -> None:
    """`read_ahead` makes chunks in another thread: the same bytes, the
    same order, and a failure while making them fails the write (no blob)."""
    chunks = [bytes([i]) * (1000 + i) for i in range(50)]
    assert list(read_ahead(iter(chunks))) == chunks

    def broken() -> Iterator[bytes]:
        yield b"a" * 10
        raise OSError("the spool went away")

    store = BlobStore(tmp_path / "blobs")
    key = store.key_for("1.2.3")
    with pytest.raises(OSError, match="spool went away"):
        store.put_stream(key, broken())
    assert not store.exists(key)


def test_a_writer_that_stops_early_stops_the_reader() -> None:
    made: list[int] = []

    def endless() -> Iterator[bytes]:
        for i in range(10**6):
            made.append(i)
            yield b"x"

    ahead = read_ahead(endless())
    assert next(ahead) == b"x"
    ahead.close()
    for thread in threading.enumerate():
        if thread.name == "read-ahead":
            thread.join(timeout=60)
            assert not thread.is_alive()
    assert len(made) <= 5  # the one read, two queued, one waiting to be
