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
import re
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
        view = memoryview(data).cast("B")
        self._file.seek(0, io.SEEK_END)
        for start in range(0, len(view), CHUNK):  # a megabyte of cipher text at a time
            self._file.write(self._encryptor.update(view[start : start + CHUNK]))
        self.size += len(view)
        return len(view)

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

    def view(self) -> Window:
        """Slices of the clear bytes through a small cache (for the integrity walk)."""
        return Window(self)

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


class Window:
    """``len()`` and ``[start:stop]`` over a spool file, read a window at a
    time: the integrity walk reads element headers and skips values, so a
    gigabyte of pixel data costs it a few reads."""

    SIZE = 64 << 10

    def __init__(self, spooled: SpoolFile) -> None:
        self._spooled = spooled
        self._start = 0
        self._data = b""

    def __len__(self) -> int:
        return self._spooled.size

    def __getitem__(self, key: slice) -> bytes:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("a spool window takes slices only")
        start, stop, _ = key.indices(self._spooled.size)
        if stop <= start:
            return b""
        cached = self._start <= start and stop <= self._start + len(self._data)
        if not cached:
            if stop - start > self.SIZE:
                return self._spooled.read_at(start, stop - start)
            self._start, self._data = start, self._spooled.read_at(start, self.SIZE)
        return self._data[start - self._start : stop - self._start]


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


Part = bytes | SpoolFile | tuple[SpoolFile, int, int]


class Pieces:
    """A byte stream made of bytes in memory and ranges of spool files, read
    a megabyte at a time: what is stored for a large instance is assembled
    from the re-encoded header and the spooled pixel data without joining
    them. The spool files it ``owns`` are closed with it."""

    def __init__(self, parts: list[Part | Pieces], owns: list[SpoolFile] | None = None) -> None:
        self._parts: list[bytes | tuple[SpoolFile, int, int]] = []
        for part in parts:
            if isinstance(part, Pieces):  # its parts (it keeps what it owns)
                self._parts.extend(part._parts)
                continue
            if isinstance(part, SpoolFile):
                part = (part, 0, part.size)
            if isinstance(part, tuple) and part[2] <= part[1]:
                continue
            if part:
                self._parts.append(part)
        self.owns = list(owns or [])
        self.size = sum(p[2] - p[1] if isinstance(p, tuple) else len(p) for p in self._parts)

    def __len__(self) -> int:
        return self.size

    def chunks(self) -> Iterator[bytes]:
        """The bytes, in order; may be called again (each call reads anew)."""
        for part in self._parts:
            if isinstance(part, tuple):
                yield from part[0].chunks(part[1], part[2])
            else:
                for start in range(0, len(part), CHUNK):
                    yield part[start : start + CHUNK]

    def getvalue(self) -> bytes:
        """Everything, in memory: only for what is known to be small."""
        return b"".join(self.chunks())

    def close(self) -> None:
        for spooled in self.owns:
            spooled.close()
        self.owns = []


class Spilling:
    """Bytes written in memory up to ``threshold``, into a spool file beyond
    (without a spool, all in memory): whoever writes need not know in
    advance how large the result will be (an inflated data set)."""

    def __init__(self, spool: Spool | None, threshold: int) -> None:
        self._spool, self._threshold = spool, threshold
        self._memory = bytearray()
        self.spooled: SpoolFile | None = None
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.size += len(data)
        if self.spooled is not None:
            return self.spooled.write(data)
        self._memory += data
        if self._spool is not None and len(self._memory) > self._threshold:
            self.spooled = self._spool.open()
            self.spooled.write(self._memory)
            self._memory = bytearray()
        return len(data)

    def result(self) -> bytes | SpoolFile:
        """What was written: bytes, or the spool file (the caller's to close)."""
        if self.spooled is not None:
            return self.spooled
        return bytes(self._memory)

    def discard(self) -> None:
        self._memory = bytearray()
        if self.spooled is not None:
            self.spooled.close()
            self.spooled = None


# A process's spool entry: "<pid>-<8 hex>" (`Spool.directory`).
_ENTRY = re.compile(r"([0-9]+)-[0-9a-f]{8}")


class Spool:
    """This process's spool directory and key."""

    def __init__(self, directory: Path | None = None) -> None:
        root = directory if directory and str(directory) not in ("", ".") else default_directory()
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._wipe_dead(root)
        # 0700 whatever the umask, when the folder is the spool's alone; a
        # folder that also holds what others made keeps its mode (this
        # process's own entry is 0700 either way).
        if all(_ENTRY.fullmatch(child.name) for child in root.iterdir()):
            os.chmod(root, 0o700)
        self.directory = root / f"{os.getpid()}-{secrets.token_hex(4)}"
        self.directory.mkdir(mode=0o700)
        self._key = secrets.token_bytes(32)

    @staticmethod
    def _wipe_dead(root: Path) -> None:
        """Remove what processes that are gone left behind (nameless files
        leave nothing; a file system without O_TMPFILE might)."""
        for child in root.iterdir():
            entry = _ENTRY.fullmatch(child.name)  # only what a spool made
            if entry is not None and not _alive(int(entry.group(1))):
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(
                    missing_ok=True
                )
                log.info("spool: removed what an ended process left (%s)", child.name)

    def open(self) -> SpoolFile:
        return SpoolFile(self.directory, self._key)

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
