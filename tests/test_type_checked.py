"""Inputs the type checker (mypy, [tool.mypy] in pyproject.toml) showed the
code did not handle: a careless caller's value of the wrong kind must give
the node's own error, never a traceback from deep inside a library."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from pydicom.uid import UID
from werkzeug.security import generate_password_hash

from dicomnode.logs import WARNING_WITHHELD, WithheldText
from dicomnode.net.retrieve_syntax import contexts_for
from dicomnode.net.tls import make_ca, make_certificate
from storage.accounts import AccountError
from storage.index import Index


def test_a_warning_record_with_mapping_arguments_is_withheld() -> None:
    """``log.warning("%(x)s", {...})`` on ``py.warnings``: the record has a
    mapping, not a tuple, of arguments; its text is still withheld."""
    record = logging.LogRecord(
        "py.warnings", logging.WARNING, __file__, 1, "%(text)s", ({"text": "AIGERIM"},), None
    )
    assert WithheldText().filter(record)
    assert record.msg == WARNING_WITHHELD
    assert "AIGERIM" not in record.getMessage()


def test_a_ca_key_that_cannot_sign_is_refused_by_name(tmp_path: Path) -> None:
    """An operator's ca.key replaced by a key-agreement key (X25519): a
    ValueError naming the file (`dicomnode tls cert` prints it), not a
    TypeError from cryptography."""
    make_ca(tmp_path)
    key = x25519.X25519PrivateKey.generate()
    (tmp_path / "ca.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError, match=r"ca\.key"):
        make_certificate(tmp_path, "node.example.org", [])
    assert not (tmp_path / "node.example.org.crt").exists()


@pytest.mark.parametrize("sees", [5, True, object()])
def test_sees_that_is_not_a_list_is_an_account_error(tmp_path: Path, sees: object) -> None:
    index = Index(f"sqlite:///{tmp_path / 'index.sqlite'}")
    try:
        index.accounts.add("amina", generate_password_hash("x" * 12), "cardiologist")
        with pytest.raises(AccountError):
            index.accounts.update("amina", sees=sees)
        user = index.accounts.get("amina")
        assert user is not None and user.sees is None  # unchanged
    finally:
        index.engine.dispose()


def test_an_association_with_nothing_to_send_proposes_verification() -> None:
    (context,) = contexts_for([])
    assert context.abstract_syntax == UID("1.2.840.10008.1.1")
