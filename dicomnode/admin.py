"""Administrator actions that touch identity: re-identification, quarantine.

Each one writes an audit record (who, what, on which pseudonym or UID) and
none of them logs identity; re-identification prints it to the operator only.
"""

from __future__ import annotations

import getpass
from dataclasses import asdict
from io import BytesIO
from typing import Any

from pydicom import dcmread
from pydicom.uid import UID

from dicomnode.config import Config
from dicomnode.deid.header import HeaderDeidentifier
from dicomnode.deid.linkage import LinkageCipher
from dicomnode.deid.pipeline import LINKAGE_KEY, encode
from dicomnode.deid.pixels import clean
from dicomnode.deid.profile import Option
from dicomnode.deid.secret import load_or_create_key
from dicomnode.filemeta import file_meta
from storage.archive import Archive
from storage.audit import MINOR_FAILURE, SUCCESS
from storage.record import record_from_dataset


class AdminError(RuntimeError):
    """The action cannot be done; the message says why, in one line."""


def linkage_cipher(config: Config) -> LinkageCipher:
    """The cipher of the sealed identities (KeyFileError without linkage.key)."""
    return LinkageCipher(
        load_or_create_key(config.key_dir / LINKAGE_KEY, config.data_dir, create=False)
    )


def reidentify(config: Config, archive: Archive, value: str) -> list[dict[str, Any]]:
    """The original identity behind a pseudonym or a (new) Study Instance UID."""
    try:
        cipher = linkage_cipher(config)
    except RuntimeError as exc:
        raise AdminError(f"re-identification needs the linkage key: {exc}") from None
    rows = archive.index.linkage_for(value.strip())
    archive.index.audit.record(
        "reidentify",
        user=getpass.getuser(),
        source="cli",
        obj=value.strip(),
        detail=f"{len(rows)} studies",
        outcome=SUCCESS if rows else MINOR_FAILURE,
    )
    if not rows:
        raise AdminError(f"no study or pseudonym {value.strip()!r} in the linkage table")
    found = []
    for study_uid, pseudonym, sealed in rows:
        identity = cipher.open(sealed, pseudonym, study_uid)
        found.append({"pseudonym": pseudonym, "study_uid": study_uid, **asdict(identity)})
    return found


def release_quarantined(config: Config, archive: Archive, only: set[str] | None = None) -> int:
    """Re-check held instances with today's cleaning rules; store those now clean.

    The held copy is already de-identified in its header, so only the pixel
    step runs again. Returns how many were released.
    """
    released = 0
    for held in archive.index.quarantined():
        uid = held["sopinstanceuid"]
        if only is not None and uid not in only:
            continue
        ds = dcmread(BytesIO(archive.held.read(held["blob_key"])))
        remote = config.remote(held["sending_ae"])
        outcome = clean(
            ds,
            UID(ds.file_meta.TransferSyntaxUID),
            rectangles=remote.blank_rectangles if remote else (),
        )
        if outcome.quarantine or not outcome.cleaned:
            continue
        HeaderDeidentifier.add_method_code(ds, Option.CLEAN_PIXEL_DATA)
        syntax = UID(outcome.transfer_syntax)
        record = record_from_dataset(
            ds, issuer=held["issuer"], transfer_syntax=syntax, sending_ae=held["sending_ae"]
        )
        data = file_meta(str(ds.SOPClassUID), uid, syntax, held["sending_ae"]) + encode(ds, syntax)
        archive.store(record, data)
        archive.index.remove_quarantined(uid)
        archive.held.delete(held["blob_key"])
        archive.index.audit.record(
            "quarantine-release",
            user=getpass.getuser(),
            source="cli",
            obj=uid,
            detail="pixels cleaned by a rule",
        )
        released += 1
    return released
