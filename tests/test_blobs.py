import os
from pathlib import Path

import pytest

from storage.blobs import BlobStore


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
    assert os.listdir(tmp_path / ".tmp") == []


def test_interrupted_writes_are_dropped_at_start(tmp_path: Path) -> None:
    BlobStore(tmp_path)
    (tmp_path / ".tmp" / "half.part").write_bytes(b"never acknowledged")
    BlobStore(tmp_path)
    assert os.listdir(tmp_path / ".tmp") == []
    assert oct((tmp_path / ".tmp").stat().st_mode & 0o777) == "0o700"


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    with pytest.raises(TypeError):
        store.put(store.key_for("1.2"), "not bytes")  # type: ignore[arg-type]
    assert not store.exists(store.key_for("1.2"))
    assert os.listdir(tmp_path / ".tmp") == []


def test_key_cannot_escape_the_store(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    with pytest.raises(ValueError, match="escape"):
        store.put("../../outside.dcm", b"x")
    assert not (tmp_path / "outside.dcm").exists()
