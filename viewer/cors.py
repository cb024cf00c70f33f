"""Cross-origin access to DICOMweb for the origins listed in ``cors_origins``.

A viewer served from another origin (OHIF on its own host or port) calls
/dicom-web from the browser; without CORS the browser hides every answer.
Only the listed origins are answered, each by its exact Origin header (RFC
6454 serialisation, as `Config.cors_origins` holds them): never ``*``, never an
echo of what was sent, nothing for ``null``. None listed: no CORS header at
all, and preflights are refused like any request without a login.

A preflight (OPTIONS with Access-Control-Request-Method) from a listed origin
is answered here, before login: it carries no credentials by design, names
no object that is looked up, and is neither a read nor a login, so nothing
is audited. It lists the methods the route has (404 for a path no route
matches) and the request headers a DICOMweb client sends.

No Access-Control-Allow-Credentials: a cross-origin client authenticates
with HTTP Basic (an Authorization header it sets itself), never with the
node's session cookie. The cookie is SameSite=Lax, which still lets it go
along between two ports of one host (one site); a state-changing request
with it needs the CSRF token, which is not among the allowed headers and
which another origin cannot read, so a cross-origin POST with the cookie
stays refused (400). Only /dicom-web is shared; the viewer's pages and /api
stay same-origin.
"""

from __future__ import annotations

from flask import Flask, Response, abort, request

from dicomnode.config import Config

PREFIX = "/dicom-web/"
# What a DICOMweb client sends: credentials, negotiation, STOW-RS bodies.
ALLOW_HEADERS = "Authorization, Accept, Content-Type"
# What a client must read beyond the CORS-safelisted headers: paging and
# fuzzy-matching warnings, back-off, where a stored instance went, why a 401.
EXPOSE_HEADERS = ", ".join(
    [
        "Content-Type",
        "Content-Length",
        "Content-Location",
        "Location",
        "Retry-After",
        "Warning",
        "WWW-Authenticate",
        "ETag",
    ]
)
MAX_AGE = 600  # seconds a browser may keep a preflight's answer


def install(app: Flask, config: Config) -> None:
    """Before the login check: a preflight has no credentials to check."""
    origins = frozenset(config.cors_origins)  # parsed and normalised at load
    if not origins:
        return

    def listed() -> str | None:
        origin = request.headers.get("Origin")
        if request.path.startswith(PREFIX) and origin in origins:
            return origin
        return None

    @app.before_request
    def preflight() -> Response | None:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return None
        origin = listed()
        if origin is None:
            return None  # as any other request: login first, no CORS headers
        methods = set(app.url_map.bind_to_environ(request.environ).allowed_methods())
        if not methods:
            abort(404, description="nothing stored matches")
        answer = Response(status=204)
        answer.headers["Access-Control-Allow-Origin"] = origin
        answer.headers["Access-Control-Allow-Methods"] = ", ".join(sorted(methods | {"OPTIONS"}))
        answer.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        answer.headers["Access-Control-Max-Age"] = str(MAX_AGE)
        return answer

    @app.after_request
    def share(response: Response) -> Response:
        if not request.path.startswith(PREFIX):
            return response
        response.vary.add("Origin")  # caches keep one answer per origin
        origin = listed()
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        return response
