"""Install the prebuilt OHIF viewer v3 (npm package ``@ohif/app``) for `/ohif/`.

`make ohif` (a dependency of `make run`, `make demo` and `make test`) runs
``python -m viewer.ohif_install``. It asks npm for the pinned tarball
(``npm pack``: no ``npm install``, no dependency tree, no build step),
checks it against the pinned sha512 and unpacks its ``dist/`` into
``.ohif/<version>/dist`` in the checkout. A stamp file makes a second run
free; nothing is fetched when the node runs.

The shipped dist is built for the site root (webpack's public path and
every URL in ``index.html`` start with ``/``, and OHIF reads no public path
at run time). Serving it under `/ohif/` is what a build with
``PUBLIC_URL=/ohif/`` produces, so the same literal replacements are made
here, each counted so that another OHIF version fails loudly instead of
half-working (see `PUBLIC_PATH_EDITS`). ``app-config.js`` is the shipped
default with only the data source's names and roots changed
(`node_app_config`); the shipped file stays beside it as
``app-config.default.js``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "3.13.2"
PACKAGE = f"@ohif/app@{VERSION}"
# npm view @ohif/app@3.13.2 dist.integrity
INTEGRITY = (
    "sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4f"
    "jEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
)
CHECKOUT = Path(__file__).resolve().parent.parent
INSTALL_ROOT = CHECKOUT / ".ohif"
PREFIX = "/ohif/"
DICOMWEB_ROOT = "/dicom-web"
STAMP = ".installed"
RECIPE = 2  # raised when what is done to the dist changes: installs anew
# Served gzip-compressed where the browser accepts it (`viewer.ohif`): the
# app bundle alone is 17 MB, 3.4 MB compressed, over a hospital's line.
COMPRESSED = (".js", ".css", ".wasm", ".json", ".html")
COMPRESS_ABOVE = 1024  # bytes
NPM_SECONDS = 900  # a 50 MB download on a slow hospital line

# (file pattern, shipped text, replacement, how many times per matching file;
# None: at least once in the files that have it, and in one file at least).
PUBLIC_PATH_EDITS: tuple[tuple[str, str, str, int | None], ...] = (
    ("index.html", 'window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{PREFIX}"', 2),
    ("index.html", 'href="/', f'href="{PREFIX}', None),
    ("index.html", 'src="/', f'src="{PREFIX}', None),
    ("manifest.json", '"/assets/', f'"{PREFIX}assets/', None),
    ("*.css", "url(/", f"url({PREFIX}", None),
    ("*.js", '__webpack_require__.p = "/";', f'__webpack_require__.p = "{PREFIX}";', None),
)
# The shipped default data source (a public demo server) and what the node's takes.
DATA_SOURCE_EDITS: tuple[tuple[str, str], ...] = (
    ("friendlyName: 'AWS S3 Static wado server'", "friendlyName: 'CHD node DICOMweb'"),
    ("name: 'aws'", "name: 'dicomnode'"),
    (
        "wadoUriRoot: 'https://d14fa38qiwhyfd.cloudfront.net/dicomweb'",
        f"wadoUriRoot: '{DICOMWEB_ROOT}'",
    ),
    ("qidoRoot: 'https://d14fa38qiwhyfd.cloudfront.net/dicomweb'", f"qidoRoot: '{DICOMWEB_ROOT}'"),
    ("wadoRoot: 'https://d14fa38qiwhyfd.cloudfront.net/dicomweb'", f"wadoRoot: '{DICOMWEB_ROOT}'"),
)


class InstallError(RuntimeError):
    """OHIF could not be installed; the message is one line saying why."""


def install_dir(root: Path = INSTALL_ROOT) -> Path:
    return root / VERSION


def dist_dir(root: Path = INSTALL_ROOT) -> Path:
    """Where the served files are (`viewer.ohif` reads it)."""
    return install_dir(root) / "dist"


def stamp_text(integrity: str = INTEGRITY) -> str:
    return f"{integrity} recipe {RECIPE}"


def installed(root: Path = INSTALL_ROOT) -> bool:
    stamp = install_dir(root) / STAMP
    return stamp.is_file() and stamp.read_text().strip() == stamp_text()


def sri(data_path: Path) -> str:
    """The npm ``integrity`` string (Subresource Integrity, sha512) of a file."""
    digest = hashlib.sha512()
    with data_path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def download(folder: Path, package: str = PACKAGE) -> Path:
    """``npm pack`` the package into ``folder`` (the tarball only)."""
    npm = shutil.which("npm")
    if npm is None:
        raise InstallError("npm is not installed (Debian package npm): `make ohif` installs it")
    try:
        done = subprocess.run(
            [npm, "pack", package, "--json", "--pack-destination", str(folder)],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=NPM_SECONDS,
            env={**os.environ, "npm_config_fetch_retries": "1", "npm_config_audit": "false"},
        )
    except subprocess.TimeoutExpired:
        raise InstallError(f"npm pack {package}: no answer in {NPM_SECONDS} s") from None
    if done.returncode != 0:
        raise InstallError(f"cannot download {package} from the npm registry: {_why(done.stderr)}")
    try:
        name = json.loads(done.stdout)[0]["filename"]
    except (ValueError, LookupError, TypeError):
        name = next((p.name for p in folder.glob("*.tgz")), "")
    tarball = folder / name
    if not name or not tarball.is_file():
        raise InstallError(f"npm pack {package} wrote no tarball")
    return tarball


def _why(stderr: str) -> str:
    """npm's reason in one line: its fetch error, else its first error line."""
    lines = [re.sub(r"^npm (error|ERR!)\s*", "", ln).strip() for ln in stderr.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("at ")]
    reason = next((ln for ln in lines if "reason:" in ln or ln.startswith("404")), "")
    return (reason or (lines[0] if lines else "no message"))[:300]


