"""Fuzzing the web routes: paths, query strings, headers and bodies (forms,
JSON, multipart, junk, oversized) from anonymous clients and from each role,
through the Flask app for breadth and as raw bytes through the production
server (request lines, framing, chunking). Every answer is below 500, the
server keeps answering, and the process's memory stays within MEMORY_BOUND
of where it started.

`make test` runs a short, derandomised pass; `make fuzz` a long random one
(FUZZ_LONG=1, FUZZ_EXAMPLES).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import string
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.uid import ExplicitVRLittleEndian
from werkzeug.security import generate_password_hash

from dicomnode.ingest.pipeline import Ingestor, Outcome
from dicomnode.node import open_archive
from dicomnode.ops.samples import PATIENTS, xa_instance
from dicomnode.web.server import WebServer
from storage.accounts import ROLES
from tests.conftest import encode, incoming, make_config
from tests.test_viewer import as_user
from tests.test_web_limits import rss
from viewer import create_app

LONG = os.environ.get("FUZZ_LONG") == "1"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "5000")) if LONG else 60
RAW_EXAMPLES = EXAMPLES if LONG else 30
pytestmark = [pytest.mark.timeout(0)] if LONG else []  # a long run is as long as it takes
MiB = 1 << 20
# Growth of the process's resident memory allowed over the whole run (frame
# and layout caches fill up to their budgets; nothing else should stay).
MEMORY_BOUND = 192 * MiB
PASSWORD = "correct horse battery"
FORM_KB = 64  # small, so the fuzzer reaches the 413 path too


@dataclass
class Target:
    app: Flask
    study: str
    series: str
    instance: str
    port: int
    cookies: dict[str, str]  # session cookie per role, for raw requests
    baseline: int


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    config = make_config(
        tmp_path_factory.mktemp("fuzzweb"),
        http_max_form_kb=FORM_KB,
        stow_max_mb=1,
        http_threads=4,
        http_header_seconds=2.0,
        network_timeout=3,
    )
    archive = open_archive(config)
    for role in ROLES:
        archive.index.accounts.add(
            f"{role}-user", generate_password_hash(PASSWORD), role, issuer="NCC Bishkek"
        )
    ingestor = Ingestor(config, archive)
    ds = xa_instance(
        PATIENTS[0], frames=3, rows=32, cols=32, transfer_syntax=ExplicitVRLittleEndian
    )
    assert ingestor.ingest(incoming(ds)).outcome is Outcome.STORED
    app = create_app(config, archive, b"k" * 32, ingestor)
    client = app.test_client()
    as_user(client, "admin-user")
    (found,) = client.get("/dicom-web/instances").get_json()
    study, series, instance = (
        found[tag]["Value"][0] for tag in ("0020000D", "0020000E", "00080018")
    )
    cookies = {}
    for role in ROLES:
        browser = app.test_client()
        as_user(browser, f"{role}-user")
        cookie = browser.get_cookie("session")
        assert cookie is not None
        cookies[role] = cookie.value
    server = WebServer(app, config)
    server.start()
    yield Target(app, study, series, instance, server.port, cookies, rss())
    server.stop()
    archive.close()


# -- what a client may send ----------------------------------------------------

PRINTABLE = (
    string.printable.replace("\r", "").replace("\n", "").replace("\x0b", "").replace("\x0c", "")
)
JUNK_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


def _values(target: Target) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(
            [target.study, target.series, target.instance, "9.9", "1.2.3", "", "0" * 70]
        ),
        st.sampled_from(["..", "%2e%2e", "-1", "0", "99999999999999999999", "1-3", "a,b"]),
        st.integers(-(10**20), 10**20).map(str),
        JUNK_TEXT,
    )


def _path(target: Target) -> st.SearchStrategy[str]:
    rules = sorted(rule.rule for rule in target.app.url_map.iter_rules())

    @st.composite
    def filled(draw: st.DrawFn) -> str:
        rule = draw(st.sampled_from(rules))
        parts = rule.replace(">", "<").split("<")
        for i in range(1, len(parts), 2):
            value = draw(_values(target))
            parts[i] = quote(value, safe="") if draw(st.booleans()) else quote(value, safe="/")
        return "".join(parts)

    # (never "//…": the test client would read a host there)
    anything = st.text(alphabet=string.printable, max_size=60).map(
        lambda p: "/" + quote(p.lstrip("/"))
    )
    return st.one_of(filled(), anything)


QUERY_NAMES = [
    "page", "sort", "next", "v", "includefield", "limit", "offset", "fuzzymatching",
    "PatientID", "StudyDate", "ModalitiesInStudy", "StudyInstanceUID", "00100020",
    "user", "event", "source", "failures", "from", "to", "pseudonym", "hospital",
    "modality", "text", "sex", "age_from", "age_to", "date_from", "date_to", "defect",
    "device", "linkable", "frames",
]  # fmt: skip

HEADERS = {
    "Accept": st.sampled_from(
        [
            "application/dicom+json",
            'multipart/related; type="application/dicom"',
            'multipart/related; type="application/octet-stream"; transfer-syntax=*',
            "image/jpeg",
            "image/png",
            "*/*",
            "text/html;q=abc",
            "",
        ]
    ),
    "Range": st.one_of(
        st.sampled_from(["bytes=0-10", "bytes=-5", "bytes=99999999999-", "bytes=5-1", "x"]),
        st.lists(st.integers(0, 10**6), min_size=2, max_size=8).map(
            lambda n: "bytes=" + ",".join(f"{a}-{b}" for a, b in zip(n[::2], n[1::2], strict=False))
        ),
    ),
    "If-None-Match": st.one_of(st.just("*"), st.text(PRINTABLE, max_size=40)),
    "Accept-Language": st.sampled_from(["ru", "zh-CN,zh;q=0.9", "kk", "xx;q=z", ""]),
    "X-Forwarded-For": st.sampled_from(["10.0.0.1", "[::1]:80, junk", "", "1.1.1.1, 2.2.2.2"]),
    "Cookie": st.text(PRINTABLE, max_size=60),
    "Authorization": st.sampled_from(
        [
            "Basic " + base64.b64encode(f"cardiologist-user:{PASSWORD}".encode()).decode(),
            "Basic " + base64.b64encode(b"admin-user:wrong").decode(),
            "Basic !!!",
            "Bearer x",
        ]
    ),
}


def _json() -> st.SearchStrategy[Any]:
    leaves = st.none() | st.booleans() | st.integers() | st.floats() | JUNK_TEXT
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(JUNK_TEXT, inner, max_size=4),
        max_leaves=12,
    )


PLAN_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "defect": JUNK_TEXT,
        "measurements": st.lists(st.dictionaries(JUNK_TEXT, _json(), max_size=4), max_size=3),
        "calibrations": st.lists(st.dictionaries(JUNK_TEXT, _json(), max_size=4), max_size=3),
        "device": _json(),
        "points": st.lists(st.lists(st.floats(), max_size=3), max_size=4),
        "frame": st.integers(-5, 10**12),
    },
)


@st.composite
def bodies(draw: st.DrawFn, instance: bytes) -> tuple[dict[str, Any], str]:
    """Keyword arguments for the test client, and what kind of body it is."""
    kind = draw(
        st.sampled_from(["none", "bytes", "json", "plan", "form", "files", "related", "huge"])
    )
    if kind == "bytes":
        content_type = draw(st.text(PRINTABLE, max_size=40))
        return {"data": draw(st.binary(max_size=2048)), "content_type": content_type}, kind
    if kind in ("json", "plan"):
        value = draw(_json() if kind == "json" else PLAN_LIKE)
        return {"data": json.dumps(value), "content_type": "application/json"}, kind
    if kind == "form":
        form = draw(st.dictionaries(st.sampled_from([*QUERY_NAMES, "csrf_token"]), JUNK_TEXT))
        return {"data": form}, kind
    if kind == "files":
        upload = (BytesIO(draw(st.binary(max_size=1024))), draw(st.text(PRINTABLE)) or "f")
        return {"data": {"file": upload, "csrf_token": "token"}}, kind
    if kind == "related":
        boundary = draw(st.sampled_from(["frontier", "b", "x" * 70, "--odd--"]))
        parts = draw(st.lists(st.one_of(st.binary(max_size=512), st.just(instance)), max_size=3))
        raw = b"".join(
            b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
            for p in parts
        )
        if draw(st.booleans()):
            raw += b"--" + boundary.encode() + b"--\r\n"
        content_type = draw(
            st.sampled_from(
                [
                    f'multipart/related; type="application/dicom"; boundary={boundary}',
                    f"multipart/related; boundary={boundary}",
                    "multipart/related",
                    "application/dicom",
                ]
            )
        )
        return {"data": raw, "content_type": content_type}, kind
    if kind == "huge":  # made in the test: hypothesis prints what it draws
        return {"content_type": "text/plain"}, kind
    return {}, kind


def _check_memory(target: Target) -> None:
    growth = rss() - target.baseline
    assert growth < MEMORY_BOUND, f"resident memory grew by {growth / MiB:.0f} MiB"


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not LONG,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- through the app ------------------------------------------------------------


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_no_request_makes_the_app_fail(target: Target, data: st.DataObject) -> None:
    method = data.draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]))
    path = data.draw(_path(target), label="path")
    query = data.draw(st.dictionaries(st.sampled_from(QUERY_NAMES), _values(target), max_size=4))
    headers = data.draw(
        st.dictionaries(st.sampled_from(sorted(HEADERS)), st.just(""), max_size=4).flatmap(
            lambda chosen: st.fixed_dictionaries({name: HEADERS[name] for name in chosen})
        ),
        label="headers",
    )
    role = data.draw(st.sampled_from([None, *ROLES]), label="role")
    if data.draw(st.booleans()):
        headers["X-CSRF-Token"] = "token"
    instance = encode(xa_instance(PATIENTS[1], frames=1, rows=8, cols=8))[0]
    body, kind = data.draw(bodies(instance), label="body")
    client = target.app.test_client()
    if role is not None:
        as_user(client, f"{role}-user")
    if kind == "huge":
        body["data"] = b"a=" + b"b" * (FORM_KB * 1024 + 1)
    response = client.open(path, method=method, query_string=query, headers=headers, **body)
    answer = response.get_data()
    assert response.status_code < 500, (method, path, query, kind, answer[:300])
    if kind == "huge" and response.status_code == 413 and method != "HEAD":
        assert response.get_json()["message"], answer[:200]
    _check_memory(target)


# -- as bytes, through the production server ------------------------------------

TOKEN = st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"])


@st.composite
def raw_requests(draw: st.DrawFn, target: Target) -> bytes:
    method = draw(st.one_of(TOKEN, TOKEN, TOKEN, st.text(string.printable, min_size=1, max_size=8)))
    path = draw(st.one_of(_path(target), st.sampled_from(["*", "http://x/healthz", "//", ""])))
    version = draw(st.sampled_from(["HTTP/1.1"] * 6 + ["HTTP/1.0", "HTTP/2.0", "HTTP/1.1x", ""]))
    lines = [f"{method} {path} {version}".encode("utf-8", "replace")]
    lines.append(b"Host: node")
    role = draw(st.sampled_from([None, *ROLES]))
    if role is not None:
        lines.append(f"Cookie: session={target.cookies[role]}".encode())
        lines.append(b"X-CSRF-Token: token")
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.one_of(st.sampled_from(sorted(HEADERS)), st.text("abcXYZ-_", max_size=12)))
        value = draw(st.one_of(st.text(PRINTABLE, max_size=60), st.text(string.printable)))
        lines.append(f"{name}: {value}".encode())
    body = draw(st.binary(max_size=600))
    framing = draw(
        st.sampled_from(
            ["none", "length", "length", "chunked", "chunked", "bad-length", "bad-chunked"]
        )
    )
    if framing == "length":
        lines.append(f"Content-Length: {len(body)}".encode())
    elif framing == "bad-length":
        value = draw(st.sampled_from(["-1", "1e3", "+5", " 5 5", "99999999999999999999", "0x10"]))
        lines.append(f"Content-Length: {value}".encode())
    elif framing in ("chunked", "bad-chunked"):
        lines.append(b"Transfer-Encoding: chunked")
        if framing == "chunked":
            body = (b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)) if body else b"0\r\n\r\n"
        else:
            size = draw(st.sampled_from([b"zz", b"-5", b"ffffffffffffffffff", b"10", b""]))
            body = size + b"\r\n" + body
    if draw(st.booleans()):
        lines.append(b"Content-Type: " + draw(st.sampled_from([b"application/json",
            b"application/x-www-form-urlencoded", b'multipart/related; boundary=b',
            b"multipart/form-data; boundary=b"])))  # fmt: skip
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    return head + body


HEALTH = b"GET /healthz HTTP/1.1\r\nHost: n\r\nConnection: close\r\n\r\n"


def _exchange(port: int, data: bytes) -> bytes:
    """Sends ``data``, says it is done, and reads until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # refused part-way: what it answered is still read
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        return received


