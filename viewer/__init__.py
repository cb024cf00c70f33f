"""The web viewer (Flask). For now: the app factory, a health check and stats."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify

from dicomnode.config import Config
from storage.archive import Archive


def create_app(config: Config, archive: Archive) -> Flask:
    """Application factory: configuration and archive are passed in, no globals."""
    app = Flask(__name__)
    app.config["NODE_CONFIG"] = config
    app.extensions["archive"] = archive

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok", ae_title=config.ae_title)

    @app.get("/api/stats")
    def stats() -> Any:
        return jsonify(archive.index.stats())

    return app
