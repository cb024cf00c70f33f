"""Adversarial de-identification: the corpus through every door, a scanner everywhere.

Each case of `tests.deid_corpus` is sent to a node through one door (C-STORE
from a configured remote AE with a pynetdicom SCU, STOW-RS over HTTP by a
hospital's web account, or ``dicomnode import`` run as a command); the core
cases go through all three. One node per door, each with its own data and keys.
Afterwards the scanner (`tests.deid_scanner`) looks for every needle in:

- every file under the data directory, byte by byte (blobs, held instances in
  quarantine, the SQLite index and its WAL, anything else), and every readable
  stored or held DICOM file parsed at every depth, file meta included;
- every table and column of the SQLite index (the audit trail included);
- the node's log output at DEBUG (and the import command's output);
- the web app as each role sees it: study list pages, every study page,
  instance metadata, statistics; quarantine, forwarding and audit pages and
  the audit CSV (admin); the export page (researcher);
- DICOMweb QIDO-RS (studies, series, instances with every indexed key),
  WADO-RS metadata and WADO-RS instances (multipart) of every study;
- every instance retrieved back with a C-GET SCU;
- research export ZIPs (every member, DICOMDIR and manifests included).

Pixel cases: every stored (not held) instance whose Rows x Columns is a pixel
case's is decoded, every frame, and the text mask must be blank; high bits,
overlay planes and icon images likewise. Instances of one child must share one
pseudonym. A valid instance answered with a failure is listed apart
("refused"). Each instance is found again through the node's own UID
remapping (``ingestor.deidentify.secret.uid``), to tell stored from held.

The test fails with one table of every finding; ``python -m
tests.test_deid_adversarial [--full] [--cases a,b] [--keep DIR]`` prints it
as a to-do list.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import logging
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID
from werkzeug.security import generate_password_hash

from dicomnode.config import Config
from dicomnode.node import Node
from tests.conftest import REMOTES, make_config
from tests.deid_corpus import DOORS, Case, PixelCheck, Sent, cases
from tests.deid_scanner import (
    Hit,
    NeedleSet,
    frame_lumas,
    html_text,
    json_strings,
    native_frames,
    scan_dataset,
    scan_dataset_bytes,
    scan_dicom_bytes,
)

# Some senders overrun VR lengths and send tags pydicom does not know; the
# corpus does too, on purpose.
pytestmark = [
    pytest.mark.filterwarnings("ignore:The value length:UserWarning"),
    pytest.mark.filterwarnings("ignore:VR lookup failed:UserWarning"),
    pytest.mark.filterwarnings("ignore:Failed to decode byte string:UserWarning"),
]
PASSWORD = "correct horse battery staple"
ROLES = {"cardiologist": "card_audit", "researcher": "res_audit", "admin": "adm_audit"}
ISSUERS = {remote.ae_title: remote.issuer for remote in REMOTES}
STOW_USERS = {"NCC Bishkek": "stow_bishkek", "RCC Dushanbe": "stow_dushanbe"}
# Brightness above which a pixel of the text mask still shows text.
LOSSLESS_BRIGHT, LOSSY_BRIGHT = 24, 64
LOSSY_VISIBLE_SHARE = 0.02


# ---- findings -------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    section: str  # leak / pixels / split-patient / refused / lost / checks
    klass: str
    case: str
    door: str
    place: str
    kind: str
    needle: str
    detail: str = ""


@dataclass
class DoorRun:
    door: str
    cases: list[Case]
    root: Path
    log: list[str] = field(default_factory=list)
    outcomes: dict[tuple[str, int], str] = field(default_factory=dict)  # (case, item) -> outcome
    coverage: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def covered(self, place: str, n: int = 1) -> None:
        self.coverage[place] = self.coverage.get(place, 0) + n


class LogTap(logging.Handler):
    """Every log record of the process, into the buffer of the running door."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.buffer: list[str] | None = None
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(threadName)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if self.buffer is not None:
            with contextlib.suppress(Exception):
                self.buffer.append(self.format(record))


@contextlib.contextmanager
def tapped(buffer: list[str]) -> Iterator[None]:
    tap = LogTap()
    tap.buffer = buffer
    root = logging.getLogger()
    level = root.level
    root.addHandler(tap)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(tap)
        root.setLevel(level)


