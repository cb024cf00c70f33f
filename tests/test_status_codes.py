"""DICOM status codes are named once, in dicomnode/status.py."""

from __future__ import annotations

import ast
import re
import tokenize
from pathlib import Path

from dicomnode import status
from dicomnode.ingest import validate

ROOT = Path(__file__).resolve().parents[1]
# A status in hex: warning Bxxx, failures Axxx/Cxxx, cancel, pending, 01xx.
LITERAL = re.compile(r"0x(?:[ABC][0-9A-Fa-f]{3}|FE00|FF0[01]|01[0-9A-Fa-f]{2})", re.I)
# Hex that is not a status: tags, masks, Unicode ranges, item tags.
NOT_STATUS = re.compile(r"group|tag|Tag\(|block|ITEM|<= o <=|\(0x[0-9A-F]{4}, ?0x", re.I)


def test_no_status_literal_outside_the_status_module() -> None:
    found = []
    for package in ("dicomnode", "viewer"):
        for path in sorted((ROOT / package).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            if name == "dicomnode/status.py":
                continue
            with path.open("rb") as source:  # numbers in code: not docstrings, not comments
                for token in tokenize.tokenize(source.readline):
                    if token.type != tokenize.NUMBER or not LITERAL.fullmatch(token.string):
                        continue
                    if not NOT_STATUS.search(token.line):
                        found.append(f"{name}:{token.start[0]}: {token.line.strip()}")
    assert not found, "status literals (import them from dicomnode.status):\n" + "\n".join(found)


def test_one_code_has_one_literal() -> None:
    """A second name of a code is an alias (``X = Y``), never a second literal."""
    tree = ast.parse((ROOT / "dicomnode" / "status.py").read_text())
    literal: dict[int, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            (target,) = node.targets
            assert isinstance(target, ast.Name)
            value = node.value.value
            assert value not in literal, f"0x{value:04X} is both {literal[value]} and {target.id}"
            literal[value] = target.id


def test_the_names_the_wire_depends_on() -> None:
    assert (status.SUCCESS, status.PENDING, status.CANCEL) == (0x0000, 0xFF00, 0xFE00)
    assert status.DATA_SET_DOES_NOT_MATCH == status.IDENTIFIER_DOES_NOT_MATCH == 0xA900
    assert status.CANNOT_UNDERSTAND == status.UNABLE_TO_PROCESS == 0xC000
    assert status.FIND_UNABLE_TO_PROCESS == status.UNREADABLE == 0xC001
    assert status.HELD_FOR_REVIEW == status.COERCION_OF_DATA_ELEMENTS == 0xB000
    assert status.MOVE_DESTINATION_UNKNOWN == 0xA801
    assert status.OUT_OF_RESOURCES_SUB_OPERATIONS == 0xA702
    assert status.DIFFERENT_STUDY == 0xC409
    assert status.is_warning(0xB000) and status.is_warning(0xBFFF)
    assert not status.is_warning(0xA900) and not status.is_warning(0x0000)


def test_validate_still_exports_what_its_importers_use() -> None:
    """Others' modules import these from validate: the same objects."""
    assert validate.Rejection is status.Rejection
    assert validate.DATASET_MISMATCH == status.DATA_SET_DOES_NOT_MATCH
    for name in ("OUT_OF_RESOURCES", "UNREADABLE", "PIXEL_DATA_SHORT", "HELD_FOR_REVIEW"):
        assert getattr(validate, name) == getattr(status, name), name
    rejection = status.Rejection(status.BAD_UID, "SOPInstanceUID is missing")
    assert str(rejection) == "0xC002 SOPInstanceUID is missing"
