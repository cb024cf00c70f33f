"""The web viewer (Flask): log in, find a study, play its echo and angio cine."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from flask import Flask, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from dicomnode.config import Config
from dicomnode.ingest.pipeline import Ingestor
from storage.archive import Archive

log = logging.getLogger(__name__)


def create_app(
    config: Config, archive: Archive, secret_key: bytes, ingestor: Ingestor | None = None
) -> Flask:
    """Application factory: configuration, archive, session key (and the
    ingestor that stores the node's own reports) are passed in."""
    from viewer import (
        admin,
        auth,
        cases,
        dicomweb,
        exports,
        frames,
        i18n,
        ohif,
        scope,
        security,
        services,
        studies,
    )
    from viewer.bodylimit import install as limit_bodies
    from viewer.cors import install as allow_origins
    from viewer.planning import measure
    from viewer.planning import pages as planning_pages
    from viewer.planning import routes as planning

    app = Flask(__name__)
    services.install(app, config, archive, ingestor or Ingestor(config, archive))
    app.config.update(
        SECRET_KEY=secret_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
    )
    security.install(app, config)
    allow_origins(app, config)  # before login: a CORS preflight carries no credentials
    limit_bodies(app)  # first: the login and CSRF checks read forms
    app.register_blueprint(auth.bp)
    app.register_blueprint(studies.bp)
    app.register_blueprint(cases.bp)
    app.register_blueprint(frames.bp)
    app.register_blueprint(measure.bp)
    app.register_blueprint(planning.bp)
    app.register_blueprint(planning_pages.bp)
    app.register_blueprint(dicomweb.bp)
    app.register_blueprint(exports.bp)
    app.register_blueprint(admin.bp, url_prefix="/admin")
    i18n.install(app)
    ohif.install(app)  # OHIF v3 at /ohif/, its own CSP there
    scope.install(app)  # after auth's login and role check
    app.jinja_env.globals["csrf_token"] = auth.csrf_token
    app.jinja_env.filters["urlencode_page"] = lambda args, page: urlencode(
        {**args.to_dict(), "page": page}
    )

    @app.get("/healthz")
    def health() -> Any:
        """For load balancers: 503 while the index or the storage is out of
        reach. Anyone may ask, so the answer names parts, the log the reasons."""
        problems = archive.problems()
        if problems:
            for part, reason in problems.items():
                log.warning("health check: %s: %s", part, reason)
            return jsonify(status="unavailable", unavailable=sorted(problems)), 503
        return jsonify(status="ok", ae_title=config.ae_title)

    @app.get("/api/stats")
    def stats() -> Any:
        return jsonify(scope.stats(archive.index))  # the account's hospitals only

    def _wants_page() -> bool:
        """A browser asking for a page (not the API, DICOMweb or a script)."""
        if request.path.startswith(("/api/", "/dicom-web", "/ohif")):
            return False
        best = request.accept_mimetypes.best_match(["application/json", "text/html"])
        return best == "text/html"

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        # A clear message in the user's language, never a stack trace or a value of the data.
        message = i18n.translate(error.description or "")
        # The error's own headers stay (Allow on a 405, a 401's challenge).
        kept = [(k, v) for k, v in error.get_headers() if k.lower() != "content-type"]
        if _wants_page():  # a person's browser on a page: a page, in their language
            page = render_template(
                "error.html", code=error.code, message=message, user=g.get("user")
            )
            return page, error.code, kept
        return jsonify(error=error.name, message=message), error.code, kept

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Any:
        # The message may quote data (a name in a pydicom error): log the kind only.
        log.error("unhandled %s in %s", type(error).__name__, request.endpoint)
        message = i18n.translate("an unexpected error")
        return jsonify(error="Internal Server Error", message=message), 500

    return app