class Campaign:
    """The whole run: cases through doors, then every place scanned."""

    def __init__(self, root: Path, selected: list[Case] | None = None) -> None:
        self.root = root
        self.cases = selected if selected is not None else cases()
        self.findings: list[Finding] = []
        self.notes: list[str] = []
        self.runs: dict[str, DoorRun] = {}
        self.timings: dict[str, float] = {}
        # (door, case[#item]) -> "stored", "held" or the refusal
        self.dispositions: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    # -- the run --------------------------------------------------------------

    def run(self) -> Campaign:
        started = time.monotonic()
        for door in DOORS:
            # Each door gets its own freshly generated copies (new UIDs).
            mine = [c for c in self.cases if door in c.doors]
            fresh = {c.name: c for c in cases({c.name for c in mine})}
            mine = [replace(fresh[c.name], doors=c.doors) for c in mine]
            self.runs[door] = DoorRun(door, mine, self.root / door)
        importer = threading.Thread(target=self._import_files, name="import-cli")
        importer.start()
        for door in ("cstore", "stow"):
            self._serve_and_scan(self.runs[door])
        importer.join()
        self._serve_and_scan(self.runs["import"])
        self.timings["total"] = time.monotonic() - started
        return self

    def _config(self, run: DoorRun) -> Config:
        from dicomnode.config import RemoteAE

        # The C-GET below asks for every study: an AE that sees every hospital.
        audit = RemoteAE("AUDIT_GET", "127.0.0.1", 104, "Audit", query_issuers=("*",))
        return make_config(
            run.root, require_known_ae=True, log_level="DEBUG", remote_aes=(*REMOTES, audit)
        )

    def _serve_and_scan(self, run: DoorRun) -> None:
        started = time.monotonic()
        config = self._config(run)
        with tapped(run.log), Node(config, web=True) as node:
            add_accounts(node)
            base = f"http://127.0.0.1:{node.http_port}"
            if run.door == "cstore" or run.door == "stow":
                for case in run.cases:
                    self._send(run, case, node, base)
            self.timings[f"{run.door}: send"] = time.monotonic() - started
            Scan(self, run, node, config, base).everything()
        self.timings[f"{run.door}: total"] = time.monotonic() - started

    def _send(self, run: DoorRun, case: Case, node: Node, base: str) -> None:
        by_door: dict[str, list[tuple[int, Sent]]] = defaultdict(list)
        for index, sent in enumerate(case.items):
            by_door[sent.door or run.door].append((index, sent))
        for door, items in by_door.items():
            if door == "cstore":
                answers = send_cstore(node.dicom.port, items)
            elif door == "stow":
                answers = send_stow(base, items)
            else:
                raise ValueError(f"{case.name}: {door} inside a running node")
            for index, outcome in answers.items():
                run.outcomes[(case.name, index)] = outcome

    def _import_files(self) -> None:
        run = self.runs["import"]
        started = time.monotonic()
        try:
            import_door(run, self._config(run))
        except Exception as exc:  # reported, not swallowed: the scan of this door is void
            run.notes.append(f"import door failed: {type(exc).__name__}: {exc}")
        self.timings["import: command"] = time.monotonic() - started

    # -- results ----------------------------------------------------------------

    def add(self, finding: Finding) -> None:
        with self._lock:
            self.findings.append(finding)

    def unique_findings(self) -> list[Finding]:
        merged: dict[tuple, Finding] = {}
        for f in self.findings:
            key = (f.section, f.case, f.door, f.place, f.kind, f.needle)
            if key in merged:
                old = merged[key]
                if f.detail and f.detail not in old.detail and old.detail.count(";") < 2:
                    merged[key] = replace(old, detail=f"{old.detail}; {f.detail}")
            else:
                merged[key] = f
        return sorted(
            merged.values(),
            key=lambda f: (SECTIONS.index(f.section), f.klass, f.case, f.door, f.place, f.kind),
        )


SECTIONS = ("leak", "pixels", "split-patient", "checks", "lost", "refused")


# ---- doors ------------------------------------------------------------------------


def part10(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def send_cstore(port: int, items: list[tuple[int, Sent]]) -> dict[int, str]:
    """One association per calling AE; each instance's status as an outcome."""
    from pynetdicom import AE

    outcomes: dict[int, str] = {}
    by_ae: dict[str, list[tuple[int, Sent]]] = defaultdict(list)
    for index, sent in items:
        by_ae[sent.calling_ae].append((index, sent))
    for calling, group in by_ae.items():
        ae = AE(ae_title=calling)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        for sop, syntax in {
            (str(s.ds.SOPClassUID), str(s.ds.file_meta.TransferSyntaxUID)) for _, s in group
        }:
            ae.add_requested_context(sop, syntax)
        assoc = ae.associate("127.0.0.1", port, ae_title="CHDNODE")
        if not assoc.is_established:
            for index, _ in group:
                outcomes[index] = "refused: association not accepted"
            continue
        try:
            for index, sent in group:
                status = assoc.send_c_store(sent.ds)
                code = int(status.Status) if status and "Status" in status else None
                if code is None:
                    outcomes[index] = "refused: no C-STORE response"
                elif code == 0 or (code & 0xF000) == 0xB000:
                    outcomes[index] = "ok" if code == 0 else f"ok (warning 0x{code:04X})"
                else:
                    comment = str(status.get("ErrorComment", ""))
                    outcomes[index] = f"refused: C-STORE 0x{code:04X} {comment}".strip()
        finally:
            assoc.release()
    return outcomes


def send_stow(base: str, items: list[tuple[int, Sent]]) -> dict[int, str]:
    """One STOW-RS request per hospital account; outcome per instance."""
    outcomes: dict[int, str] = {}
    by_user: dict[str, list[tuple[int, Sent]]] = defaultdict(list)
    for index, sent in items:
        by_user[STOW_USERS[ISSUERS[sent.calling_ae]]].append((index, sent))
    for user, group in by_user.items():
        boundary = "adversarialB0undary"
        body = (
            b"".join(
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                + part10(sent.ds)
                + b"\r\n"
                for _, sent in group
            )
            + f"--{boundary}--\r\n".encode()
        )
        response = requests.post(
            f"{base}/dicom-web/studies",
            data=body,
            auth=(user, PASSWORD),
            timeout=120,
            headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'
            },
        )
        failed: dict[int, str] = {}  # by part number: the answer never echoes the sent UIDs
        with contextlib.suppress(ValueError, KeyError, TypeError):
            for item in response.json().get("00081198", {}).get("Value", []):
                part = item.get("00091001", {}).get("Value", [0])[0]
                reason = item.get("00081197", {}).get("Value", [0])[0]
                failed[part] = f"0x{int(reason):04X}"
        for number, (index, _sent) in enumerate(group, 1):
            if response.status_code >= 400 and not failed:
                outcomes[index] = f"refused: HTTP {response.status_code} {response.text[:80]}"
            elif number in failed:
                outcomes[index] = f"refused: STOW FailureReason {failed[number]}"
            else:
                outcomes[index] = "ok"
    return outcomes


