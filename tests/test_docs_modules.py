"""docs/architecture.md names every module the code has, and no module it
no longer has: a newcomer reads the layout there first."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
PACKAGES = ("dicomnode", "storage", "viewer")


def modules() -> set[str]:
    """Every Python module of the shipped packages, as a repository path
    (package ``__init__`` and ``__main__`` files and migrations aside)."""
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            relative = path.relative_to(ROOT).as_posix()
            if path.name in ("__init__.py", "__main__.py") or "/migrations/" in relative:
                continue
            found.add(relative)
    return found


def named() -> set[str]:
    """The module paths the document names in backticks."""
    return set(re.findall(r"`((?:dicomnode|storage|viewer)/[\w/]+\.py)`", DOC))


def test_every_module_is_in_the_architecture_document() -> None:
    missing = sorted(modules() - named())
    assert not missing, f"docs/architecture.md does not name: {missing}"


def test_the_architecture_document_names_no_module_that_is_gone() -> None:
    gone = sorted(path for path in named() if not (ROOT / path).exists())
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"
