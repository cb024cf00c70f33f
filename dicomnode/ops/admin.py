"""Administrator actions that touch identity: re-identification, quarantine.

Each one writes an audit record (who, what, on which pseudonym or UID) and
none of them logs identity; re-identification prints it to the operator only,
and a held instance is decrypted only into a file the administrator names.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID

from dicomnode.config import Config
from dicomnode.deid.identity import IdentityMatcher
from dicomnode.deid.linkage import LinkageCipher, LinkageError
from dicomnode.deid.pipeline import AWAITING_OCR, LINKAGE_KEY, clean_and_verify
from dicomnode.deid.secret import load_or_create_key
from dicomnode.ingest.pipeline import NO_IDENTITY, RELEASE_EVENT, Ingestor, Outcome
from storage.archive import Archive, HeldBlobError
from storage.audit import MINOR_FAILURE, SUCCESS


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


# Audit events of the quarantine tools: showing writes an instance out of the
# node into a file (PS3.15 A.5.3.6 Export); releasing and refusing are
# decisions on a held instance.
SHOW_EVENT = "quarantine-show"
DECISION_EVENT = RELEASE_EVENT
REFUSE_EVENT = "quarantine-refuse"


@dataclass(frozen=True)
class HeldOutcome:
    """What became of one held instance: one line of the command's output."""

    uid: str
    done: bool
    note: str


def _held(archive: Archive, uid: str) -> dict[str, Any] | None:
    rows = archive.index.quarantined(uid)
    return rows[0] if rows else None


def show_quarantined(archive: Archive, uid: str, out: Path) -> int:
    """Write a held instance, decrypted, to ``out`` (created 0600, never
    overwritten) for the administrator to review; returns its size."""
    if _held(archive, uid) is None:
        raise AdminError(f"{uid} is not held")
    try:
        data = archive.read_held(uid)
    except (HeldBlobError, OSError) as exc:
        raise AdminError(f"{uid} cannot be read: {exc}") from None
    assert data is not None  # held: checked above
    try:
        descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise AdminError(f"{out} exists; not overwriting it") from None
    except OSError as exc:
        raise AdminError(f"cannot create {out}: {exc.strerror}") from None
    with os.fdopen(descriptor, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)  # whatever the umask
        handle.write(data)
    _audit(archive, SHOW_EVENT, uid, f"held instance decrypted for review into {out.resolve()}")
    return len(data)


def release_quarantined(
    config: Config,
    archive: Archive,
    only: Iterable[str] | None = None,
    *,
    reviewed: bool = False,
) -> list[HeldOutcome]:
    """Store held instances: re-checked with today's cleaning rules (those
    now clean), or, ``reviewed``, as they are held (an administrator looked
    at each and found no identity in it; only for instances named in ``only``).

    The held copy is already de-identified in its header, so only the pixel
    step runs again. Each is stored by the Ingestor (`Ingestor.release`), as
    any instance is; one that cannot be is named with why, and the rest go on.
    """
    named = list(dict.fromkeys(only or ()))
    if reviewed and not named:
        raise AdminError("--reviewed releases only the instances named, each one reviewed")
    try:
        ingestor = Ingestor(config, archive)  # the store every door takes
    except RuntimeError as exc:  # its keys (deid.key, linkage.key) unusable
        raise AdminError(f"releasing needs the node's keys: {exc}") from None
    rows = {row["sopinstanceuid"]: row for row in archive.index.quarantined()}
    outcomes = []
    for uid in named or list(rows):  # in the order named, else oldest first
        if uid not in rows:
            outcomes.append(HeldOutcome(uid, False, "not held"))
            continue
        if rows[uid]["reason"] == AWAITING_OCR and not reviewed:
            # The verifier reads it with every identity value of the header as
            # received; a re-check here would know only the sealed linkage.
            outcomes.append(HeldOutcome(uid, False, f"still held: {AWAITING_OCR}"))
            continue
        try:
            outcomes.append(_release(config, ingestor, rows[uid], reviewed))
        except (HeldBlobError, OSError) as exc:
            outcomes.append(HeldOutcome(uid, False, f"cannot be read: {exc}"))
        except Exception as exc:  # the re-check on pixels no decoder takes, say
            outcomes.append(HeldOutcome(uid, False, f"not released: {type(exc).__name__}"))
    return outcomes


