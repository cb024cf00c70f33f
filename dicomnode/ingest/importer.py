"""``dicomnode import PATH...``: files and folders through the same ingest."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from pydicom.errors import InvalidDicomError
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import ImplicitVRLittleEndian
from tqdm import tqdm

from dicomnode.ingest.pipeline import KEPT_APART, Incoming, Ingestor, Outcome
from storage.values import normalise_issuer


@dataclass
class ImportSummary:
    counts: Counter = field(default_factory=Counter)
    # Paths of files that were refused, with the reason (shown to the operator
    # who chose them; never logged).
    rejected: list[tuple[Path, str]] = field(default_factory=list)

    def line(self) -> str:
        c = self.counts
        return (
            f"{c['stored']} stored, {c['replaced']} replaced, {c['duplicate']} duplicates, "
            f"{c['quarantined']} quarantined, {c['rejected']} rejected"
            + (
                f" ({c['kept apart']} kept apart: UIDs of another child's study)"
                if c["kept apart"]
                else ""
            )
        )


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Files named, and every file below folders named (hidden ones skipped)."""
    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith(".") and name != "DICOMDIR":
                        yield Path(root) / name
        else:
            yield path


def split_file(raw: bytes) -> tuple[bytes, str]:
    """The encoded dataset and its transfer syntax, from a Part 10 file.

    A file without preamble and meta is read as Implicit VR Little Endian,
    the one encoding such legacy files can be assumed to use.
    """
    offset, transfer_syntax = dataset_offset(raw)
    return raw[offset:], transfer_syntax


def dataset_offset(head: bytes) -> tuple[int, str]:
    """Where the data set starts in a Part 10 file and its transfer syntax,
    from the file's first bytes (``head`` needs to hold the meta group only,
    so a streamed upload is split without holding the rest)."""
    stream = BytesIO(head)
    try:
        read_preamble(stream, force=False)
    except InvalidDicomError:
        if head[:2] == b"\x02\x00":
            stream.seek(0)  # a file meta group without preamble (some DICOMweb clients)
        elif len(head) >= 8 and head[:2] == b"\x08\x00":
            return 0, ImplicitVRLittleEndian  # a bare data set
        else:
            raise
    meta = _read_file_meta_info(stream)
    transfer_syntax = meta.get("TransferSyntaxUID")
    if not transfer_syntax:
        raise ValueError("file meta has no Transfer Syntax UID")
    return stream.tell(), str(transfer_syntax)


def import_paths(
    ingestor: Ingestor, paths: list[Path], *, issuer: str | None, progress: bool = True
) -> ImportSummary:
    """``issuer`` is normalised (`normalise_issuer`) as at every door: one
    hospital, one issuer, however the operator typed it."""
    summary = ImportSummary()
    issuer = normalise_issuer(issuer or "") or None
    files = list(iter_files(paths))
    for path in tqdm(files, unit="file", disable=not progress, desc="import"):
        try:
            data, transfer_syntax = split_file(path.read_bytes())
        except (OSError, ValueError, InvalidDicomError) as exc:
            summary.counts["rejected"] += 1
            summary.rejected.append((path, f"not a DICOM file ({type(exc).__name__})"))
            continue
        result = ingestor.ingest(
            Incoming(data=data, transfer_syntax=transfer_syntax, calling_ae=None, issuer=issuer)
        )
        summary.counts[result.outcome.value] += 1
        if result.outcome is Outcome.STORED and result.status == KEPT_APART:
            summary.counts["kept apart"] += 1
        if result.outcome is Outcome.REJECTED:
            summary.rejected.append((path, f"0x{result.status:04X} {result.comment}"))
    return summary
