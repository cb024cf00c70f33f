"""Frame delivery benchmark: the node's viewer against Orthanc, same clip.

    python -m bench.viewer          # (or `make bench`)

The 120-frame JPEG baseline echo clip of the pydicom-data wheel is imported
into a fresh `dicomnode serve` and uploaded to Orthanc. Over loopback, one
keep-alive HTTP connection each: the first frame (metadata + frame 1, cold),
then all 120 frames in order. Orthanc is asked for DICOMweb `/rendered`
frames (orthanc-dicomweb plugin) and for its own `/frames/N/preview`. Last,
headless Chromium logs in and measures click-on-study to cine playing.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from bench.ingest import OUT
from bench.peers import DICOMWEB_PLUGIN, ENV, free_port, orthanc, wait_for_echo, wait_for_http
from dicomnode.samples import sample_file

CLIP = "color3d_jpeg_baseline.dcm"
PASSWORD = "cine timing run 2026"


class Client:
    """One keep-alive connection with a cookie, like a browser tab."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port)
        self.cookie = ""

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, bytes, http.client.HTTPResponse]:
        headers = {**(headers or {}), **({"Cookie": self.cookie} if self.cookie else {})}
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        data = response.read()
        if cookie := response.getheader("Set-Cookie"):
            self.cookie = cookie.split(";")[0]
        return response.status, data, response


def node_server(work: Path) -> tuple[subprocess.Popen, int, dict]:
    env = {
        **ENV,
        "DICOMNODE_DATA_DIR": str(work / "var"),
        "DICOMNODE_KEY_DIR": str(work / "keys"),
        "DICOMNODE_DIMSE_PORT": str(free_port()),
        "DICOMNODE_HTTP_PORT": str(free_port()),
        "DICOMNODE_LOG_LEVEL": "WARNING",
        "DICOMNODE_CONFIG": os.devnull,
        "DICOMNODE_MIN_FREE_DISK_MB": "64",
    }
    cli = [sys.executable, "-m", "dicomnode.cli"]
    subprocess.run(
        [*cli, "import", "--no-progress", str(sample_file(CLIP))],
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*cli, "user", "add", "bench", "--password-stdin"],
        env=env,
        check=True,
        input=PASSWORD + "\n",
        text=True,
        capture_output=True,
    )
    log = (work / "node.log").open("w")
    process = subprocess.Popen([*cli, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    wait_for_echo(int(env["DICOMNODE_DIMSE_PORT"]), "CHDNODE", process)
    wait_for_http(int(env["DICOMNODE_HTTP_PORT"]))
    return process, int(env["DICOMNODE_HTTP_PORT"]), env


def node_login(port: int) -> tuple[Client, str]:
    client = Client(port)
    _, page, _ = client.request("GET", "/login")
    token = re.search(rb'name="csrf_token" value="([^"]+)"', page).group(1).decode()
    body = urllib.parse.urlencode({"username": "bench", "password": PASSWORD, "csrf_token": token})
    client.request(
        "POST", "/login", body.encode(), {"Content-Type": "application/x-www-form-urlencoded"}
    )
    _, listing, _ = client.request("GET", "/")
    study = re.search(rb'href="(/studies/[^"]+)"', listing).group(1).decode()
    _, page, _ = client.request("GET", study)
    uid = re.search(rb'data-instances="([^" ]+)', page).group(1).decode()
    return client, uid


def time_frames(fetch, count: int) -> tuple[float, float]:
    start = time.perf_counter()
    fetch(1, first=True)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for number in range(1, count + 1):
        fetch(number, first=False)
    return first, time.perf_counter() - start


def browser_click_to_play(port: int) -> float:
    from playwright.sync_api import sync_playwright

    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/login")
        page.fill("input[name=username]", "bench")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        link = page.locator("table.studies tbody a").first
        start = time.perf_counter()
        link.click()
        page.wait_for_function(
            "() => window.viewerState && window.viewerState()[0].playing"
            " && window.viewerState()[0].frame > 0",
            polling="raf",
        )
        elapsed = time.perf_counter() - start
        browser.close()
    return elapsed


def main() -> int:
    OUT.mkdir(exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        work = Path(tmp)
        node, port, _ = node_server(work)
        try:
            client, uid = node_login(port)

            def node_fetch(number: int, first: bool) -> None:
                if first:
                    client.request("GET", f"/api/instances/{uid}/meta")
                status, _, _ = client.request("GET", f"/api/instances/{uid}/frames/{number}")
                assert status == 200, status

            rows.append(("node (JPEG as stored)", *time_frames(node_fetch, 120)))
            click = browser_click_to_play(port)
        finally:
            node.terminate()
            node.wait(timeout=60)
        with orthanc(work, dicomweb=True) as peer:
            o = Client(peer.http_port)
            _, answer, _ = o.request("POST", "/instances", sample_file(CLIP).read_bytes())
            info = json.loads(answer)
            _, tags, _ = o.request("GET", f"/instances/{info['ID']}/simplified-tags")
            tags = json.loads(tags)
            rendered = (
                f"/dicom-web/studies/{tags['StudyInstanceUID']}/series/"
                f"{tags['SeriesInstanceUID']}/instances/{tags['SOPInstanceUID']}"
            )

            def orthanc_rendered(number: int, first: bool) -> None:
                status, _, _ = o.request(
                    "GET", f"{rendered}/frames/{number}/rendered", headers={"Accept": "image/jpeg"}
                )
                assert status == 200, status

            def orthanc_preview(number: int, first: bool) -> None:
                status, _, _ = o.request(
                    "GET", f"/instances/{info['ID']}/frames/{number - 1}/preview"
                )
                assert status == 200, status

            if Path(DICOMWEB_PLUGIN).exists():
                rows.append(("Orthanc DICOMweb /rendered", *time_frames(orthanc_rendered, 120)))
            rows.append(("Orthanc /frames/N/preview", *time_frames(orthanc_preview, 120)))
    node_all = rows[0][2]
    print("| server | first frame (ms) | all 120 frames (s) | node speed vs it |")
    print("|---|---:|---:|---:|")
    for name, first, total in rows:
        print(f"| {name} | {first * 1000:.1f} | {total:.3f} | {total / node_all:.1f}x |")
    print(f"\nheadless Chromium, click on the study to cine playing: {click:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