def _release(
    config: Config, ingestor: Ingestor, held: dict[str, Any], reviewed: bool
) -> HeldOutcome:
    archive = ingestor.archive
    uid = held["sopinstanceuid"]
    data = archive.open_held(uid, archive.held.read(held["blob_key"]), bool(held["sealed"]))
    try:
        ds = dcmread(BytesIO(data))
    except Exception as exc:  # whatever pydicom raises on a damaged file
        raise HeldBlobError(f"unreadable ({type(exc).__name__})") from None
    user = getpass.getuser()
    part10: bytes | None = data  # as held, byte for byte, when reviewed
    if reviewed:
        note = f"reviewed by {user}, stored as held"
    else:
        why = _recheck(config, ingestor, ds, held)
        if why:
            return HeldOutcome(uid, False, f"still held: {why}")
        note, part10 = "pixels cleaned by a rule", None
    result = ingestor.release(held, ds, user=user, decision=note, part10=part10)
    if result.outcome is Outcome.REJECTED:
        return HeldOutcome(uid, False, f"not stored: {result.comment}")
    return HeldOutcome(uid, True, note)


def _recheck(config: Config, ingestor: Ingestor, ds: Dataset, held: dict[str, Any]) -> str | None:
    """Today's pixel rules (the sender's de-identification policy, as the
    ingest resolves it), then the same OCR verification as the ingest, on a
    held data set: why it stays held (None: clean, marked so, its file meta
    naming the syntax it is now in). Only a verified image is marked
    BurnedInAnnotation NO."""
    policy = ingestor.deidentify.policy_for(held["sending_ae"])
    matcher = _held_identity(config, ingestor.archive, held)
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    cleaned, _, why = clean_and_verify(
        ds, syntax, policy.blank_rectangles, matcher, ingestor.deidentify.ocr
    )
    if not (cleaned or why):
        why = held["reason"]  # no rule cleans it yet
    if not why and NO_IDENTITY in held["reason"]:
        why = NO_IDENTITY  # clean pixels do not say who the child is: a person must
    return why


def _held_identity(config: Config, archive: Archive, held: dict[str, Any]) -> IdentityMatcher:
    """What OCR looks for in a held image: the child's sealed identity when
    linkage.key is at hand (the header it came with is gone), else nothing
    (text where the node blanked still keeps it held)."""
    rows = archive.index.linkage_for(held["studyinstanceuid"])
    try:
        cipher = linkage_cipher(config)
        found = [cipher.open(sealed, pseudonym, study) for study, pseudonym, sealed in rows]
    except (RuntimeError, LinkageError):
        found = []
    return IdentityMatcher.from_values(pair for who in found for pair in who.values())


def refuse_quarantined(archive: Archive, uids: list[str], why: str) -> list[HeldOutcome]:
    """Delete held instances and their rows for good (the administrator
    decided they are not to be kept); ``why`` goes into the audit record."""
    why = " ".join(why.split())
    if not why:
        raise AdminError("say why (--why TEXT): it goes into the audit trail")
    outcomes = []
    for uid in dict.fromkeys(uids):
        if _held(archive, uid) is None:
            outcomes.append(HeldOutcome(uid, False, "not held"))
            continue
        archive.forget_quarantined(uid)
        _audit(archive, REFUSE_EVENT, uid, f"refused, deleted: {why}")
        outcomes.append(HeldOutcome(uid, True, f"deleted ({why})"))
    return outcomes


def _audit(archive: Archive, event: str, uid: str, detail: str) -> None:
    """One record of an administrator's command on a held instance."""
    archive.index.audit.record(event, user=getpass.getuser(), source="cli", obj=uid, detail=detail)
