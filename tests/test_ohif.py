"""OHIF v3 served by the node at /ohif/: the installer, the serving rules,
and the prebuilt viewer itself (as `make test` installs it, default
configuration) in Debian Chromium against the node's DICOMweb.
Screenshots go to test-artifacts/ohif-*.png."""

from __future__ import annotations

import base64
import gzip
import io
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from flask.testing import FlaskClient
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from werkzeug.security import generate_password_hash

from dicomnode.ingest.importer import split_file
from dicomnode.ingest.pipeline import Incoming
from dicomnode.node import Node
from dicomnode.ops.samples import demo_files
from storage.archive import Archive
from tests.conftest import make_config, refusing_port
from tests.test_browser import ARTIFACTS, PASSWORD, chromium
from viewer import create_app, ohif_install
from viewer.security import CSP as NODE_CSP

ECHO = "color3d_jpeg_baseline.dcm"  # 120-frame JPEG baseline ultrasound, YBR


# --- the installer ----------------------------------------------------------


def tarball(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return path


ROOT_INDEX = (
    b'<!doctype html><html><head><script>window.PUBLIC_URL="/"</script>'
    b'<link rel="manifest" href="/manifest.json"><script src="/app-config.js"></script>'
    b'<script>function browserImportFunction(n){return import(n)}window.PUBLIC_URL="/"</script>'
    b'<script defer src="/app.bundle.0123456789abcdef.js"></script></head><body></body></html>'
)


def test_a_tampered_tarball_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    package = tarball(tmp_path / "app.tgz", {"package/dist/index.html": ROOT_INDEX})
    pinned = ohif_install.sri(package)
    with package.open("ab") as f:
        f.write(b"\0")  # one byte more than the registry's
    with pytest.raises(ohif_install.InstallError, match="integrity"):
        ohif_install.unpack(package, pinned, tmp_path / "dist")
    assert not (tmp_path / "dist").exists()


def test_only_the_dist_is_unpacked_never_outside_it(tmp_path: Path) -> None:
    package = tarball(
        tmp_path / "app.tgz",
        {
            "package/dist/index.html": ROOT_INDEX,
            "package/dist/../../escaped.txt": b"outside",
            "package/package.json": b"{}",
        },
        links={"package/dist/secrets": "/etc/passwd"},
    )
    target = tmp_path / "out" / "dist"
    try:
        ohif_install.unpack(package, ohif_install.sri(package), target)
    except ohif_install.InstallError as error:
        assert "unsafe" in str(error)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out/escaped.txt").exists()
    assert not (target / "secrets").exists() and not (target.parent / "package.json").exists()


def test_another_version_s_dist_fails_loudly_not_half_patched(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_bytes(ROOT_INDEX)  # no manifest, no webpack runtime
    with pytest.raises(ohif_install.InstallError, match="not found"):
        ohif_install.under_prefix(dist)


def test_the_data_source_points_at_the_node_and_nothing_else_changes() -> None:
    shipped = Path(ohif_install.dist_dir()) / "app-config.default.js"
    if not shipped.is_file():
        pytest.fail("OHIF is not installed: run `make ohif`")
    original = shipped.read_text(encoding="utf-8")
    ours = ohif_install.node_app_config(original)
    changed = [line for line in ours.splitlines() if line not in original.splitlines()]
    assert all(
        re.search(r"(friendlyName|name|wadoUriRoot|qidoRoot|wadoRoot): |^// The node", line)
        for line in changed
    ), changed
    assert "qidoRoot: '/dicom-web'" in ours and "cloudfront" not in ours
    assert "enableStudyLazyLoad: true" in ours  # OHIF's default, series-level metadata


def test_installed_stays_installed_without_asking_npm(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / ohif_install.VERSION).mkdir()
    (tmp_path / ohif_install.VERSION / ohif_install.STAMP).write_text(ohif_install.stamp_text())
    monkeypatch.setenv("PATH", "/nonexistent")  # npm cannot be found, nor is it needed
    assert ohif_install.install(tmp_path) is False


@pytest.mark.peers  # npm
def test_an_unreachable_registry_is_one_clear_line(tmp_path: Path) -> None:
    with refusing_port() as port:
        _an_unreachable_registry_is_one_clear_line(tmp_path, port)


def _an_unreachable_registry_is_one_clear_line(tmp_path: Path, port: int) -> None:
    env = {
        **os.environ,
        "npm_config_registry": f"http://127.0.0.1:{port}/",
        "npm_config_cache": str(tmp_path / "npm-cache"),
        "npm_config_fetch_retry_mintimeout": "100",
        "npm_config_fetch_retry_maxtimeout": "200",
        "npm_config_offline": "false",
    }
    done = subprocess.run(
        [sys.executable, "-m", "viewer.ohif_install", str(tmp_path / "ohif")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(ohif_install.CHECKOUT),
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "cannot download @ohif/app@" in lines[0] and "npm registry" in lines[0]
    assert not ohif_install.installed(tmp_path / "ohif")


# --- serving rules, on a small dist made here -------------------------------


@pytest.fixture
def fake_dist(tmp_path: Path) -> Path:
    dist = tmp_path / "ohif-dist"
    dist.mkdir()
    (dist / "index.html").write_bytes(ROOT_INDEX.replace(b'="/', b'="/ohif/'))
    (dist / "app.bundle.0123456789abcdef.js").write_text("console.log('ohif')")
    (dist / "0123456789abcdef.wasm").write_bytes(b"\0asm\1\0\0\0")
    (dist / "app-config.js").write_text("window.config = {};")
    (tmp_path / "outside.txt").write_text("not OHIF's")
    return dist


@pytest.fixture
def client(tmp_path: Path, fake_dist: Path, archive: Archive) -> FlaskClient:
    config = make_config(tmp_path, ohif_dir=fake_dist)
    archive.index.accounts.add("amina", generate_password_hash(PASSWORD), "researcher")
    return create_app(config, archive, b"k" * 32).test_client()


def log_in(client: FlaskClient) -> None:
    with client.session_transaction() as session:
        session["csrf"] = "token"
    answer = client.post(
        "/login", data={"username": "amina", "password": PASSWORD, "csrf_token": "token"}
    )
    assert answer.status_code == 302


@pytest.mark.slow
def test_a_stranger_is_sent_to_log_in_and_back_to_the_same_study(client: FlaskClient) -> None:
    target = "/ohif/viewer?StudyInstanceUIDs=1.2.3.4"
    first = client.get(target)
    assert first.status_code == 302 and first.headers["Location"].startswith("/login?next=")
    for asset in ("/ohif/app-config.js", "/ohif/app.bundle.0123456789abcdef.js"):
        assert client.get(asset).status_code == 302  # nothing of OHIF's without a login
    with client.session_transaction() as session:
        session["csrf"] = "token"
    login = first.headers["Location"]
    answer = client.post(
        login, data={"username": "amina", "password": PASSWORD, "csrf_token": "token"}
    )
    assert answer.status_code == 302 and answer.headers["Location"] == target


@pytest.mark.slow
def test_every_role_opens_it_and_its_routes_answer_the_page(client: FlaskClient) -> None:
    log_in(client)  # a researcher: the least clinical role
    for path in ("/ohif/", "/ohif/viewer", "/ohif/viewer/dicomweb"):
        answer = client.get(path + "?StudyInstanceUIDs=1.2.3")
        assert answer.status_code == 200 and b"PUBLIC_URL" in answer.data, path
        assert "no-store" in answer.headers["Cache-Control"]
    assert client.get("/ohif").status_code in (301, 308)


@pytest.mark.slow
def test_missing_files_and_paths_outside_are_404_never_the_page(client: FlaskClient) -> None:
    log_in(client)
    for path in (
        "/ohif/nope.bundle.0123456789abcdef.js",
        "/ohif/../outside.txt",
        "/ohif/%2e%2e/outside.txt",
        "/ohif/..%2foutside.txt",
        "/ohif/%2e%2e%2foutside.txt",
        "/ohif//etc/passwd",
        "/ohif/x/../../outside.txt",
    ):
        answer = client.get(path)
        assert answer.status_code in (404, 308), (path, answer.status_code)
        assert b"not OHIF's" not in answer.data and b"root:" not in answer.data


def test_a_path_too_long_for_the_file_system_is_404_or_the_page_never_500(
    client: FlaskClient,
) -> None:
    """An outside tester's `/ohif/` + 5000 characters answered 500 (the file
    system's "file name too long" escaped the lookup)."""
    log_in(client)
    for path in ("a" * 5000 + ".js", "x/" + "b" * 300 + ".wasm", "c" * 5000 + ".js.gz"):
        answer = client.get("/ohif/" + path)
        assert answer.status_code == 404, (len(path), answer.status_code)
        assert b"PUBLIC_URL" not in answer.data
    for path in ("a" * 5000, "viewer/" + "d" * 300):  # OHIF's own routes: the page
        answer = client.get("/ohif/" + path)
        assert answer.status_code == 200 and b"PUBLIC_URL" in answer.data


@pytest.mark.slow
def test_hashed_bundles_are_cached_long_the_rest_revalidated(client: FlaskClient) -> None:
    log_in(client)
    bundle = client.get("/ohif/app.bundle.0123456789abcdef.js")
    assert bundle.status_code == 200
    assert "max-age=31536000" in bundle.headers["Cache-Control"]
    assert "immutable" in bundle.headers["Cache-Control"]
    wasm = client.get("/ohif/0123456789abcdef.wasm")
    assert wasm.mimetype == "application/wasm"  # else no streaming compile
    config = client.get("/ohif/app-config.js")
    assert "no-cache" in config.headers["Cache-Control"]
    assert config.headers.get("ETag") or config.headers.get("Last-Modified")


@pytest.mark.slow
def test_large_files_go_out_compressed_to_browsers_that_take_gzip(
    client: FlaskClient, fake_dist: Path
) -> None:
    ohif_install.compress(fake_dist)
    (fake_dist / "app.bundle.0123456789abcdef.js").write_text("console.log('ohif');" * 200)
    ohif_install.compress(fake_dist)
    log_in(client)
    url = "/ohif/app.bundle.0123456789abcdef.js"
    packed = client.get(url, headers={"Accept-Encoding": "gzip, deflate, br"})
    assert packed.headers["Content-Encoding"] == "gzip" and packed.mimetype == "text/javascript"
    assert gzip.decompress(packed.data) == ("console.log('ohif');" * 200).encode()
    assert "Accept-Encoding" in packed.headers["Vary"]
    assert "immutable" in packed.headers["Cache-Control"]
    plain = client.get(url, headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    assert plain.data == ("console.log('ohif');" * 200).encode()


@pytest.mark.slow
def test_ohif_s_policy_is_for_ohif_only_and_names_no_other_origin(client: FlaskClient) -> None:
    log_in(client)
    policy = client.get("/ohif/viewer").headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert "'wasm-unsafe-eval'" in directives["script-src"]
    assert "'unsafe-inline'" not in directives["script-src"]
    assert "'unsafe-eval'" not in directives["script-src"]
    assert len(re.findall("'sha256-", directives["script-src"])) == 2  # index.html's two
    assert directives["worker-src"] == "'self' blob:"
    assert directives["frame-ancestors"] == "'none'"
    assert not re.search(r"https?:|\*|wss?:", policy)
    # A worker takes its policy from its own script's answer: that one lets
    # the JPEG 2000 codec's bindings compile (new Function), and no more.
    worker = client.get("/ohif/app.bundle.0123456789abcdef.js")
    assert worker.headers["Content-Security-Policy"] == policy.replace(
        "'wasm-unsafe-eval'", "'wasm-unsafe-eval' 'unsafe-eval'"
    )
    # Everywhere else the node's strict policy stays.
    assert client.get("/").headers["Content-Security-Policy"] == NODE_CSP
    assert client.get("/dicom-web/studies").headers["Content-Security-Policy"] == NODE_CSP


@pytest.mark.slow
def test_without_ohif_installed_it_says_so_and_the_list_has_no_button(
    tmp_path: Path, archive: Archive
) -> None:
    config = make_config(tmp_path, ohif_dir=tmp_path / "nothing-here")
    archive.index.accounts.add("amina", generate_password_hash(PASSWORD), "cardiologist")
    client = create_app(config, archive, b"k" * 32).test_client()
    log_in(client)
    answer = client.get("/ohif/viewer")
    assert answer.status_code == 503 and "make ohif" in answer.get_json()["message"]
    assert b"StudyInstanceUIDs" not in client.get("/").data


# --- the real OHIF in Chromium ----------------------------------------------


@dataclass
class Demo:
    node: Node
    base: str
    echo: Dataset  # as stored (de-identified UIDs)
    angios: dict[int, Dataset]  # run 0 of each angio study

    def frames(self, ds: Dataset) -> np.ndarray:
        """The pixels the node stored (burned-in text blanked), decoded here."""
        data = self.node.archive.read(ds.SOPInstanceUID)
        assert data is not None
        return dcmread(io.BytesIO(data)).pixel_array


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """A node with the demo set (as `dicomnode demo` loads it) and a user."""
    if not ohif_install.installed():
        pytest.fail("OHIF is not installed: run `make ohif` (make test does)")
    tmp = tmp_path_factory.mktemp("ohif")
    config = replace(make_config(tmp), http_host="127.0.0.1")
    with Node(config, web=True) as node:
        node.archive.index.accounts.add("amina", generate_password_hash(PASSWORD), "cardiologist")
        stored: dict[str, object] = {}
        with demo_files() as paths:
            for path in paths:
                data, syntax = split_file(path.read_bytes())
                result = node.ingestor.ingest(Incoming(data, syntax, issuer="DEMO"))
                stored[path.name] = result
        angios = {i: stored[f"xa-{i}-0.dcm"].dataset for i in (1, 2)}  # type: ignore[attr-defined]
        echo = stored[ECHO].dataset  # type: ignore[attr-defined]
        assert echo is not None and all(ds is not None for ds in angios.values())
        yield Demo(node, f"http://127.0.0.1:{node.http_port}", echo, angios)


@pytest.fixture
def browser():
    with chromium() as running:
        yield running


class Watch:
    """Every DICOMweb answer OHIF gets and every console error, kept."""

    def __init__(self, page, base: str) -> None:
        self.dicomweb: list[tuple[int, str, str, str]] = []
        self.errors: list[str] = []
        self.base = base
        page.on("response", self.response)
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on("requestfailed", self.failed)

    def failed(self, request) -> None:
        # OHIF's and its data's, not the node's own list (its lazy thumbnails
        # are cancelled when the browser leaves the page).
        if request.url.startswith((self.base + "/dicom-web", self.base + "/ohif/")):
            self.errors.append(f"failed: {request.url} {request.failure}")

    def response(self, answer) -> None:
        if answer.url.startswith(self.base + "/dicom-web"):
            accept = answer.request.headers.get("accept", "")
            body = answer.text()[:200] if answer.status >= 400 else ""
            self.dicomweb.append((answer.status, answer.url[len(self.base) :], accept, body))

    def check(self) -> None:
        failed = [entry for entry in self.dicomweb if entry[0] >= 400]
        assert failed == [], failed
        assert self.dicomweb, "OHIF asked the node nothing"
        assert self.errors == [], self.errors


def new_page(browser, demo: Demo, width: int = 1400, height: int = 900, scale: float = 1):
    context = browser.new_context(
        viewport={"width": width, "height": height}, device_scale_factor=scale
    )
    page = context.new_page()
    return page, Watch(page, demo.base)


def log_in_page(page) -> None:
    page.fill("input[name=username]", "amina")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")


def shown_image(page) -> tuple[str, np.ndarray]:
    """The image id cornerstone shows and the viewport canvas's pixels
    (grey), read from the canvas itself once the image is rendered."""
    page.wait_for_function(
        """() => {
            const e = window.cornerstone && window.cornerstone.getEnabledElements()[0];
            return e && e.viewport.getCurrentImageId && e.viewport.getCurrentImageId()
                && e.viewport.getImageData && e.viewport.getImageData();
        }""",
        timeout=60000,
    )
    page.wait_for_load_state("networkidle")
    image_id, url = page.evaluate(
        """() => {
            const viewport = window.cornerstone.getEnabledElements()[0].viewport;
            viewport.render();
            return [viewport.getCurrentImageId(), viewport.getCanvas().toDataURL('image/png')];
        }"""
    )
    png = base64.b64decode(url.split(",", 1)[1])
    return image_id, np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)


def keep(canvas: np.ndarray, name: str) -> None:
    """The canvas as read, for a person to look at."""
    Image.fromarray(canvas.astype(np.uint8)).save(ARTIFACTS / f"{name}-canvas.png")


def likeness(canvas: np.ndarray, frame: np.ndarray) -> float:
    """Correlation of the canvas with ``frame`` fitted into it and centred
    (cornerstone's initial fit), so any window/level still matches."""
    height, width = canvas.shape
    rows, cols = frame.shape[:2]
    scale = min(width / cols, height / rows)
    w, h = cols * scale, rows * scale
    left, top = (width - w) / 2, (height - h) / 2
    region = canvas[int(top + 2) : int(top + h - 2), int(left + 2) : int(left + w - 2)]
    grey = frame if frame.ndim == 2 else frame.astype(np.float64).mean(axis=2)
    expected = np.asarray(
        Image.fromarray(grey.astype(np.float32)).resize(region.shape[::-1], Image.BILINEAR)
    )
    return float(np.corrcoef(region.ravel(), expected.ravel())[0, 1])


@pytest.mark.slow
@pytest.mark.peers
def test_the_study_list_shows_the_demo_studies(browser, demo: Demo) -> None:
    page, watch = new_page(browser, demo)
    page.goto(demo.base + "/ohif/")
    log_in_page(page)
    page.wait_for_url("**/ohif/")
    studies = page.evaluate(
        "() => fetch('/dicom-web/studies', {headers: {Accept: 'application/dicom+json'}})"
        ".then(r => r.json())"
    )
    pseudonyms = {s["00100020"]["Value"][0] for s in studies}
    assert len(pseudonyms) >= 8  # echo clips from the wheels and three angio runs
    for pseudonym in pseudonyms:
        page.get_by_text(pseudonym, exact=True).first.wait_for()
    page.get_by_text("房间隔缺损封堵术").first.wait_for()  # non-Latin descriptions too
    page.screenshot(path=str(ARTIFACTS / "ohif-study-list.png"))
    # OHIF's patient filter: a QIDO wildcard (PatientName=*text*) the node matches.
    chosen, *others = sorted(pseudonyms)
    with page.expect_response(lambda r: "PatientName=" in unquote(r.url)) as asked:
        page.locator("input").first.fill(chosen[4:])
    assert f"PatientName=*{chosen[4:]}*" in unquote(asked.value.url)
    assert asked.value.status == 200
    page.get_by_text(chosen, exact=True).first.wait_for()  # a child with two studies: two rows
    for other in others:
        page.get_by_text(other, exact=True).first.wait_for(state="detached")
    page.screenshot(path=str(ARTIFACTS / "ohif-study-list-filtered.png"))
    watch.check()


@pytest.mark.slow
@pytest.mark.peers
@pytest.mark.parametrize(
    ("width", "height", "scale"), [(1400, 900, 1), (1024, 700, 2), (1920, 1080, 1.5)]
)
def test_an_echo_clip_opens_on_its_first_frame(
    browser, demo: Demo, width: int, height: int, scale: float
) -> None:
    page, watch = new_page(browser, demo, width, height, scale)
    study, series = demo.echo.StudyInstanceUID, demo.echo.SeriesInstanceUID
    page.goto(f"{demo.base}/ohif/viewer?StudyInstanceUIDs={study}")
    log_in_page(page)  # a stranger: sent to log in, then back to this study
    page.wait_for_url(f"**/ohif/viewer?StudyInstanceUIDs={study}")
    image_id, canvas = shown_image(page)
    assert f"/series/{series}/instances/{demo.echo.SOPInstanceUID}/frames/1" in image_id
    assert canvas.max() > 100 and (canvas > 10).mean() > 0.1  # not black
    keep(canvas, f"ohif-echo-{width}x{height}@{scale}")
    frames = demo.frames(demo.echo)  # RGB (pydicom converts YBR)
    first, last = likeness(canvas, frames[0]), likeness(canvas, frames[60])
    assert first > 0.9 and first > last, (first, last)
    page.screenshot(path=str(ARTIFACTS / f"ohif-echo-{width}x{height}@{scale}.png"))
    watch.check()


@pytest.mark.slow
@pytest.mark.peers
@pytest.mark.parametrize(
    ("index", "description"),
    [(1, "Пӯшидани ОАП"), (2, "房间隔缺损封堵术")],  # JPEG 2000, RLE
)
def test_an_angio_run_opens_and_steps_to_its_next_frame(
    browser, demo: Demo, index: int, description: str
) -> None:
    angio = demo.angios[index]
    frames = demo.frames(angio)
    page, watch = new_page(browser, demo)
    page.goto(demo.base + "/login")
    log_in_page(page)
    page.wait_for_url("**/")
    # One click from the node's own study list (its viewer stays the default).
    row = page.locator("table.studies tbody tr", has_text=description).first
    row.locator("form.ohif button").click()
    page.wait_for_url(f"**/ohif/viewer?StudyInstanceUIDs={angio.StudyInstanceUID}")
    page.wait_for_function(
        """() => {
            const e = window.cornerstone && window.cornerstone.getEnabledElements()[0];
            return e && e.viewport.getCurrentImageId && e.viewport.getCurrentImageId();
        }""",
        timeout=60000,
    )
    # The series has two runs; OHIF shows one: find which, compare with it.
    image_id, canvas = shown_image(page)
    # Run 1 of the series (InstanceNumber 1), its first frame.
    assert image_id.endswith(f"/instances/{angio.SOPInstanceUID}/frames/1"), image_id
    assert (canvas > 40).mean() > 0.2
    keep(canvas, f"ohif-angio{index}-frame1")
    first = likeness(canvas, frames[0])
    assert first > 0.9 and first > likeness(canvas, frames[-1]), first
    page.screenshot(path=str(ARTIFACTS / f"ohif-angio{index}-frame1.png"))
    page.keyboard.press("ArrowDown")  # OHIF: next image
    page.wait_for_function(
        "() => window.cornerstone.getEnabledElements()[0].viewport.getCurrentImageIdIndex() === 1"
    )
    image_id, canvas = shown_image(page)
    assert image_id.endswith(f"/instances/{angio.SOPInstanceUID}/frames/2"), image_id
    second = likeness(canvas, frames[1])
    assert second > 0.9 and second > likeness(canvas, frames[-1]), second
    page.screenshot(path=str(ARTIFACTS / f"ohif-angio{index}-frame2.png"))
    watch.check()
