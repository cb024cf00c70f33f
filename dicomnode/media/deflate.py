"""Deflated Explicit VR Little Endian (PS3.5 A.5), inflated with a bound.

A few hundred kilobytes of deflate can inflate to gigabytes, and the size
limits count bytes on the wire: inflating is where a bomb goes off. One
function inflates for the whole node, never past the instance limit (the
largest data set the node would accept uncompressed) and never more than
the spool threshold in memory: beyond it the output goes into the spool.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

from dicomnode.media.spool import CHUNK, Spilling, Spool, SpoolFile
from dicomnode.status import OUT_OF_RESOURCES, UNREADABLE, Rejection

LEVEL = 6  # as the node has always deflated what it re-encodes


def _pieces(data: bytes | SpoolFile) -> Iterator[bytes]:
    if isinstance(data, SpoolFile):
        yield from data.chunks()
    else:
        view = memoryview(data)
        for start in range(0, len(view), CHUNK):
            yield view[start : start + CHUNK].tobytes()


def inflate(
    data: bytes | SpoolFile, *, limit: int, spool: Spool | None = None, threshold: int = 0
) -> bytes | SpoolFile:
    """The inflated data set: bytes, or (beyond ``threshold`` with a spool) a
    spool file the caller closes. Raises `Rejection`: out of resources past
    ``limit`` bytes, unreadable when corrupt or truncated."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = Spilling(spool, threshold if spool is not None else limit)
    try:
        for piece in _pieces(data):
            while piece and not inflater.eof:
                # At most a chunk out per call: a bomb never inflates past the
                # limit by more than that.
                out.write(inflater.decompress(piece, CHUNK))
                piece = inflater.unconsumed_tail
                if out.size > limit:
                    raise Rejection(
                        OUT_OF_RESOURCES,
                        f"deflated data inflates beyond the limit of {limit >> 20} MiB",
                    )
            if inflater.eof:
                break  # what follows the stream is padding
        if not inflater.eof:
            raise Rejection(UNREADABLE, "deflated stream is truncated")
    except zlib.error:
        out.discard()
        raise Rejection(UNREADABLE, "deflated stream is corrupt") from None
    except BaseException:
        out.discard()
        raise
    return out.result()


def deflate(pieces: Iterable[bytes], spool: Spool) -> SpoolFile:
    """``pieces`` deflated into a spool file, padded to an even length."""
    packer = zlib.compressobj(LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = spool.open()
    try:
        for piece in pieces:
            out.write(packer.compress(piece))
        out.write(packer.flush())
        if out.size % 2:
            out.write(b"\x00")
    except BaseException:
        out.close()
        raise
    return out
