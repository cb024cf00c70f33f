"""The node's services as the web sees them: one typed accessor per service.

Views call ``archive()``, ``ingestor()`` and ``config()`` instead of looking
up ``current_app.extensions["archive"]`` by string, so a typo is an import
error and the type checker knows what comes back. ``install`` is the one
place that registers them (the storage keys stay as they were: tests and
tools read ``app.extensions["archive"]`` and ``app.config["NODE_CONFIG"]``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from flask import Flask, current_app

if TYPE_CHECKING:
    from dicomnode.config import Config
    from dicomnode.ingest.pipeline import Ingestor
    from storage.archive import Archive

ARCHIVE = "archive"
INGESTOR = "ingestor"
CONFIG = "NODE_CONFIG"  # in app.config, next to Flask's own settings


def install(app: Flask, config: Config, archive: Archive, ingestor: Ingestor) -> None:
    """Register the node's services on ``app`` (called once by ``create_app``)."""
    app.config[CONFIG] = config
    app.extensions[ARCHIVE] = archive
    app.extensions[INGESTOR] = ingestor


def archive() -> Archive:
    """The archive (index and blobs) of the running app."""
    return cast("Archive", current_app.extensions[ARCHIVE])


def ingestor() -> Ingestor:
    """The ingestor that validates and stores what the web receives."""
    return cast("Ingestor", current_app.extensions[INGESTOR])


def config() -> Config:
    """The node's configuration."""
    return cast("Config", current_app.config[CONFIG])
