"""The package layering, checked from the source (every import, including
those inside functions and under TYPE_CHECKING).

From the bottom: storage knows nothing of the node; the foundation (DICOM
encoding in dicomnode.media, the status codes, logging, the package's own
constants) knows only storage; de-identification knows the foundation;
configuration and networking know de-identification; the services (ingest,
jobs, ops, consult) know all of these and each other; the doors (DIMSE, the web
server, the CLI, the viewer) use the services; only the composition root
(dicomnode.node) and the CLI import dicomnode.node, and only the root
imports the viewer, by its package (``create_app``) alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("storage", "dicomnode", "viewer")

# Each module's group: the first prefix that matches (exact name or package).
GROUPS: list[tuple[str, str]] = [
    ("storage", "storage"),
    ("viewer", "viewer"),
    ("dicomnode.media", "foundation"),
    ("dicomnode.status", "foundation"),
    ("dicomnode.logs", "foundation"),
    ("dicomnode.deid", "deid"),
    ("dicomnode.config", "config"),
    ("dicomnode.net", "net"),
    ("dicomnode.ingest", "ingest"),
    ("dicomnode.jobs", "jobs"),
    ("dicomnode.consult", "consult"),
    ("dicomnode.ops", "ops"),
    ("dicomnode.dimse", "dimse"),
    ("dicomnode.web", "web"),
    ("dicomnode.cli", "cli"),
    ("dicomnode.node", "node"),
    ("dicomnode", "foundation"),  # dicomnode/__init__.py: version, implementation UID
]

LOWER = {"storage", "foundation", "deid", "config", "net"}
SERVICES = {"ingest", "jobs", "ops", "consult"}
# The rule: which groups each group may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "storage": set(),
    "foundation": {"storage"},
    "deid": {"storage", "foundation"},
    "config": {"storage", "foundation", "deid"},
    "net": {"storage", "foundation", "deid", "config"},
    "ingest": LOWER | SERVICES,
    "jobs": LOWER | SERVICES,
    "ops": LOWER | SERVICES,
    "consult": LOWER | SERVICES,
    "dimse": LOWER | SERVICES,
    "web": LOWER | SERVICES,
    "cli": LOWER | SERVICES | {"dimse", "web", "node"},
    "viewer": LOWER | SERVICES,
    "node": LOWER | SERVICES | {"dimse", "web", "cli", "viewer"},
}
# Door to door, where one reuses another's logic: (importer, imported) modules.
BETWEEN_DOORS = {
    # QIDO-RS answers with the attributes a C-FIND response would carry.
    ("viewer.dicomweb.qido", "dicomnode.dimse.find"),
}
# The composition root starts the web app through its package only.
ROOT_MAY_IMPORT_FROM_VIEWER = {"viewer"}


def group_of(module: str) -> str | None:
    for prefix, group in GROUPS:
        if module == prefix or module.startswith(prefix + "."):
            return group
    return None


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every project module ``module`` imports, anywhere in its body
    (``from pkg import name`` counts as pkg.name when that is a module)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            found.add(source)
            found |= {f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in known}
    return {name for name in found if name.split(".")[0] in PACKAGES and name != module}


def allowed(module: str, imported: str) -> bool:
    """Whether the table lets ``module`` import ``imported``."""
    mine, theirs = group_of(module), group_of(imported)
    assert mine is not None, f"{module} belongs to no group: add it to GROUPS"
    assert theirs is not None, f"{module} imports {imported}, which is in no group"
    if theirs == mine or (module, imported) in BETWEEN_DOORS:
        return True
    if theirs == "viewer" and imported not in ROOT_MAY_IMPORT_FROM_VIEWER:
        return False
    return theirs in ALLOWED[mine]


def violations() -> set[str]:
    known = modules()
    return {
        f"{module} -> {imported}"
        for module, path in known.items()
        for imported in imports_of(module, path, known)
        if not allowed(module, imported)
    }


def test_every_import_follows_the_layering() -> None:
    new = violations()
    assert not new, "imports against the layering (see the table in this test):\n" + "\n".join(
        sorted(new)
    )


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    """A deferred import is still an import: hiding one in a function or
    under TYPE_CHECKING must not get past the rule."""
    source = tmp_path / "sample.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from dicomnode.config import Config\n"
        "def f():\n    import viewer.exports\n    from ..ingest import validate\n"
    )
    known = {"dicomnode.ingest.validate": source}
    found = imports_of("dicomnode.media.sample", source, known)
    assert {"dicomnode.config", "viewer.exports", "dicomnode.ingest.validate"} <= found


@pytest.mark.parametrize(
    ("module", "imported", "expected"),
    [
        ("storage.index", "dicomnode.status", False),
        ("dicomnode.media.deflate", "dicomnode.ingest.validate", False),
        ("dicomnode.status", "storage.textsafe", True),
        ("dicomnode.deid.pixels", "dicomnode.config", False),
        ("dicomnode.ingest.pipeline", "dicomnode.jobs.export", True),
        ("dicomnode.dimse.server", "dicomnode.node", False),
        ("dicomnode.cli.main", "dicomnode.node", True),
        ("dicomnode.ops.admin", "viewer", False),
        ("viewer.studies", "dicomnode.web.server", False),
        ("dicomnode.node", "viewer", True),
        ("dicomnode.node", "viewer.exports", False),
        ("dicomnode.cli.main", "viewer", False),
        ("dicomnode.config", "dicomnode.net.tls", False),
        ("dicomnode.net.tls", "dicomnode.config", True),
        ("viewer.dicomweb.qido", "dicomnode.dimse.find", True),
        ("viewer.dicomweb.wado", "dicomnode.dimse.retrieve", False),
        ("dicomnode.jobs.forwarding", "dicomnode.dimse.retrieve", False),
    ],
)
def test_the_table_says_what_the_docstring_says(module: str, imported: str, expected: bool) -> None:
    assert allowed(module, imported) is expected
