"""Frame delivery benchmark: the node's viewer against Orthanc, same clips, one run.

    python -m bench.viewer          # (or `make bench`)

Three clips of the sample wheels are imported into a fresh `dicomnode serve`
and uploaded to Orthanc, both running side by side over loopback:

- First view in headless Chromium (issue #15): the 30-frame 800x600 RGB
  uncompressed echo (planar configuration 1) and the 51-frame 1016x672 RGB
  one. The node: `Clip.open` (static/clip.js, as the viewer calls it) until
  every frame is ready. Orthanc: every frame's `/instances/{id}/frames/{n}/
  rendered` (its REST API) loaded as images, until all are decoded: the way
  the node's viewer fetched frames before. Each run in a fresh browser
  context (cold browser cache); the first run is also the server's first
  sight of the clip. The node run also tells whether playing from the first
  frame would ever have waited for one (frame arrival against its time).
- The 120-frame JPEG baseline echo (issue #4): one keep-alive connection
  each, metadata + frame 1, then all 120 frames in order; Orthanc's DICOMweb
  `/rendered` (when the plugin is installed) and `/frames/N/preview`. Last,
  click on the study to cine playing.
"""

from __future__ import annotations

import http.client
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import zipfile
from pathlib import Path

from bench.ingest import OUT
from bench.peers import DICOMWEB_PLUGIN, ENV, free_port, orthanc, wait_for_echo, wait_for_http
from dicomnode.ops.samples import sample_file

CLIP = "color3d_jpeg_baseline.dcm"
FIRST_VIEW = {  # name: (sample, member of a zip or None, frames, columns)
    "30-frame 800x600 RGB": ("ultrasounds/ultrasound-multiframe.dcm", None, 30, 800),
    "51-frame 1016x672 RGB": ("ultrasounds/RGB_CINE.zip", "RGB_CINE.dcm", 51, 1016),
}
RUNS = 5
PASSWORD = "cine timing run 2026"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Clip.open until every frame is ready; when each frame was ready, against
# when it would be shown had play started with the first.
NODE_FIRST_VIEW = """async (uid) => {
  const start = performance.now();
  const clip = await Clip.open([uid]);
  const first = performance.now() - start;
  const at = new Array(clip.count).fill(null);
  await new Promise((done) => {
    const poll = () => {
      const now = performance.now() - start;
      for (let i = 0; i < clip.count; i++) if (at[i] === null && clip.ready(i)) at[i] = now;
      if (at.every((t) => t !== null)) return done();
      requestAnimationFrame(poll);
    };
    poll();
  });
  await clip.loaded;
  const all = performance.now() - start;
  let due = first, late = 0;
  for (let i = 0; i < clip.count; i++) { if (at[i] > due + 17) late += 1; due += clip.times[i]; }
  clip.close();
  return [first, all, late];
}"""

IMAGES_FIRST_VIEW = """async (urls) => {
  const start = performance.now();
  const images = urls.map((url) => { const img = new Image(); img.src = url; return img; });
  await images[0].decode();
  const first = performance.now() - start;
  await Promise.all(images.map((img) => img.decode()));
  return [first, performance.now() - start, null];
}"""


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


def clip_files(work: Path) -> dict[str, Path]:
    """The first-view clips as files (the 51-frame one comes zipped)."""
    files = {}
    for name, (sample, member, _, _) in FIRST_VIEW.items():
        if member is None:
            files[name] = sample_file(sample)
        else:
            with zipfile.ZipFile(sample_file(sample)) as archive:
                files[name] = Path(archive.extract(member, work / "clips"))
    return files


