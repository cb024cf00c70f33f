"""Every TOML example the operator reads must load under the strict loader:
the ```toml blocks of README.md and docs/*.md, and the commented-out
examples in the shipped dicomnode.toml. A block is a fragment, so its keys
and types are checked (`parse`), not the rules between entries (`validate`)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from dicomnode.config import ConfigError, parse

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```toml\s*$\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)


def _blocks() -> list[tuple[str, str]]:
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for number, match in enumerate(FENCE.finditer(text), 1):
            found.append((f"{path.name}#{number}", match.group(1)))
    return found


def _commented_examples() -> list[tuple[str, str]]:
    """The shipped file's commented-out tables, uncommented."""
    found, current = [], None
    for line in (ROOT / "dicomnode.toml").read_text(encoding="utf-8").splitlines():
        body = line[2:] if line.startswith("# ") else None
        if body is not None and re.fullmatch(r"\[\[?\w+\]\]?", body.strip()):
            current = [body]
            found.append((f"dicomnode.toml {body.strip()}", current))
        elif current is not None and body is not None and line.strip() != "#":
            current.append(body)
        else:
            current = None
    return [(name, "\n".join(lines) + "\n") for name, lines in found]


def test_there_are_examples_to_check() -> None:
    assert len(_blocks()) >= 3 and len(_commented_examples()) >= 2


@pytest.mark.parametrize(
    ("name", "text"),
    [pytest.param(name, text, id=name) for name, text in _blocks() + _commented_examples()],
)
def test_documented_example_loads(name: str, text: str) -> None:
    try:
        parse(tomllib.loads(text), name)
    except ConfigError as exc:
        pytest.fail(str(exc))
