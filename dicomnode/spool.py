"""The spool: where an instance too large to hold in memory waits while it
is checked and de-identified.

It arrives with the sender's identity in it, and nothing identifying may
be written in the clear, so every spool file is encrypted (AES-256 in CTR
mode, which allows reading at any offset) under a key that exists only in
this process's memory, and is nameless (``O_TMPFILE`` where the file system
has it, else unlinked at once): a crash leaves nothing a reader could
decrypt and, on Linux, nothing at all. The directory is private (0700),
never inside ``data_dir``, and emptied of what dead processes left at start.
Confidentiality at rest is the aim: a local user who can already write the
node's private files could alter spooled bytes; no MAC is kept for that.
"""

from __future__ import annotations

import io
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

log = logging.getLogger(__name__)
BLOCK = 16
CHUNK = 1 << 20


def default_directory() -> Path:
    """Under the system's temporary directory, one per user."""
    return Path(tempfile.gettempdir()) / f"chdnode-spool-{os.getuid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SpoolFile:
    """An append-then-read file, encrypted, that vanishes when closed."""

    def __init__(self, directory: Path, key: bytes) -> None:
        self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 nameless (O_TMPFILE), closed by close()
        self._key = key
        self._nonce = secrets.token_bytes(8)  # per file: one key, many files
        self._encryptor = self._cipher(0).encryptor()
        self.size = 0

    def _cipher(self, block: int) -> Cipher:
        counter = self._nonce + block.to_bytes(8, "big")
        return Cipher(algorithms.AES(self._key), modes.CTR(counter))

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data`` (writes only ever append)."""
        self._file.seek(0, io.SEEK_END)
        self._file.write(self._encryptor.update(bytes(data)))
        self.size += len(data)
        return len(data)

    def read_at(self, offset: int, length: int) -> bytes:
        """Up to ``length`` clear bytes from ``offset``."""
        length = max(0, min(length, self.size - offset))
        if length == 0:
            return b""
        self._file.seek(offset)
        cipher_text = self._file.read(length)
        block, skip = divmod(offset, BLOCK)
        decryptor = self._cipher(block).decryptor()
        decryptor.update(bytes(skip))
        return decryptor.update(cipher_text)

    def chunks(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The clear bytes from ``start`` to ``end``, a megabyte at a time."""
        end = self.size if end is None else min(end, self.size)
        while start < end:
            piece = self.read_at(start, min(CHUNK, end - start))
            start += len(piece)
            yield piece

    def reader(self) -> io.BufferedReader:
        """A seekable binary file object over the clear bytes (for pydicom)."""
        return io.BufferedReader(_Reader(self), buffer_size=CHUNK)

    def getvalue(self) -> bytes:
        """Everything, in memory: only for what is known to be small."""
        return self.read_at(0, self.size)

    def __len__(self) -> int:
        return self.size

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SpoolFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Reader(io.RawIOBase):
    def __init__(self, spooled: SpoolFile) -> None:
        self._spooled = spooled
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._spooled.size}
        self._position = max(0, base[whence] + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        data = self._spooled.read_at(self._position, len(buffer))
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)


class Spool:
    """This process's spool directory and key."""

    def __init__(self, directory: Path | None = None) -> None:
        root = directory if directory and str(directory) not in ("", ".") else default_directory()
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        self._wipe_dead(root)
        self.directory = root / f"{os.getpid()}-{secrets.token_hex(4)}"
        self.directory.mkdir(mode=0o700)
        self._key = secrets.token_bytes(32)

    @staticmethod
    def _wipe_dead(root: Path) -> None:
        """Remove what processes that are gone left behind (nameless files
        leave nothing; a file system without O_TMPFILE might)."""
        for child in root.iterdir():
            pid = child.name.split("-", 1)[0]
            if not pid.isdigit() or not _alive(int(pid)):
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(
                    missing_ok=True
                )
                log.info("spool: removed what an ended process left (%s)", child.name)

    def open(self) -> SpoolFile:
        return SpoolFile(self.directory, self._key)

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