def import_door(run: DoorRun, config: Config) -> None:
    """``dicomnode import`` as an operator runs it, one call per hospital."""
    folder = run.root / "incoming"
    by_issuer: dict[str, list[tuple[Path, str, int]]] = defaultdict(list)
    for case in run.cases:
        for index, sent in enumerate(case.items):
            issuer = ISSUERS[sent.calling_ae]
            path = folder / slug(issuer) / f"{case.name}-{index}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(part10(sent.ds))
            by_issuer[issuer].append((path, case.name, index))
    toml = write_toml(run.root / "node.toml", config)
    for issuer, files in by_issuer.items():
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "dicomnode.cli",
                "-c",
                str(toml),
                "import",
                "--issuer",
                issuer,
                "--no-progress",
                str(folder / slug(issuer)),
            ],
            cwd=run.root,
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        run.log.append(f"[dicomnode import --issuer {issuer}: exit {result.returncode}]")
        run.log.extend((result.stdout + result.stderr).splitlines())
        for path, name, index in files:
            rejected = [line for line in result.stderr.splitlines() if line.startswith(f"{path}:")]
            if rejected:
                run.outcomes[(name, index)] = "refused: import " + rejected[0].split(":", 1)[1]
            elif result.returncode not in (0, 3):
                run.outcomes[(name, index)] = f"refused: import exit {result.returncode}"
            else:
                run.outcomes[(name, index)] = "ok"