def unpack(tarball: Path, integrity: str, target: Path) -> None:
    """Check ``tarball`` against ``integrity``, then put its ``package/dist/``
    into ``target`` (which must not exist). Members outside ``dist/``, links
    and anything the tar "data" filter refuses are not written."""
    found = sri(tarball)
    if found != integrity:
        raise InstallError(f"{tarball.name}: integrity {found[:23]}… is not the pinned one")
    target.mkdir(parents=True)
    with tarfile.open(tarball, "r:gz") as archive:
        members = []
        for member in archive.getmembers():
            if not member.name.startswith("package/dist/") or not (
                member.isfile() or member.isdir()
            ):
                continue
            member.name = member.name.removeprefix("package/dist/")
            members.append(member)
        try:
            archive.extractall(target, members=members, filter="data")
        except tarfile.FilterError as error:
            raise InstallError(f"{tarball.name}: unsafe member refused ({error})") from None
    if not (target / "index.html").is_file():
        raise InstallError(f"{tarball.name}: no dist/index.html in the package")


def under_prefix(dist: Path) -> None:
    """Rewrite the root-relative public path of a root build for `PREFIX`."""
    for pattern, old, new, times in PUBLIC_PATH_EDITS:
        changed = 0
        for path in sorted(dist.glob(pattern)):
            text = path.read_text(encoding="utf-8")
            count = text.count(old)
            if times is not None and count != times:
                raise InstallError(f"{path.name}: {old!r} found {count} times, expected {times}")
            if count:
                path.write_text(text.replace(old, new), encoding="utf-8")
                changed += 1
        if not changed:
            raise InstallError(f"{pattern}: {old!r} not found: not the OHIF {VERSION} dist")


def node_app_config(shipped: str) -> str:
    """The shipped default ``app-config.js`` pointed at the node's DICOMweb:
    only the data source's names and its three roots change."""
    text = shipped
    for old, new in DATA_SOURCE_EDITS:
        if text.count(old) != 1:
            raise InstallError(f"app-config.js: {old!r} is not in the shipped default")
        text = text.replace(old, new)
    if re.search(r"https?://", text.split("dataSources", 1)[1].split("httpErrorHandler")[0]):
        raise InstallError("app-config.js: a data source still names another server")
    return "// The node's data source: see viewer/ohif_install.py.\n" + text


def compress(dist: Path) -> None:
    """A ``.gz`` beside each larger text or wasm file at the top of ``dist``
    (not ``ort/``, the segmentation models' runtime, which OHIF's default
    modes never load)."""
    for path in sorted(dist.iterdir()):
        if path.suffix in COMPRESSED and path.is_file() and path.stat().st_size > COMPRESS_ABOVE:
            data = gzip.compress(path.read_bytes(), compresslevel=6, mtime=0)
            path.with_name(path.name + ".gz").write_bytes(data)


def install(root: Path = INSTALL_ROOT, package: str = PACKAGE, integrity: str = INTEGRITY) -> bool:
    """Install unless already installed; True when something was done."""
    if installed(root):
        return False
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ohif-", dir=root) as tmp:
        work = Path(tmp)
        tarball = download(work, package)
        dist = work / VERSION / "dist"
        unpack(tarball, integrity, dist)
        under_prefix(dist)
        shipped = (dist / "app-config.js").read_text(encoding="utf-8")
        (dist / "app-config.default.js").write_text(shipped, encoding="utf-8")
        (dist / "app-config.js").write_text(node_app_config(shipped), encoding="utf-8")
        compress(dist)
        (work / VERSION / STAMP).write_text(stamp_text(integrity) + "\n")
        final = install_dir(root)
        if final.exists():
            shutil.rmtree(final)  # a half-finished earlier attempt
        (work / VERSION).rename(final)
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m viewer.ohif_install [ROOT]`` (default: .ohif in the checkout)."""
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else INSTALL_ROOT
    try:
        done = install(root)
    except (InstallError, OSError) as error:
        print(f"OHIF {VERSION} not installed: {error}", file=sys.stderr)
        return 1
    print(f"OHIF {VERSION} {'installed in' if done else 'already in'} {install_dir(root)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
