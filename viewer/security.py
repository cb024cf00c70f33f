"""Response headers every page and API answer carries, and session lifetime.

The Content-Security-Policy allows scripts, styles and fonts from the node
only (no inline script: the templates carry data in JSON blocks instead), images
from the node, data: and blob: URLs (cine frames), and no framing. Pages and
API answers about studies are not cached on shared workstations. Under
/ohif/ the OHIF viewer has its own policy (`viewer.ohif.csp`), set there.

After login the browser goes back where it came from (``next``), but only
to a path on this node: `same_origin_path` refuses whatever a browser could
read as another site.

Browsers ask every page for ``/favicon.ico``; it is answered here (open, no
login), so that request is neither refused nor written to the audit trail as
an access failure.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cache
from io import BytesIO
from urllib.parse import quote, unquote, urlsplit

from flask import Flask, Response
from PIL import Image, ImageDraw

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
ICON_MAX_AGE = 86400  # seconds a browser may keep the icon
MAX_NEXT = 2048  # characters of a ``next`` path; longer ones are not followed
# Kept as they are when a checked path is written back into a Location header.
_PATH_SAFE = "/?=&;:@!$'()*+,-._~"


@cache
def favicon() -> bytes:
    """A small red heart, drawn once (no binary file in the repository)."""
    icon = Image.new("RGBA", (32, 32))
    draw = ImageDraw.Draw(icon)
    red = (178, 34, 52, 255)
    draw.ellipse((2, 4, 17, 19), fill=red)
    draw.ellipse((15, 4, 30, 19), fill=red)
    draw.polygon([(3, 15), (29, 15), (16, 29)], fill=red)
    out = BytesIO()
    icon.save(out, format="ICO", sizes=[(32, 32), (16, 16)])
    return out.getvalue()


def same_origin_path(target: object, default: str) -> str:
    """``target`` when it can only be a path on this node, else ``default``.

    Browsers ignore tabs and newlines inside URLs, treat ``\\`` as ``/``,
    and read ``//host`` (however many slashes) as another site; a proxy or a
    second decoding may undo percent-escapes. So the check is made on the
    text decoded until stable, stripped of control characters and
    whitespace: no scheme, no host, no backslash, no leading ``//``, no
    empty or dot segment. What passes is sent percent-encoded again."""
    if not isinstance(target, str) or not target or len(target) > MAX_NEXT:
        return default
    text = target
    for _ in range(4):
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    else:
        return default  # still changing: nested escapes are not a real path
    text = "".join(ch for ch in text if ch.isprintable() and not ch.isspace())
    parts = urlsplit(text)
    segments = parts.path.split("/")[1:]
    if (
        not text.startswith("/")
        or text.startswith("//")
        or "\\" in text
        or parts.scheme
        or parts.netloc
        or "" in segments[:-1]
        or any(s in (".", "..") for s in segments)
    ):
        return default
    path = quote(parts.path, safe=_PATH_SAFE)
    return f"{path}?{quote(parts.query, safe=_PATH_SAFE)}" if parts.query else path


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

    @app.get("/favicon.ico", endpoint="favicon")
    def icon() -> Response:
        answer = Response(favicon(), mimetype="image/x-icon")
        answer.headers["Cache-Control"] = f"public, max-age={ICON_MAX_AGE}"
        return answer
