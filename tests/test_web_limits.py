"""The web port against what an anonymous or careless client can send: bodies
over the limit (declared, chunked, endless, on any URL), slow and silent
connections (plain and TLS, from one address), more connections than one
address may hold, slow uploads and slow readers. Each is refused or cut off
without the node buffering it, and /healthz from another address answers."""

from __future__ import annotations

import base64
import http.client
import json
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from werkzeug.security import generate_password_hash

from dicomnode.config import Config
from dicomnode.net.tls import make_ca, make_certificate
from dicomnode.node import Node, open_archive
from dicomnode.web import guard as webguard
from dicomnode.web.server import WebServer
from tests.conftest import make_config
from viewer import create_app

ATTACKER = "127.0.0.2"  # the slow or greedy client; the probes come from 127.0.0.1
MiB = 1 << 20
PASSWORD = "correct horse battery"
BASIC = "Basic " + base64.b64encode(f"cardio:{PASSWORD}".encode()).decode()
STOW_TYPE = 'multipart/related; type="application/dicom"; boundary=frontier'
MEMORY_BOUND = 96 * MiB  # growth allowed while a 600 MB body is thrown at the node


# -- helpers ---------------------------------------------------------------


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class PeakMemory:
    """The process's resident memory sampled in a thread: the peak growth
    over a block (freed buffers leave VmRSS, so the peak is what counts)."""

    def __enter__(self) -> PeakMemory:
        self.baseline = self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def until(condition: Callable[[], bool], seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def connect(
    port: int, source: str = "127.0.0.1", context: ssl.SSLContext | None = None
) -> socket.socket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return context.wrap_socket(raw) if context else raw


def answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def request(
    sock: socket.socket, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> None:
    lines = [f"{method} {path} HTTP/1.1", "Host: node", *(f"{k}: {v}" for k, v in headers.items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


def health(port: int, context: ssl.SSLContext | None = None) -> int:
    """/healthz from 127.0.0.1 (not the attacker's address), as a probe asks."""
    if context is None:
        probe = http.client.HTTPConnection("127.0.0.1", port, timeout=8)
    else:
        probe = http.client.HTTPSConnection("127.0.0.1", port, timeout=8, context=context)
    try:
        probe.request("GET", "/healthz")
        return probe.getresponse().status
    finally:
        probe.close()


def closed_by_server(sock: socket.socket, seconds: float = 20.0) -> bool:
    """Whether the server ends the connection (after any answer) within ``seconds``."""
    deadline = time.monotonic() + seconds
    sock.setblocking(True)
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ssl.SSLWantReadError:
            continue
        except OSError:  # reset, or a TLS alert
            return True
    return False


class Trickle(threading.Thread):
    """Sends ``data`` one byte every ``every`` seconds (then ``then`` bytes
    forever), noting when the server closes the connection."""

    def __init__(self, sock: socket.socket, data: bytes, then: bytes = b"a", every=0.2) -> None:
        super().__init__(daemon=True)
        self.sock, self.data, self.then, self.every = sock, data, then, every
        self.closed = threading.Event()
        self._halt = threading.Event()
        self.start()

    def _next(self) -> Iterator[bytes]:
        yield from (self.data[i : i + 1] for i in range(len(self.data)))
        while self.then:
            yield self.then

    def run(self) -> None:
        pending = self._next()
        while not self._halt.is_set():
            readable, _, _ = select.select([self.sock], [], [], self.every)
            try:
                if readable:
                    if not self.sock.recv(4096):
                        break
                    continue
                byte = next(pending, None)
                if byte is not None:
                    self.sock.send(byte)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                continue
            except OSError:
                break
        self.closed.set()

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.sock.close()


class SlowReader(threading.Thread):
    """Reads an answer 64 KiB every 0.5 s, noting when the server ends it."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.closed = threading.Event()
        self._halt = threading.Event()
        self.start()

    def run(self) -> None:
        self.sock.settimeout(10)
        while not self._halt.wait(0.5):
            try:
                if not self.sock.recv(65536):
                    break
            except OSError:
                break
        self.closed.set()

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.sock.close()


def client_hello() -> bytes:
    """The first flight of a TLS client, to send a byte at a time."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="chdnode.test")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    make_ca(folder)
    make_certificate(folder, "chdnode.test", ["127.0.0.1"])
    return folder


def tls_client(pki: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.check_hostname = False
    return context


@contextmanager
def serving(config: Config, app: Any = None) -> Iterator[WebServer]:
    """The web app (or ``app``) behind the production server, as the node runs it."""
    archive = open_archive(config)
    archive.index.accounts.add(
        "cardio", generate_password_hash(PASSWORD), "cardiologist", issuer="NCC Bishkek"
    )
    server = WebServer(app or create_app(config, archive, b"k" * 32), config)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        archive.close()


def limits(tmp_path: Path, **overrides: object) -> Config:
    values: dict[str, object] = {
        "http_threads": 4,
        "http_header_seconds": 1.5,
        "http_max_connections_per_address": 8,
        "network_timeout": 30,
    }
    values.update(overrides)
    return make_config(tmp_path, **values)


# -- 1. request bodies -----------------------------------------------------


@pytest.fixture(scope="module")
def bodies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """One server for the body tests: forms up to 0.5 MiB, STOW-RS up to 1 MiB."""
    config = limits(tmp_path_factory.mktemp("bodies"), stow_max_mb=1, http_max_form_kb=512)
    with serving(config) as server:
        yield server


@pytest.mark.parametrize(
    "method, path, headers",
    [
        ("GET", "/healthz", {}),
        ("POST", "/login", {"Content-Type": "application/x-www-form-urlencoded"}),
        ("POST", "/api/studies/9.9/plans", {"Content-Type": "application/json"}),
        ("POST", "/dicom-web/studies", {"Content-Type": STOW_TYPE, "Authorization": BASIC}),
    ],
)
def test_a_declared_body_over_the_limit_is_refused_at_once(
    bodies: WebServer, method: str, path: str, headers: dict[str, str]
) -> None:
    # The body is never sent: the answer must not wait for it.
    sock = connect(bodies.port)
    request(sock, method, path, {**headers, "Content-Length": str(2 * MiB)})
    status, head, body = answer(sock)
    assert status == 413, body
    message = json.loads(body)
    assert set(message) == {"error", "message"}
    limit = "1 MiB" if path == "/dicom-web/studies" else "0.5 MiB"
    assert limit in message["message"], message
    assert head.get("connection") == "close"
    assert closed_by_server(sock)  # under network_timeout (30 s): not left to time out


@pytest.mark.slow
def test_stow_takes_more_than_a_form_and_the_forms_limit_holds_elsewhere(tmp_path: Path) -> None:
    config = make_config(tmp_path, stow_max_mb=2, http_max_form_kb=64)
    archive = open_archive(config)
    archive.index.accounts.add("cardio", generate_password_hash(PASSWORD), "cardiologist", "X")
    client = create_app(config, archive, b"k" * 32).test_client()
    junk = b"--frontier\r\nContent-Type: application/dicom\r\n\r\n" + b"\0" * (MiB + MiB // 2)
    stow = client.post(
        "/dicom-web/studies",
        data=junk + b"\r\n--frontier--\r\n",
        headers={"Content-Type": STOW_TYPE, "Authorization": BASIC},
    )
    assert stow.status_code != 413, stow.get_data(as_text=True)[:200]
    form = client.post("/login", data={"username": "x", "password": "y" * 100_000})
    assert form.status_code == 413 and "MiB" in form.get_json()["message"]
    archive.close()


def _stream_zeros(sock: socket.socket, chunks: Iterator[bytes]) -> threading.Thread:
    def send() -> None:
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the server closed: what the test wants

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


ZEROS = bytes(MiB)


def test_600_mb_to_healthz_is_refused_at_its_headers_not_buffered(bodies: WebServer) -> None:
    with PeakMemory() as memory:
        sock = connect(bodies.port)
        request(sock, "GET", "/healthz", {"Content-Length": str(600 * MiB)})
        sender = _stream_zeros(sock, (ZEROS for _ in range(600)))
        status, _, body = answer(sock)
        closed = closed_by_server(sock)
        sender.join(30)
    assert memory.growth < MEMORY_BOUND, f"+{memory.growth / MiB:.0f} MiB"
    assert status == 413 and b"MiB" in body and closed


def _chunked_pieces() -> Iterator[bytes]:
    yield b"username=x&password="
    for _ in range(600):
        yield b"100000\r\n" + ZEROS + b"\r\n"


def _one_huge_chunk() -> Iterator[bytes]:
    yield b"%x\r\n" % (600 * MiB)
    for _ in range(600):
        yield ZEROS


@pytest.mark.parametrize("body", [_chunked_pieces, _one_huge_chunk], ids=["pieces", "one-chunk"])
def test_an_endless_chunked_body_is_cut_off_at_the_limit(
    bodies: WebServer, body: Callable[[], Iterator[bytes]]
) -> None:
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Transfer-Encoding": "chunked",
    }
    with PeakMemory() as memory:
        sock = connect(bodies.port)
        request(sock, "POST", "/login", headers)
        pieces = body()
        if body is _chunked_pieces:  # the first piece is the form's start, its own chunk
            first = next(pieces)
            sock.sendall(b"%x\r\n%s\r\n" % (len(first), first))
        sender = _stream_zeros(sock, pieces)
        status, _, answered = answer(sock)
        closed = closed_by_server(sock)
        sender.join(30)
    assert memory.growth < MEMORY_BOUND, f"+{memory.growth / MiB:.0f} MiB"
    assert status == 413 and b"MiB" in answered and closed, answered


def test_a_too_large_stow_is_refused_before_100_continue(bodies: WebServer) -> None:
    sock = connect(bodies.port)
    headers = {
        "Content-Type": STOW_TYPE,
        "Authorization": BASIC,
        "Content-Length": str(5 * MiB),
        "Expect": "100-continue",
    }
    request(sock, "POST", "/dicom-web/studies", headers)
    status, _, _ = answer(sock)
    assert status == 413  # not "100 Continue": the client need not send a byte


def test_100_continue_is_sent_when_the_body_is_wanted(bodies: WebServer) -> None:
    sock = connect(bodies.port)
    form = b"username=nobody&password=wrong+password"
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Content-Length": str(len(form)),
        "Expect": "100-continue",
    }
    request(sock, "POST", "/login", headers)
    assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    sock.sendall(form)
    status, _, _ = answer(sock)
    assert status == 400  # no CSRF token: the form was read


def test_an_unread_body_is_neither_waited_for_nor_buffered(bodies: WebServer) -> None:
    # 400 KiB announced (under the limit), none sent: the answer comes and the
    # connection ends (draining it would wait for the client, then hold it).
    sock = connect(bodies.port)
    request(sock, "GET", "/healthz", {"Content-Length": str(400 * 1024)})
    status, head, _ = answer(sock)
    assert status == 200 and head.get("connection") == "close"
    assert closed_by_server(sock)  # under network_timeout (30 s): not left to time out
    # A few bytes with a GET are skipped and the connection kept.
    sock = connect(bodies.port)
    request(sock, "GET", "/healthz", {"Content-Length": "5"}, b"hello")
    assert answer(sock)[0] == 200
    request(sock, "GET", "/healthz", {})
    assert answer(sock)[0] == 200


def test_a_broken_chunked_body_is_the_clients_error(bodies: WebServer) -> None:
    headers = {"Content-Type": STOW_TYPE, "Authorization": BASIC, "Transfer-Encoding": "chunked"}
    for body in (b"zz\r\nabc", b"5\r\nab", b"ffffffffffffffffff\r\nabc", b"3\r\nabcXY"):
        sock = connect(bodies.port)
        request(sock, "POST", "/dicom-web/studies", headers, body)
        sock.shutdown(socket.SHUT_WR)
        status, _, answered = answer(sock)
        assert status == 400 and b"malformed or ended early" in answered, (body, answered)


def test_a_content_length_that_is_not_a_number_is_refused(bodies: WebServer) -> None:
    # cheroot would take -1 as "read to the end of the stream" (RFC 9110: digits only).
    for length in ("-1", "+5", "1_0", "0x10", "5, 5"):
        sock = connect(bodies.port)
        request(sock, "GET", "/healthz", {"Content-Length": length}, b"x" * 16)
        assert answer(sock)[0] == 400, length
        assert closed_by_server(sock)  # under network_timeout (30 s): not left to time out


# -- 2. slow and silent connections ------------------------------------------

SLOW_HEADERS = b"GET /healthz HTTP/1.1\r\nHost: node\r\nX-Padding: "


@pytest.mark.slow
def test_trickling_and_silent_connections_are_closed_at_the_deadline(tmp_path: Path) -> None:
    with serving(limits(tmp_path)) as server:
        tricklers = [Trickle(connect(server.port, ATTACKER), SLOW_HEADERS) for _ in range(5)]
        silent = [connect(server.port, ATTACKER) for _ in range(3)]
        try:
            # Four workers, eight slow connections: the probes still answer.
            for _ in range(5):
                assert health(server.port) == 200
            assert all(t.closed.wait(20) for t in tricklers), "a trickler still open"
            assert all(closed_by_server(s) for s in silent)
        finally:
            for trickle in tricklers:
                trickle.stop()


@pytest.mark.slow
def test_slow_tls_handshakes_and_headers_are_closed_at_the_deadline(
    tmp_path: Path, pki: Path
) -> None:
    config = limits(
        tmp_path,
        http_tls=True,
        tls_certificate=str(pki / "chdnode.test.crt"),
        tls_private_key=str(pki / "chdnode.test.key"),
    )
    client = tls_client(pki)
    with serving(config) as server:
        hello = client_hello()
        handshakes = [Trickle(connect(server.port, ATTACKER), hello, then=b"") for _ in range(4)]
        headers = [Trickle(connect(server.port, ATTACKER, client), SLOW_HEADERS) for _ in range(2)]
        silent = [connect(server.port, ATTACKER) for _ in range(2)]
        try:
            for _ in range(5):
                assert health(server.port, client) == 200
            assert all(t.closed.wait(20) for t in handshakes + headers)
            assert all(closed_by_server(s) for s in silent)
        finally:
            for trickle in handshakes + headers:
                trickle.stop()


@pytest.mark.slow
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_pipelined_requests_are_answered_in_turn(tmp_path: Path, pki: Path, tls: bool) -> None:
    # The second request is already buffered when the first is answered: it
    # must go to a worker without waiting for more bytes (there are none).
    files = {"tls_certificate": str(pki / "chdnode.test.crt")}
    files["tls_private_key"] = str(pki / "chdnode.test.key")
    config = limits(tmp_path, http_tls=tls, **files)
    with serving(config) as server:
        sock = connect(server.port, context=tls_client(pki) if tls else None)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: n\r\n\r\n" * 2)
        stream = sock.makefile("rb")
        for _ in range(2):
            status = stream.readline()
            headers = dict(
                line.decode().lower().split(": ", 1) for line in iter(stream.readline, b"\r\n")
            )
            stream.read(int(headers["content-length"]))
            assert status.startswith(b"HTTP/1.1 200"), status


@pytest.mark.slow
def test_connections_still_sending_headers_cost_no_one_keep_alive(tmp_path: Path) -> None:
    # cheroot closes after each answer once 10 connections sit in its
    # selector, whatever they are: a dozen silent ones would end keep-alive
    # (and mean a TLS handshake per request) for everyone.
    config = limits(tmp_path, http_header_seconds=60, http_max_connections_per_address=16)
    with serving(config) as server:
        silent = [connect(server.port, ATTACKER) for _ in range(12)]
        sock = connect(server.port)  # accepted after them (the backlog is in order)
        for _ in range(3):
            request(sock, "GET", "/healthz", {})
            status, head, _ = answer(sock)
            assert status == 200 and head.get("connection") != "close", head
        for other in silent:
            other.close()


@pytest.mark.slow
def test_one_address_may_hold_only_so_many_connections(tmp_path: Path) -> None:
    config = limits(tmp_path, http_header_seconds=60, http_max_connections_per_address=4)
    with serving(config) as server:
        held = [connect(server.port, ATTACKER) for _ in range(4)]
        extra = connect(server.port, ATTACKER)
        assert closed_by_server(extra, 30)  # at once: the deadline is a minute away
        assert health(server.port) == 200  # another address is not counted with it
        held.pop().close()

        def another_one_served() -> bool:
            try:
                with connect(server.port, ATTACKER) as sock:
                    request(sock, "GET", "/healthz", {})
                    return answer(sock)[0] == 200
            except (OSError, http.client.HTTPException):
                return False

        assert until(another_one_served)
        for sock in held:
            sock.close()


@pytest.mark.slow
def test_slow_uploads_take_at_most_a_share_of_the_workers_and_end(tmp_path: Path) -> None:
    headers = b"".join(
        [
            b"POST /login HTTP/1.1\r\nHost: node\r\n",
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n",
        ]
    )
    with serving(limits(tmp_path, network_timeout=1)) as server:
        uploads = []
        for _ in range(8):
            sock = connect(server.port, ATTACKER)
            sock.sendall(headers)  # complete headers, then the body a byte at a time
            uploads.append(Trickle(sock, b"", then=b"a", every=0.3))
        try:
            for _ in range(5):
                assert health(server.port) == 200
            assert all(u.closed.wait(40) for u in uploads), "a slow upload still open"
        finally:
            for upload in uploads:
                upload.stop()


@pytest.mark.slow
def test_slow_readers_take_at_most_a_share_of_the_workers_and_are_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A reader below the floor rate is cut off once its wait exceeds
    # network_timeout plus what it read at that rate. Here the floor is
    # raised (from 16 KiB/s) and the grace shortened (from network_timeout),
    # so a reader fast enough to keep cheroot's per-send timeout (30 s) from
    # firing is still below it, and cut within seconds.
    monkeypatch.setattr(webguard, "MIN_TRANSFER_RATE", 8 * MiB)
    abandoned: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"] != "/big":
            start_response("200 OK", [("Content-Length", "2")])
            return [b"ok"]
        start_response("200 OK", [("Content-Length", str(256 * MiB))])

        def body() -> Iterator[bytes]:
            try:
                for _ in range(256):
                    yield ZEROS
            finally:
                abandoned.append("closed")

        return body()

    config = limits(tmp_path, network_timeout=30, http_max_connections_per_address=16)
    with serving(config, app) as server:
        server._server.watchdog.grace = 1.0
        readers = []
        for _ in range(10):  # more than the four workers (and than cheroot's default 8)
            sock = connect(server.port, ATTACKER)
            request(sock, "GET", "/big", {})
            # 128 KiB/s in bursts: each send progresses well within
            # network_timeout, so cheroot's own timeout never fires.
            readers.append(SlowReader(sock))
        try:
            for _ in range(5):
                probe = connect(server.port)
                request(probe, "GET", "/small", {})
                assert answer(probe)[0] == 200
                probe.close()
            assert until(lambda: len(abandoned) == 10, 60), abandoned
        finally:
            for reader in readers:
                reader.stop()


def test_the_node_runs_the_configured_number_of_workers(tmp_path: Path) -> None:
    with Node(make_config(tmp_path, http_threads=3), web=True) as node:
        assert node._web is not None and node._web.threads == 3
        assert health(node.http_port) == 200


@pytest.mark.slow
@pytest.mark.parametrize("url", ["/healthz", "/login"])
def test_small_bodies_trickled_from_several_addresses_hold_no_worker(
    tmp_path: Path, url: str
) -> None:
    """Found by an outside attacker: complete headers, then a small body a
    byte at a time, from two addresses (each with its share of workers),
    held every worker while the rate floor waited out network_timeout. A
    small body must now arrive whole, like the headers, before a worker is
    given, within http_header_seconds."""
    headers = (
        f"POST {url} HTTP/1.1\r\nHost: node\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 60000\r\n\r\n"
    ).encode()
    with serving(limits(tmp_path, network_timeout=30)) as server:
        uploads = []
        for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
            for _ in range(6):
                sock = connect(server.port, source)
                sock.sendall(headers)
                uploads.append(Trickle(sock, b"", then=b"a", every=0.3))
        try:
            for _ in range(5):
                assert health(server.port) == 200
            assert all(u.closed.wait(20) for u in uploads), "a slow body still open"
        finally:
            for upload in uploads:
                upload.stop()


@pytest.mark.slow
def test_a_small_body_sent_at_once_is_served_as_before(tmp_path: Path) -> None:
    with serving(limits(tmp_path)) as server:
        sock = connect(server.port)
        body = b"username=nobody&password=" + b"x" * 30_000
        sock.sendall(
            b"POST /login HTTP/1.1\r\nHost: node\r\nConnection: close\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        status, _, _ = answer(sock)
        assert status in (400, 401)  # read and judged (CSRF or password), not cut off
        sock.close()


@pytest.mark.slow
def test_larger_bodies_trickled_from_several_addresses_are_cut_soon(tmp_path: Path) -> None:
    """A body too large to gather before a worker (over 64 KiB, under the
    form limit) reaches a worker; trickled, it is cut once the header
    deadline's grace and the rate floor are spent, not after network_timeout."""
    headers = (
        b"POST /login HTTP/1.1\r\nHost: node\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 200000\r\n\r\n"
    )
    with serving(limits(tmp_path, network_timeout=600)) as server:
        uploads = []
        for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"):
            for _ in range(2):
                sock = connect(server.port, source)
                sock.sendall(headers)
                uploads.append(Trickle(sock, b"", then=b"a", every=0.3))
        try:
            assert all(u.closed.wait(60) for u in uploads), "a slow body still open"
            assert health(server.port) == 200
        finally:
            for upload in uploads:
                upload.stop()
