"""OHIF viewer v3 at `/ohif/`, on the node's own origin, behind its login.

The files are the prebuilt ``@ohif/app`` dist that `viewer.ohif_install`
put in ``.ohif/<version>/dist`` (or ``ohif_dir``), configured for the node's
DICOMweb at `/dicom-web`: same origin, so the session cookie authenticates
OHIF's requests and no CORS is involved. Every role may open it
(`viewer.permissions`); the node's own viewer stays the default, and the
study list links each study to ``/ohif/viewer?StudyInstanceUIDs=<uid>``.

OHIF routes in the browser (``/ohif/viewer``, ``/ohif/`` study list), so a
path that names no file and has no file extension answers ``index.html``;
a missing file (``.js``, ``.wasm``...) answers 404, never the page, and so
does a name the file system refuses (too long). Files
whose names carry a content hash are cached for a year, the rest are
revalidated; the larger ones go out gzip-compressed (the installer's ``.gz``
copies) to browsers that accept it. Its Content-Security-Policy (`csp`) is laxer than the node's
where OHIF needs it and only there, and still names no other origin.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import re
from functools import cache
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, abort, request, send_from_directory
from werkzeug.security import safe_join

from viewer import ohif_install, services

bp = Blueprint("ohif", __name__, url_prefix="/ohif")
PREFIX = ohif_install.PREFIX
YEAR = 365 * 24 * 3600
# webpack's content hashes: 1602.bundle.94f12cceab7c2762.js, 0ddf166f7a343eda.wasm
HASHED = re.compile(r"(^|\.)[0-9a-f]{16}\.(js|wasm|woff2?|css)$")
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)
NOT_INSTALLED = "OHIF is not installed on this node: run `make ohif` in the node's checkout"

mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/javascript", ".mjs")


def dist() -> Path:
    configured = services.config().ohif_dir
    return Path(configured) if str(configured) not in ("", ".") else ohif_install.dist_dir()


def available(folder: Path | None = None) -> bool:
    """Whether OHIF's files are there (the study list links to it only then)."""
    return ((folder or dist()) / "index.html").is_file()


@cache
def _inline_hashes(index: Path, stamp: float) -> tuple[str, ...]:
    """CSP hashes of index.html's inline scripts (it sets PUBLIC_URL inline)."""
    return tuple(
        "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(index.read_bytes())
    )


def csp(folder: Path, script: bool = False) -> str:
    """What OHIF needs, from the node's origin only: WebAssembly (codecs),
    workers (its own files and blob: URLs), inline styles (React), blob: and
    data: images and fonts, and the two inline scripts of index.html by hash.

    A script file's answer (``script``) also allows ``'unsafe-eval'``: a
    dedicated worker takes its policy from its own script's answer, and the
    image loader's worker compiles the JPEG 2000 codec's bindings with
    ``new Function`` (Emscripten embind). In a page that policy is never
    used (the document's applies), so the page itself allows no eval."""
    index = folder / "index.html"
    hashes = _inline_hashes(index, index.stat().st_mtime) if index.is_file() else ()
    scripts = "script-src 'self' 'wasm-unsafe-eval'" + (" 'unsafe-eval'" if script else "")
    return "; ".join(
        [
            "default-src 'self'",
            " ".join([scripts, *hashes]),
            "worker-src 'self' blob:",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data: blob:",
            "font-src 'self' data:",
            "media-src 'self' blob:",
            "connect-src 'self' blob: data:",
            "manifest-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def _is_file(path: str) -> bool:
    """Whether ``path`` is a file; False for any name the file system refuses
    (too long: ENAMETOOLONG...), so such a request is a 404, never a 500."""
    try:
        return Path(path).is_file()
    except OSError:
        return False


@bp.get("/", endpoint="app", defaults={"path": ""})
@bp.get("/<path:path>", endpoint="app")
def app_files(path: str) -> Any:
    folder = dist()
    if not available(folder):
        abort(503, description=NOT_INSTALLED)
    name = Path(path).name
    target = safe_join(str(folder), path) if path else None
    if target is not None and _is_file(target):
        if request.accept_encodings["gzip"] and _is_file(target + ".gz"):
            # Werkzeug names the encoding (Content-Encoding: gzip) from ".gz"
            # and the type from the name before it.
            answer = send_from_directory(folder, path + ".gz", max_age=0)
        else:
            answer = send_from_directory(folder, path, max_age=0)
        answer.vary.add("Accept-Encoding")
        if HASHED.search(name):
            answer.headers["Cache-Control"] = f"private, max-age={YEAR}, immutable"
        else:
            answer.headers["Cache-Control"] = "private, no-cache"
        return answer
    if "." in name:
        abort(404, description="no such OHIF file")
    return send_from_directory(folder, "index.html", max_age=0)  # OHIF's own routes


def install(app: Flask) -> None:
    """The blueprint, the study list's link test, and OHIF's CSP on `/ohif/`."""
    app.register_blueprint(bp)
    app.jinja_env.globals["ohif_available"] = available

    @app.after_request
    def ohif_policy(response: Any) -> Any:
        if request.path.startswith(PREFIX) or request.path == PREFIX.rstrip("/"):
            script = request.path.endswith((".js", ".mjs"))
            response.headers["Content-Security-Policy"] = csp(dist(), script)
        return response
