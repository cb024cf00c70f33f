"""Response headers every page and API answer carries, and session lifetime.

The Content-Security-Policy allows scripts, styles and fonts from the node
only (no inline script: the templates carry data in JSON blocks instead), images
from the node, data: and blob: URLs (cine frames), and no framing. Pages and
API answers about studies are not cached on shared workstations.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Flask, Response

from dicomnode.config import Config

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), usb=()",
}
NOT_CACHED = ("text/html", "application/json", "application/dicom+json")


def install(app: Flask, config: Config) -> None:
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=config.session_max_hours)
    app.config["SESSION_COOKIE_SECURE"] = config.http_secure_cookies or config.http_tls

    @app.after_request
    def secure_headers(response: Response) -> Response:
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        if config.http_tls:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        if response.mimetype in NOT_CACHED:
            response.headers["Cache-Control"] = "no-store"
        return response
