"""Print the conformance statement's SOP class tables from the node's AE.

``python -m dicomnode.dimse.conformance`` (docs/conformance.md, section 7).
The tables are `dicomnode.media.sopclasses.conformance_tables` of the
contexts `dicomnode.dimse.server.node_ae` supports; the entry point lives
here because media sits below the DIMSE layer and must not import it.
"""

from __future__ import annotations

from dicomnode.config import Config
from dicomnode.dimse.server import node_ae
from dicomnode.media.sopclasses import conformance_tables


def tables() -> str:
    """The markdown tables for the default configuration's AE."""
    return conformance_tables(node_ae(Config()).supported_contexts)


if __name__ == "__main__":
    print(tables(), end="")