def node_server(work: Path, files: list[Path]) -> tuple[subprocess.Popen, int]:
    env = {
        **ENV,
        "DICOMNODE_DATA_DIR": str(work / "var"),
        "DICOMNODE_KEY_DIR": str(work / "keys"),
        "DICOMNODE_DIMSE_PORT": str(free_port()),
        "DICOMNODE_HTTP_PORT": str(free_port()),
        "DICOMNODE_LOG_LEVEL": "WARNING",
        "DICOMNODE_CONFIG": "/dev/null",
        "DICOMNODE_MIN_FREE_DISK_MB": "64",
        # Delivery is measured, not ingest: the sample clips' banners carry
        # words OCR would hold them for.
        "DICOMNODE_OCR": "false",
    }
    cli = [sys.executable, "-m", "dicomnode.cli"]
    for path in files:
        subprocess.run(
            [*cli, "import", "--no-progress", str(path)], env=env, check=True, capture_output=True
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
    return process, int(env["DICOMNODE_HTTP_PORT"])


def node_login(port: int) -> Client:
    client = Client(port)
    _, page, _ = client.request("GET", "/login")
    token = re.search(rb'name="csrf_token" value="([^"]+)"', page).group(1).decode()
    body = urllib.parse.urlencode({"username": "bench", "password": PASSWORD, "csrf_token": token})
    client.request(
        "POST", "/login", body.encode(), {"Content-Type": "application/x-www-form-urlencoded"}
    )
    return client


def node_instances(client: Client) -> dict[tuple[int, int], tuple[str, str]]:
    """(frames, columns) of every stored instance: its (de-identified) UID and
    its study's page."""
    _, listing, _ = client.request("GET", "/")
    found = {}
    for study in sorted(set(re.findall(rb'href="(/studies/[^"]+)"', listing))):
        _, page, _ = client.request("GET", study.decode())
        for uids in re.findall(rb'data-instances="([^"]+)"', page):
            for uid in uids.decode().split():
                _, meta, _ = client.request("GET", f"/api/instances/{uid}/meta")
                meta = json.loads(meta)
                found[(meta["frames"], meta["columns"])] = uid, study.decode()
    return found


def time_frames(fetch, count: int) -> tuple[float, float]:
    start = time.perf_counter()
    fetch(1, first=True)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for number in range(1, count + 1):
        fetch(number, first=False)
    return first, time.perf_counter() - start


def browser_log_in(page, port: int) -> None:
    page.goto(f"http://127.0.0.1:{port}/login")
    page.fill("input[name=username]", "bench")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/")


def first_views(port: int, uids: dict[str, str], orthanc_base: str, ids: dict[str, str]) -> dict:
    """Per clip and server: [(first frame ms, all frames ms, late frames)] of each run."""
    from playwright.sync_api import sync_playwright

    results: dict[tuple[str, str], list] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        for _ in range(RUNS):
            for name, (_, _, frames, _) in FIRST_VIEW.items():
                context = browser.new_context()  # a cold browser cache
                page = context.new_page()
                browser_log_in(page, port)
                page.add_script_tag(url="/static/clip.js")
                row = page.evaluate(NODE_FIRST_VIEW, uids[name])
                results.setdefault((name, "node"), []).append(row)
                context.close()
                context = browser.new_context()
                page = context.new_page()
                page.goto(f"{orthanc_base}/system")
                urls = [f"/instances/{ids[name]}/frames/{n}/rendered" for n in range(frames)]
                row = page.evaluate(IMAGES_FIRST_VIEW, urls)
                results.setdefault((name, "Orthanc"), []).append(row)
                context.close()
        browser.close()
    return results


def browser_click_to_play(port: int, study: str) -> float:
    """From a click on the study's link in the list to its cine playing."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        page = browser.new_page()
        browser_log_in(page, port)
        link = page.locator(f'table.studies tbody a[href="{study}"]').first
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


def print_first_views(views: dict) -> None:
    print(f"First view in headless Chromium, {RUNS} runs each (cold browser cache):\n")
    print(
        "| clip | server | first frame (ms) | all frames (ms, median) | all frames (ms, each run)"
        " | frames late for play (each run) | Orthanc / node |"
    )
    print("|---|---|---:|---:|---|---|---:|")
    for name in FIRST_VIEW:
        node_all = statistics.median(r[1] for r in views[(name, "node")])
        for server in ("node", "Orthanc"):
            runs = views[(name, server)]
            first = statistics.median(r[0] for r in runs)
            whole = statistics.median(r[1] for r in runs)
            each = ", ".join(f"{r[1]:.0f}" for r in runs)
            late = "" if runs[0][2] is None else ", ".join(str(r[2]) for r in runs)
            print(
                f"| {name} | {server} | {first:.0f} | {whole:.0f} | {each} | {late}"
                f" | {whole / node_all:.1f}x |"
            )


def main() -> int:
    OUT.mkdir(exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        work = Path(tmp)
        files = clip_files(work)
        node, port = node_server(work, [sample_file(CLIP), *files.values()])
        try:
            with orthanc(work / "orthanc-run", dicomweb=True) as peer:
                o = Client(peer.http_port)
                ids = {}
                for name, path in files.items():
                    _, answer, _ = o.request("POST", "/instances", path.read_bytes())
                    ids[name] = json.loads(answer)["ID"]
                client = node_login(port)
                by_shape = node_instances(client)
                uids = {name: by_shape[(f, c)][0] for name, (_, _, f, c) in FIRST_VIEW.items()}
                views = first_views(port, uids, peer.base, ids)

                print_first_views(views)
                jpeg, jpeg_study = by_shape[(120, 640)]
                client = node_login(port)  # the first connections idled out meanwhile
                o = Client(peer.http_port)

                def node_fetch(number: int, first: bool) -> None:
                    if first:
                        client.request("GET", f"/api/instances/{jpeg}/meta")
                    status, _, _ = client.request("GET", f"/api/instances/{jpeg}/frames/{number}")
                    assert status == 200, status

                rows.append(("node (JPEG as stored)", *time_frames(node_fetch, 120)))
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
                        "GET",
                        f"{rendered}/frames/{number}/rendered",
                        headers={"Accept": "image/jpeg"},
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
            click = browser_click_to_play(port, jpeg_study)
        finally:
            node.terminate()
            node.wait(timeout=60)
    node_all = rows[0][2]
    print("\n| server | first frame (ms) | all 120 frames (s) | node speed vs it |")
    print("|---|---:|---:|---:|")
    for name, first, total in rows:
        print(f"| {name} | {first * 1000:.1f} | {total:.3f} | {total / node_all:.1f}x |")
    print(f"\nheadless Chromium, click on the study to cine playing: {click:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