def subprocess_env() -> dict[str, str]:
    """This process's environment, the project first on the path, no node overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMNODE_")}
    project = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [project, env.get("PYTHONPATH", "")]))
    return env


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def write_toml(path: Path, config: Config) -> Path:
    def q(value: object) -> str:
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [
        "[node]",
        f"data_dir = {q(config.data_dir)}",
        f"key_dir = {q(config.key_dir)}",
        "min_free_disk_mb = 0",
        f"require_known_ae = {str(config.require_known_ae).lower()}",
        'log_level = "DEBUG"',
    ]
    for remote in config.remote_aes:
        lines += [
            "",
            "[[remote_ae]]",
            f"ae_title = {q(remote.ae_title)}",
            f"host = {q(remote.host)}",
            f"port = {remote.port}",
            f"issuer = {q(remote.issuer)}",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def add_accounts(node: Node) -> None:
    accounts = node.archive.index.accounts
    hashed = generate_password_hash(PASSWORD)
    takes_issuer = "issuer" in inspect.signature(accounts.add).parameters
    for role, name in ROLES.items():
        accounts.add(name, hashed, role)
    for issuer, name in STOW_USERS.items():
        if takes_issuer:
            accounts.add(name, hashed, "cardiologist", issuer)
        else:  # an older node: STOW-RS names the account as the issuer
            accounts.add(name, hashed, "cardiologist")


# ---- the scan -----------------------------------------------------------------------


class Scan:
    """Every place one node writes or answers, for one door's cases."""

    def __init__(
        self, campaign: Campaign, run: DoorRun, node: Node, config: Config, base: str
    ) -> None:
        self.campaign = campaign
        self.run = run
        self.node = node
        self.config = config
        self.base = base
        self.needles = NeedleSet(n for c in run.cases for n in c.needles)
        self.klass = {c.name: c.klass for c in run.cases}
        self.pixel_checks: dict[tuple[int, int], tuple[Case, list[PixelCheck]]] = {
            key: (c, checks) for c in run.cases for key, checks in c.pixels.items()
        }
        self.sizes: dict[tuple[int, int], tuple[Case, int]] = {}
        for c in run.cases:
            if c.same_patient:
                for index, sent in enumerate(c.items):
                    self.sizes[(int(sent.ds.Rows), int(sent.ds.Columns))] = (c, index)
        self.stored: list[tuple[str, Dataset]] = []  # (place, dataset) of blobs
        self.held: list[tuple[str, Dataset]] = []  # held files the scanner could parse
        # The node's own UID remapping (its public secret), to find each sent
        # instance again, stored or held; None on a node without it.
        self.remap: dict[str, tuple[Case, int]] | None = None
        secret = getattr(getattr(node.ingestor, "deidentify", None), "secret", None)
        if secret is not None and callable(getattr(secret, "uid", None)):
            self.remap = {
                secret.uid(str(sent.ds.SOPInstanceUID)): (c, index)
                for c in run.cases
                for index, sent in enumerate(c.items)
            }

    # -- reporting --

    def hits(self, hits: list[Hit], place: str) -> None:
        for hit in hits:
            needle = hit.needle
            self.campaign.add(
                Finding(
                    "leak",
                    self.klass.get(needle.case, "?"),
                    needle.case,
                    self.run.door,
                    place,
                    needle.kind,
                    needle.text,
                    f"{hit.how}: {hit.where}" if hit.where else hit.how,
                )
            )

    def finding(self, section: str, case: Case, place: str, kind: str, needle: str, detail: str):
        self.campaign.add(
            Finding(section, case.klass, case.name, self.run.door, place, kind, needle, detail)
        )

    def text(self, place: str, texts: list[str], where: str = "") -> None:
        self.run.covered(place)
        self.hits(self.needles.scan_texts(texts, [where] * len(texts)), place)

    # -- the places --

    def everything(self) -> None:
        steps = (
            self.outcomes,
            self.files,
            self.index,
            self.web,
            self.dicomweb,
            self.c_get,
            self.export,
            self.pixels,
            self.patients,
            self.checks,
            self.log,
        )
        for step in steps:
            started = time.monotonic()
            try:
                step()
            except Exception as exc:  # a place that could not be scanned is said so
                self.run.notes.append(
                    f"{self.run.door}: scanning {step.__name__} failed: {type(exc).__name__}: {exc}"
                )
            self.campaign.timings[f"{self.run.door}: {step.__name__}"] = time.monotonic() - started

    def outcomes(self) -> None:
        for case in self.run.cases:
            for index, _ in enumerate(case.items):
                outcome = self.run.outcomes.get((case.name, index), "not sent")
                if not outcome.startswith("ok"):
                    self.finding("refused", case, "answer", "refused", f"item {index}", outcome)

    def files(self) -> None:
        """Every file under the data directory, raw; DICOM files parsed too."""
        data_dir = self.config.data_dir
        for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
            relative = path.relative_to(data_dir)
            top = relative.parts[0] if len(relative.parts) > 1 else relative.name
            try:
                self.file(path, str(relative), top)
            except Exception as exc:
                self.run.notes.append(
                    f"{self.run.door}: could not scan {relative}: {type(exc).__name__}: {exc}"
                )

    def file(self, path: Path, relative: str, top: str) -> None:
        data = path.read_bytes()
        area = {"blobs": "stored file", "quarantine": "quarantine file"}.get(top, f"file {top}")
        if "index" in path.name:
            area = "index file"
        self.run.covered(area)
        if data[128:132] != b"DICM":
            # Not a readable Part 10 file (a sealed held instance, the index...):
            # its bytes must not show any needle in any encoding. Forms of 6
            # bytes and more: shorter ones turn up by chance in random bytes.
            self.hits(self.needles.scan_bytes(data, relative, min_length=6), area)
            return
        self.hits(scan_dicom_bytes(self.needles, data, relative), area)
        ds = dcmread(BytesIO(data))
        (self.held if top == "quarantine" else self.stored).append((area, ds))

    def index(self) -> None:
        """Every table, every column of the SQLite index (audit trail included)."""
        path = self.config.data_dir / "index.sqlite"
        if not path.exists():
            self.run.notes.append(f"{self.run.door}: no SQLite index at {path}")
            return
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = [
                row[0]
                for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            for table in tables:
                cursor = connection.execute(f'SELECT * FROM "{table}"')
                columns = [d[0] for d in cursor.description]
                values: dict[str, list[str]] = defaultdict(list)
                blobs: dict[str, list[bytes]] = defaultdict(list)
                for row in cursor:
                    for column, value in zip(columns, row, strict=True):
                        if isinstance(value, bytes):
                            blobs[column].append(value)
                        elif value is not None:
                            values[column].append(str(value))
                place = "audit trail" if "audit" in table else f"index {table}"
                self.run.covered(place)
                for column, texts in values.items():
                    hits = self.needles.scan_texts(texts, [f"{table}.{column}"] * len(texts))
                    self.hits(hits, place)
                for column, chunks in blobs.items():
                    data = b"\0".join(chunks)
                    self.hits(
                        self.needles.scan_bytes(data, f"{table}.{column}", min_length=6), place
                    )
        finally:
            connection.close()

    # -- web --

    def login(self, user: str) -> requests.Session:
        session = requests.Session()
        page = session.get(f"{self.base}/login", timeout=30)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token, "no CSRF token on the login page"
        answer = session.post(
            f"{self.base}/login",
            data={"username": user, "password": PASSWORD, "csrf_token": token.group(1)},
            allow_redirects=False,
            timeout=30,
        )
        assert answer.status_code in (302, 303), f"login of {user}: {answer.status_code}"
        return session

    def page(self, session: requests.Session, role: str, what: str, url: str) -> str:
        response = session.get(f"{self.base}{url}", timeout=60)
        place = f"web {role}: {what}"
        if response.status_code != 200 and not (
            what == "instance metadata" and response.status_code == 404  # not an image
        ):
            self.run.notes.append(f"{self.run.door}: {role} GET {url}: HTTP {response.status_code}")
        body = response.text
        texts = [body, html_text(body)]
        if "json" in response.headers.get("Content-Type", ""):
            texts += json_strings(body)
        self.text(place, texts, url)
        return body

    def study_uids(self) -> list[str]:
        response = requests.get(
            f"{self.base}/dicom-web/studies",
            auth=(ROLES["cardiologist"], PASSWORD),
            timeout=60,
        )
        if response.status_code == 204:
            return []
        return [s["0020000D"]["Value"][0] for s in response.json()]

    def instance_uids(self) -> list[str]:
        response = requests.get(
            f"{self.base}/dicom-web/instances",
            auth=(ROLES["cardiologist"], PASSWORD),
            timeout=60,
        )
        if response.status_code == 204:
            return []
        return [s["00080018"]["Value"][0] for s in response.json()]

    def web(self) -> None:
        studies = self.study_uids()
        instances = self.instance_uids()
        for role, user in ROLES.items():
            session = self.login(user)
            for number in range(1, 41):
                body = self.page(session, role, "study list", f"/?page={number}")
                if f"page={number + 1}" not in body:
                    break
            for uid in studies:
                self.page(session, role, "study page", f"/studies/{uid}")
            self.page(session, role, "statistics", "/api/stats")
            if role == "cardiologist":
                for uid in instances:
                    self.page(session, role, "instance metadata", f"/api/instances/{uid}/meta")
            if role == "admin":
                self.page(session, role, "quarantine page", "/quarantine")
                self.page(session, role, "forwarding page", "/forwarding")
                for number in range(1, 41):
                    body = self.page(session, role, "audit page", f"/admin/audit?page={number}")
                    if f"page={number + 1}" not in body:
                        break
                self.page(session, role, "audit CSV", "/admin/audit.csv")
            if role == "researcher":
                self.page(session, role, "export page", "/exports")

    def dicomweb(self) -> None:
        from storage.keys import ATTRIBUTES, Level

        auth = (ROLES["cardiologist"], PASSWORD)
        levels = {
            "studies": (Level.PATIENT, Level.STUDY),
            "series": (Level.PATIENT, Level.STUDY, Level.SERIES),
            "instances": (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE),
        }
        for path, wanted in levels.items():
            keys = [a.keyword for a in ATTRIBUTES.values() if a.level in wanted]
            response = requests.get(
                f"{self.base}/dicom-web/{path}",
                params={"includefield": ",".join(keys)},
                auth=auth,
                timeout=60,
            )
            if response.status_code == 400:
                response = requests.get(f"{self.base}/dicom-web/{path}", auth=auth, timeout=60)
            if response.status_code not in (200, 204):
                self.run.notes.append(f"{self.run.door}: QIDO {path}: HTTP {response.status_code}")
            self.text(f"QIDO-RS {path}", json_strings(response.text), path)
            self.ages(json_strings(response.text), f"QIDO-RS {path}")
        for uid in self.study_uids():
            response = requests.get(
                f"{self.base}/dicom-web/studies/{uid}/metadata", auth=auth, timeout=60
            )
            self.text("WADO-RS metadata", json_strings(response.text), uid)
            self.ages(json_strings(response.text), "WADO-RS metadata")
            study = requests.get(f"{self.base}/dicom-web/studies/{uid}", auth=auth, timeout=60)
            boundary = re.search(r"boundary=([^;\s]+)", study.headers.get("Content-Type", ""))
            if study.status_code != 200 or not boundary:
                self.run.notes.append(f"{self.run.door}: WADO-RS study {uid}: {study.status_code}")
                continue
            for part in study.content.split(b"--" + boundary.group(1).strip('"').encode())[1:]:
                _, _, payload = part.partition(b"\r\n\r\n")
                if payload.startswith(b"--"):
                    continue
                self.run.covered("WADO-RS instances")
                self.hits(scan_dicom_bytes(self.needles, payload, uid), "WADO-RS instances")

    def c_get(self) -> None:
        """Everything back with a C-GET SCU (Study Root, every stored study's
        UID: a retrieve names what it moves)."""
        from pynetdicom import AE, build_role, evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

        # One context per (class, syntax) stored: the node sends each
        # instance in its stored syntax, on a context accepted for exactly that.
        pairs = sorted(
            {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for _, ds in self.stored}
        )
        if not pairs:
            self.run.notes.append(f"{self.run.door}: nothing stored, nothing to C-GET")
            return
        received: list[tuple[bytes, str]] = []

        def on_store(event: Any) -> int:
            received.append((event.request.DataSet.getvalue(), str(event.context.transfer_syntax)))
            return 0x0000

        ae = AE(ae_title="AUDIT_GET")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        for sop, syntax in pairs[:127]:
            ae.add_requested_context(sop, syntax)
        roles = [build_role(sop, scp_role=True) for sop in sorted({sop for sop, _ in pairs})]
        assoc = ae.associate(
            "127.0.0.1",
            self.node.dicom.port,
            ae_title="CHDNODE",
            ext_neg=roles,
            evt_handlers=[(evt.EVT_C_STORE, on_store)],
        )
        assert assoc.is_established, "C-GET association refused"
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = "\\".join(
            sorted({str(ds.StudyInstanceUID) for _, ds in self.stored})
        )
        final = None
        try:
            for status, _ in assoc.send_c_get(
                identifier, StudyRootQueryRetrieveInformationModelGet
            ):
                if status and "Status" in status:
                    final = int(status.Status)
        finally:
            assoc.release()
        if final not in (0x0000, 0xB000):
            self.run.notes.append(f"{self.run.door}: C-GET ended with status {final}")
        if len(received) != len(self.stored):
            self.run.notes.append(
                f"{self.run.door}: C-GET returned {len(received)} of {len(self.stored)} stored"
            )
        for data, syntax in received:
            self.run.covered("C-GET")
            self.hits(scan_dataset_bytes(self.needles, data, "C-GET"), "C-GET")
            ts = UID(syntax)
            with contextlib.suppress(Exception):
                ds = read_dataset(BytesIO(data), ts.is_implicit_VR, ts.is_little_endian)
                self.hits(scan_dataset(self.needles, ds, "C-GET:"), "C-GET")

    def export(self) -> None:
        """A research export of everything; of each hospital x modality if blocked."""
        from dicomnode.jobs.export import Cohort, EmptyCohort, ExportBlocked, export
        from storage.keys import Level
        from storage.query import Query

        out = self.run.root / "exports"
        out.mkdir(exist_ok=True)
        cohorts = [("everything", Cohort())]
        number = 0
        while cohorts:
            label, cohort = cohorts.pop(0)
            number += 1
            package = out / f"export-{number}.zip"
            try:
                result = export(self.config, self.node.archive, cohort, package, progress=False)
            except ExportBlocked as exc:
                self.run.notes.append(f"{self.run.door}: export of {label} blocked: {exc}")
                if label == "everything":
                    pairs = {
                        (str(s.get("IssuerOfPatientID") or ""), m)
                        for s in self.node.archive.index.find(
                            Query(
                                level=Level.STUDY,
                                keys={"IssuerOfPatientID": "", "ModalitiesInStudy": ""},
                            )
                        )
                        for m in (s.get("ModalitiesInStudy") or [""])
                    }
                    cohorts += [
                        (f"hospital {h!r} modality {m}", Cohort(hospital=h, modality=m))
                        for h, m in sorted(pairs)
                    ]
                continue
            except EmptyCohort:
                continue
            left_out = getattr(result, "left_out", [])
            if left_out:
                self.run.notes.append(
                    f"{self.run.door}: export of {label} left out {len(left_out)} instance(s): "
                    + "; ".join(sorted({reason for _, reason in left_out}))[:300]
                )
            self.scan_zip(package, label)

    def scan_zip(self, package: Path, label: str) -> None:
        with zipfile.ZipFile(package) as zipped:
            for name in zipped.namelist():
                data = zipped.read(name)
                place = "export " + ("DICOMDIR" if name.endswith("DICOMDIR") else "file")
                self.run.covered(place)
                if data[128:132] == b"DICM":
                    self.hits(scan_dicom_bytes(self.needles, data, f"{label}/{name}"), place)
                    with contextlib.suppress(Exception):
                        ds = dcmread(BytesIO(data))
                        if "PixelData" in ds:
                            self.check_pixels(ds, "pixels in export")
                        self.ages_in(ds, "export file")
                else:
                    place = "export manifest"
                    text = data.decode("utf-8", "replace")
                    self.text(place, [text, *json_strings(text)], f"{label}/{name}")

    # -- pixels, patients, checks, log --

    def held_rows(self) -> dict[str, str]:
        """SOP Instance UID -> pseudonym of every held instance (the index's table)."""
        path = self.config.data_dir / "index.sqlite"
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return dict(connection.execute("SELECT sopinstanceuid, pseudonym FROM quarantine"))
        except sqlite3.Error:
            return {}
        finally:
            connection.close()

    def whereabouts(self) -> dict[tuple[str, int], tuple[str, str]]:
        """(case, item) -> ("stored" | "held", pseudonym) for every instance found again."""
        found: dict[tuple[str, int], tuple[str, str]] = {}
        for _, ds in self.stored:
            key = None
            if self.remap is not None and str(ds.SOPInstanceUID) in self.remap:
                case, index = self.remap[str(ds.SOPInstanceUID)]
                key = (case.name, index)
            elif (size := (int(ds.get("Rows", 0)), int(ds.get("Columns", 0)))) in self.sizes:
                case, index = self.sizes[size]
                key = (case.name, index)
            if key:
                found[key] = ("stored", str(ds.get("PatientID", "")))
        if self.remap is not None:
            for uid, pseudonym in self.held_rows().items():
                if uid in self.remap:
                    case, index = self.remap[uid]
                    found[(case.name, index)] = ("held", pseudonym)
        return found

    def pixels(self) -> None:
        for _, ds in self.stored:
            self.check_pixels(ds, "pixels stored")
        found = self.whereabouts()
        stored_sizes = {self.size_of(ds) for _, ds in self.stored}
        for case in self.run.cases:
            for index, sent in enumerate(case.items):
                outcome = self.run.outcomes.get((case.name, index), "not sent")
                where = found.get((case.name, index), ("", ""))[0]
                size = (int(sent.ds.get("Rows", 0)), int(sent.ds.get("Columns", 0)))
                if not where and self.remap is None:
                    where = "stored" if size in stored_sizes else "stored or held"
                label = case.name if len(case.items) == 1 else f"{case.name}#{index}"
                self.campaign.dispositions[(self.run.door, label)] = where or outcome
                checks = case.pixels.get(size)
                if checks and not where and outcome.startswith("ok"):
                    self.finding(
                        "lost",
                        case,
                        "archive",
                        "lost",
                        checks[0].text,
                        "acknowledged, but neither stored nor held",
                    )

    @staticmethod
    def size_of(ds: Dataset) -> tuple[int, int]:
        return (int(ds.get("Rows", 0)), int(ds.get("Columns", 0)))

    def check_pixels(self, ds: Dataset, place: str) -> None:
        key = (int(ds.get("Rows", 0)), int(ds.get("Columns", 0)))
        if key not in self.pixel_checks:
            return
        case, checks = self.pixel_checks[key]
        for check in checks:
            try:
                verdict = pixel_verdict(ds, check)
            except Exception as exc:
                verdict = f"could not decode ({type(exc).__name__}: {exc})"
            if verdict:
                self.finding("pixels", case, place, check.what, check.text, verdict)

    def patients(self) -> None:
        """Cases of one child: one pseudonym across all their instances."""
        found = self.whereabouts()
        for case in self.run.cases:
            if not case.same_patient:
                continue
            pseudonyms: dict[str, list[str]] = defaultdict(list)
            for index, _ in enumerate(case.items):
                if (case.name, index) in found:
                    where, pseudonym = found[(case.name, index)]
                    pseudonyms[pseudonym].append(f"item {index} ({where})")
            if len(pseudonyms) > 1:
                detail = ", ".join(
                    f"{pid or '(empty)'}: {'/'.join(items)}"
                    for pid, items in sorted(pseudonyms.items())
                )
                self.finding("split-patient", case, "index", "pseudonyms", "one child", detail)

    def checks(self) -> None:
        """Forbidden values and ages above 89 in stored and held data sets."""
        for area, ds in self.stored + self.held:
            self.ages_in(ds, area)
            for case in self.run.cases:
                for keyword, value in case.forbidden:
                    for path, found in find_keyword(ds, keyword):
                        if str(found).strip() == value:
                            self.finding("checks", case, area, keyword, value, path)

    def ages_in(self, ds: Dataset, place: str) -> None:
        for path, value in find_keyword(ds, "PatientAge"):
            self.ages([str(value)], place, path)

    def ages(self, texts: list[str], place: str, where: str = "") -> None:
        for case in self.run.cases:
            if not case.max_age:
                continue
            limit = age_years(case.max_age)
            for text in texts:
                # Not inside a pseudonym such as CHD-898Y-QZ66 (keys are random per run).
                for match in re.finditer(r"(?<![\w-])(\d{3})([DWMY])(?![\w-])", text):
                    years = age_years(match.group(0))
                    if years is not None and years > limit and match.group(2) == "Y":
                        self.finding("checks", case, place, "age>090Y", match.group(0), where)

    def log(self) -> None:
        lines = self.run.log
        self.run.covered("log", len(lines))
        self.hits(self.needles.scan_texts(lines, ["log line"] * len(lines)), "log")


def age_years(age: str) -> float | None:
    match = re.fullmatch(r"(\d{3})([DWMY])", age.strip())
    if not match:
        return None
    return int(match.group(1)) / {"D": 365.25, "W": 52.18, "M": 12, "Y": 1}[match.group(2)]


def find_keyword(ds: Dataset, keyword: str, parent: str = "") -> Iterator[tuple[str, Any]]:
    for element in ds:
        if element.VR == "SQ":
            for index, item in enumerate(element.value or []):
                yield from find_keyword(item, keyword, f"{parent}{element.keyword}[{index}]>")
        elif element.keyword == keyword:
            yield f"{parent}{keyword}", element.value


def pixel_verdict(ds: Dataset, check: PixelCheck) -> str:
    """Empty if the text's pixels are blank; else what is still visible."""
    if check.what == "highbits":
        frames = native_frames(ds)
        stored = int(ds.get("BitsStored", 16))
        for number, (frame, mask) in enumerate(zip(frames, check.masks, strict=False)):
            high = (frame[mask].astype(np.uint32) >> 12) != 0
            if high.any():
                return (
                    f"frame {number + 1}: {high.mean():.0%} of the text's pixels keep bits above "
                    f"bit 11 (Bits Stored now {stored}, overlay group "
                    f"{'kept' if (0x6000, 0x0010) in ds else 'gone'})"
                )
        return ""
    if check.what == "overlay":
        if (0x6000, 0x3000) not in ds:
            return ""
        overlay = ds.overlay_array(0x6000)
        shown = overlay[check.masks[0]].astype(bool)
        return (
            f"overlay plane kept, {shown.mean():.0%} of the name's bits set" if shown.any() else ""
        )
    if check.what == "icon":
        if "IconImageSequence" not in ds or not ds.IconImageSequence:
            return ""
        icon = ds.IconImageSequence[0]
        icon.file_meta = ds.file_meta
        frame = np.asarray(native_frames(icon)[0], dtype=np.float64)
        if frame.ndim == 3:
            frame = frame.mean(axis=2)
        bright = frame[check.masks[0]] > LOSSLESS_BRIGHT
        return f"icon image kept, {bright.mean():.0%} of the name visible" if bright.any() else ""
    lumas, lossy = frame_lumas(ds)
    threshold = LOSSY_BRIGHT if lossy else LOSSLESS_BRIGHT
    worst = ""
    for number, (frame, mask) in enumerate(zip(lumas, check.masks, strict=False)):
        if frame.shape != mask.shape:
            return f"frame {number + 1} is {frame.shape}, the mask {mask.shape}"
        bright = frame[mask] > threshold
        share = bright.mean()
        if (lossy and share > LOSSY_VISIBLE_SHARE) or (not lossy and bright.any()):
            worst = (
                f"frame {number + 1}/{len(lumas)}: {share:.0%} of the text's pixels visible"
                f" ({'lossy' if lossy else 'lossless'}, "
                f"BurnedInAnnotation {ds.get('BurnedInAnnotation', 'absent')})"
            )
            break
    return worst


# ---- the table ----------------------------------------------------------------------


TITLES = {
    "leak": "IDENTITY FOUND",
    "pixels": "BURNED-IN TEXT STILL VISIBLE",
    "split-patient": "ONE CHILD, SEVERAL PSEUDONYMS",
    "checks": "VALUE CHECKS (ages above 89, values that must not survive)",
    "lost": "ACKNOWLEDGED BUT NOT KEPT",
    "refused": "REFUSED (a valid instance answered with a failure)",
}
PARSED_PLACES = (
    "stored file",
    "quarantine file",
    "C-GET",
    "WADO-RS instances",
    "export file",
    "export DICOMDIR",
)


def element_paths(finding: Finding) -> list[str]:
    """Attribute paths of the hits in parsed data sets named by the detail."""
    if finding.place not in PARSED_PLACES:
        return []
    paths = []
    for part in finding.detail.split("; "):
        where = part.split(": ", 1)[-1]
        if ":" in where:  # "<file, UID or C-GET>:<attribute path>"
            paths.append(where.split(":", 1)[1])
    return paths


def short_place(place: str) -> str:
    return re.sub(r"^web (cardiologist|researcher|admin): ", "web ", place)


def full_table(campaign: Campaign) -> str:
    """One row per (section, case, door, place, kind), needles merged."""
    rows: dict[tuple, list[Finding]] = defaultdict(list)
    for f in campaign.unique_findings():
        rows[(f.section, f.klass, f.case, f.door, f.place, f.kind)].append(f)
    lines = ["", "== FULL TABLE: section | class | case | door | place | kind | needles | detail"]
    for (section, klass, case, door, place, kind), group in rows.items():
        needles = ", ".join(dict.fromkeys(f.needle for f in group))
        lines.append(
            f"  {section:<8} {klass:<11} {case:<38} {door:<6} {place:<34} {kind:<12} "
            f"{needles[:70]:<40} {group[0].detail[:140]}"
        )
    return "\n".join(lines)


def table(campaign: Campaign) -> str:
    """The to-do list: per section and class, one entry per (case, kind),
    doors merged; for leaks the attributes still holding the needle and every
    place it was seen."""
    findings = campaign.unique_findings()
    lines: list[str] = []
    for section in SECTIONS:
        rows = [f for f in findings if f.section == section]
        if not rows:
            continue
        grouped: dict[tuple[str, str, str], list[Finding]] = defaultdict(list)
        for f in rows:
            grouped[(f.klass, f.case, f.kind)].append(f)
        lines += [
            "",
            f"== {TITLES[section]}: {len(grouped)} (case, kind) entries, {len(rows)} rows",
        ]
        klass_seen = ""
        for (klass, case, kind), group in grouped.items():
            if klass != klass_seen:
                count = sum(1 for key in grouped if key[0] == klass)
                lines.append(f"-- {klass}: {count}")
                klass_seen = klass
            doors = ",".join(d for d in DOORS if any(f.door == d for f in group))
            needles = ", ".join(dict.fromkeys(f.needle for f in group))
            lines.append(f"  {case:<38} {doors:<18} {kind:<12} {needles}")
            if section == "leak":
                paths = sorted({p for f in group for p in element_paths(f)})
                if paths:
                    lines.append(f"      attributes: {', '.join(paths)[:400]}")
                places = sorted({short_place(f.place) for f in group})
                lines.append(f"      places: {', '.join(places)}")
            else:
                details = list(dict.fromkeys(f"{f.door}: {f.place}: {f.detail}" for f in group))
                lines += [f"      {d[:220]}" for d in details[:6]]
    notes = [n for run in campaign.runs.values() for n in run.notes] + campaign.notes
    if notes:
        lines += ["", f"== NOTES: {len(notes)}"]
        lines += [f"  {n[:300]}" for n in notes]
    lines += ["", "== SUMMARY"]
    counts: dict[str, int] = defaultdict(int)
    for f in findings:
        counts[f.section] += 1
    lines.append("  rows: " + ", ".join(f"{s} {counts[s]}" for s in SECTIONS))
    leaked = {(f.case, f.door) for f in findings if f.section in ("leak", "pixels", "checks")}
    sent = sum(len(run.cases) for run in campaign.runs.values())
    clean = sorted(
        {c.name for run in campaign.runs.values() for c in run.cases} - {f.case for f in findings}
    )
    lines.append(f"  (case, door) sends with identity left: {len(leaked)} of {sent}")
    lines.append(f"  cases with no finding through any door: {len(clean)}: {', '.join(clean)}")
    for door in DOORS:
        held = [
            c for (d, c), w in sorted(campaign.dispositions.items()) if d == door and w == "held"
        ]
        if held:
            lines.append(f"  held, sealed, so only scanned as bytes ({door}): {', '.join(held)}")
    for door, run in campaign.runs.items():
        covered = ", ".join(f"{k} {v}" for k, v in sorted(run.coverage.items()))
        lines.append(f"  scanned ({door}, {len(run.cases)} cases): {covered}")
    lines.append(
        "  timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in sorted(campaign.timings.items()))
    )
    return "\n".join(lines)


# ---- pytest -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Campaign:
    return Campaign(tmp_path_factory.mktemp("adversarial")).run()


def test_the_corpus_plants_what_it_claims() -> None:
    """Each case's needles are in its own input, in no other case's input, and
    each pixel mask covers drawn text: a finding means the node, not the corpus."""
    built = cases()
    assert len(built) >= 60
    names = [c.name for c in built]
    assert len(names) == len(set(names))
    everyone = NeedleSet(n for c in built for n in c.needles)
    problems = []
    keys: dict[tuple[int, int], str] = {}
    for case in built:
        hits: list[Hit] = []
        for sent in case.items:
            hits += scan_dataset(everyone, sent.ds)
            hits += scan_dicom_bytes(everyone, part10(sent.ds), case.name)
        found = {h.needle for h in hits}
        missing = [n.text for n in case.needles if n not in found]
        if missing:
            problems.append(f"{case.name}: needles not in its input: {missing}")
        strangers = sorted(
            {f"{h.needle.case}:{h.needle.text}" for h in hits}
            - {f"{n.case}:{n.text}" for n in case.needles}
        )
        if strangers:
            problems.append(f"{case.name}: holds other cases' needles {strangers}")
        short = [
            n.text
            for n in case.needles
            if len(n.text) < (5 if n.text.isascii() and n.kind != "age" else 2)
        ]
        if short:
            problems.append(f"{case.name}: needles too short to be unambiguous {short}")
        mapped = list(case.pixels)
        if case.same_patient:
            mapped += [(int(s.ds.Rows), int(s.ds.Columns)) for s in case.items]
        for key in dict.fromkeys(mapped):
            if key in keys or key in ((48, 64), (16, 16), (20, 24)):
                problems.append(f"{case.name}: size {key} also used by {keys.get(key, 'carriers')}")
            keys[key] = case.name
        for key, checks in case.pixels.items():
            (sent,) = [s for s in case.items if (int(s.ds.Rows), int(s.ds.Columns)) == key]
            ds = sent.ds
            ds_read = dcmread(BytesIO(part10(ds)))
            for check in checks:
                if check.what in ("overlay", "icon"):
                    continue
                if pixel_verdict(ds_read, check) == "":
                    problems.append(f"{case.name}: the mask shows no text in the input")
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_no_identity_survives_anywhere(campaign: Campaign) -> None:
    """One assertion over every finding, with the table as the message."""
    report = table(campaign)
    print(full_table(campaign))
    print(report)
    for door, run in campaign.runs.items():
        assert run.coverage.get("stored file", 0) or run.coverage.get("quarantine file", 0), (
            f"{door}: nothing was stored or held: the scan saw nothing\n{report}"
        )
    if campaign.unique_findings():
        pytest.fail(report, pytrace=False)


# ---- script mode --------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.test_deid_adversarial",
        description="Send the adversarial corpus through every door and print the findings.",
    )
    parser.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--list", action="store_true", help="list the cases and their doors")
    parser.add_argument("--full", action="store_true", help="also every (place, kind) row")
    args = parser.parse_args(argv)
    selected = set(filter(None, args.cases.split(","))) or None
    chosen = cases(selected)
    if args.list:
        for case in chosen:
            print(f"{case.klass:<12} {case.name:<40} {'/'.join(case.doors):<20} {case.summary}")
        return 0
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            root = args.keep
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="adversarial-")))
        result = Campaign(root, chosen).run()
        if args.full:
            print(full_table(result))
        print(table(result))
        return 1 if result.unique_findings() else 0


if __name__ == "__main__":
    sys.exit(main())
