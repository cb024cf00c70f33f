"""The original identity, kept only encrypted, for re-identification with a key.

One record per de-identified study: who the child was at the sending
hospital. AES-256-GCM with a random nonce; the new Study Instance UID and the
pseudonym are bound in as associated data, so a record cannot be moved to
another study without the decryption failing.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class LinkageError(RuntimeError):
    """A record cannot be decrypted with this key (wrong key or tampered)."""


@dataclass(frozen=True)
class OriginalIdentity:
    issuer: str
    patient_id: str
    patient_name: str
    birth_date: str
    accession_number: str
    study_instance_uid: str
    sending_ae: str
    # The instance's own IssuerOfPatientID (and qualifiers), sealed rather
    # than shown: the hospital is always the configured sender's issuer.
    own_issuer: str = ""

    def values(self) -> list[tuple[str, str]]:
        """What the descriptor cleaner and OCR look for, as (kind, value)."""
        pairs = [
            ("name", self.patient_name),
            ("id", self.patient_id),
            ("id", self.accession_number),
            ("date", self.birth_date),
        ]
        return [(kind, value) for kind, value in pairs if value]


class LinkageCipher:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key[:32])

    def seal(self, identity: OriginalIdentity, pseudonym: str, study_uid: str) -> bytes:
        nonce = os.urandom(12)
        plain = json.dumps(asdict(identity), ensure_ascii=False).encode("utf-8")
        return nonce + self._aead.encrypt(nonce, plain, f"{pseudonym}|{study_uid}".encode())

    def open(self, sealed: bytes, pseudonym: str, study_uid: str) -> OriginalIdentity:
        try:
            plain = self._aead.decrypt(
                sealed[:12], sealed[12:], f"{pseudonym}|{study_uid}".encode()
            )
        except InvalidTag:
            raise LinkageError("linkage record does not open with this key") from None
        return OriginalIdentity(**json.loads(plain))