def _statuses(received: bytes) -> list[bytes]:
    return [line.split(b" ")[1] for line in received.split(b"\r\n") if line.startswith(b"HTTP/1.")]


@settings(
    max_examples=RAW_EXAMPLES,
    deadline=None,
    derandomize=not LONG,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_bytes_make_the_server_fail(target: Target, data: st.DataObject) -> None:
    request = data.draw(raw_requests(target), label="request")
    received = _exchange(target.port, request)
    assert b"500" not in _statuses(received), (request[:400], received[:400])
    health = _exchange(
        target.port, b"GET /healthz HTTP/1.1\r\nHost: n\r\nConnection: close\r\n\r\n"
    )
    assert _statuses(health) == [b"200"], health[:200]
    _check_memory(target)


def test_an_export_request_that_is_not_a_json_object_is_refused(target: Target) -> None:
    """Found by the fuzzer: ``POST /api/exports`` with ``[1]`` (any JSON but
    an object) fails in ``_cohort`` (``values.get``) instead of a 400."""
    client = target.app.test_client()
    as_user(client, "researcher-user")
    for body in ("[1]", '"text"', "3"):
        answer = client.post(
            "/api/exports",
            data=body,
            content_type="application/json",
            headers={"X-CSRF-Token": "token"},
        )
        assert answer.status_code == 400, (body, answer.get_data()[:200])
        assert "JSON object" in answer.json["message"]
