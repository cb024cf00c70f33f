"""Configuration: one TOML file, every key with a default, environment overrides.

Precedence: built-in defaults < TOML file < ``DICOMNODE_<KEY>`` environment
variables. The file is ``--config PATH``, else ``$DICOMNODE_CONFIG``, else
``./dicomnode.toml`` when present. ``dicomnode config`` prints the result.

The dataclasses below are the schema: each key is read once, by its field's
type (`parse`), and each default is the field's. A key no field has, in any
table or as a ``DICOMNODE_`` variable, is refused, as is a value of another
type (``tls = "false"`` is not false): the error names the key, the entry
(``[[remote_ae]] #2 (ae_title 'OSH_ECHO')``) and where the value came from:
the file, the variable, or "configuration" for a rule between keys whose
values did not all come from the file. Environment values are text:
booleans exactly true, false, 1 or 0 (any case), numbers in decimal, lists
comma-separated; an empty one is refused (``VAR=`` in a unit file meant
"unset", and would silently replace the file's value). Lists and named
values are parsed once, here, into what the node uses (networks, origins,
modality sets, enums).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from dicomnode.deid.options import (
    DEFAULT_OPTIONS,
    DeidPolicy,
    DeidSetup,
    Rectangle,
    SafePrivate,
    SenderPolicies,
    format_options,
    format_safe_private,
    parse_options,
    parse_rectangles,
    parse_safe_private,
)
from dicomnode.deid.profile import Option
from storage.archive import DuplicatePolicy
from storage.index import sqlite_file
from storage.values import normalise_issuer

ENV_PREFIX = "DICOMNODE_"
_EMPTY = "environment variable {} is set but empty: unset it to use the file's value"
# Peers' titles are compared without their spaces (PS3.5: not significant).
_SPACED = "AE title {!r} has leading or trailing spaces, which peers never send"
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE: no backslash
# DIMSE services a known AE may be allowed, per [[remote_ae]] entry.
Service = Literal["echo", "store", "find", "move", "get"]
# The languages a hospital's consultation report can be written in.
REPORT_LANGUAGES = ("en", "ru", "zh")
SERVICES: tuple[Service, ...] = get_args(Service)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class LogLevel(StrEnum):
    """The node's log levels (`logging`'s names, which it takes as they are)."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


# Floors of the time settings, in each key's own unit, and why: below them a
# loop spins against the database or a peer, or no one can answer in time.
# They leave room for the tests that run the node fast (tests/test_crash_jobs.py
# forwards every 0.05 s, test_web_limits times the web out after 1 s).
FLOORS: dict[str, tuple[float, str]] = {
    "forward_interval_seconds": (0.05, "seconds (each pass queries the index database)"),
    "http_header_seconds": (1.0, "seconds (a TLS handshake and the headers)"),
    "association_request_seconds": (0.5, "seconds (a TLS handshake and the A-ASSOCIATE-RQ)"),
    "ocr_budget_seconds": (0.5, "seconds (one frame takes 0.2-1 s)"),
    "network_timeout": (1, "seconds"),
    "acse_timeout": (1, "seconds"),
    "dimse_timeout": (1, "seconds"),
    "poll_interval_us": (100, "microseconds (the longest an association's loop waits)"),
    "session_idle_minutes": (1, "minutes (0 would end every session at once)"),
    "session_max_hours": (1, "hours (0 would end every session at once)"),
}


def _options_from(value: Any) -> frozenset[Option]:
    if not isinstance(value, str | list):
        raise ValueError("expected option names: a comma-separated string or a list")
    return parse_options(value)


def _own_options_from(value: Any) -> frozenset[Option] | None:
    """A sender's options; empty means the node's."""
    return _options_from(value) or None


def _safe_private_from(value: Any) -> frozenset[SafePrivate]:
    if not isinstance(value, str):
        raise ValueError('expected a string of "GGGG:CREATOR:EE" entries separated by ";"')
    return parse_safe_private(value)


def _words(value: Any) -> list[str]:
    """A list setting: a comma-separated string (as the environment gives
    it) or a list of strings; blank entries dropped."""
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list) and all(isinstance(i, str) for i in value):
        items = value
    else:
        raise ValueError(f"expected a comma-separated string or a list, got {_shown(value)}")
    return [i.strip() for i in items if i.strip()]


def parse_networks(value: Any) -> tuple[Network, ...]:
    """Addresses or CIDR networks (``trusted_proxies``), parsed once."""
    networks: list[Network] = []
    for entry in _words(value):
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an address or network") from None
    return tuple(dict.fromkeys(networks))


def _modalities_from(value: Any) -> frozenset[str]:
    return frozenset(m.upper() for m in _words(value))


def _quote(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    escaped = {'"': '\\"', "\\": "\\\\"}
    return (
        '"'
        + re.sub(r'["\\\x00-\x1f\x7f]', lambda m: escaped.get(m[0], f"\\u{ord(m[0]):04x}"), text)
        + '"'
    )


def _hooks(parse: Callable[[Any], Any], show: Callable[[Any], str]) -> dict[str, Any]:
    """Field metadata for a value the file spells its own way."""
    return {"parse": parse, "show": show}


_OPTIONS = _hooks(_options_from, lambda v: _quote(format_options(v)))
_SAFE_PRIVATE = _hooks(_safe_private_from, lambda v: _quote(format_safe_private(v)))
_RECTANGLES = _hooks(
    parse_rectangles, lambda v: "[" + ", ".join(f"[{', '.join(map(str, r))}]" for r in v) + "]"
)
_NETWORKS = _hooks(parse_networks, lambda v: _quote(", ".join(map(str, v))))
_ORIGINS = _hooks(lambda v: parse_origins(v), lambda v: _quote(", ".join(v)))
_MODALITIES = _hooks(_modalities_from, lambda v: _quote(",".join(sorted(v))))


# The default number of receiving processes on PostgreSQL at most (`receivers`).
DEFAULT_RECEIVERS_MOST = 4


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which key and why.
    ``keys``: the [node] keys (or entry tables) whose values the rule read,
    so that `load` names where they came from."""

    def __init__(self, message: str, keys: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.keys = keys


@dataclass(frozen=True)
class RemoteAE:
    """A known peer: where it listens and which hospital issues its PatientIDs."""

    ae_title: str
    host: str
    port: int
    # The hospital that issues its PatientIDs; empty: its AE title.
    issuer: str = ""
    # De-identification options for this hospital's data (None, or "" in the
    # file: the node's).
    deid_options: frozenset[Option] | None = field(
        default=None, metadata=_hooks(_own_options_from, _OPTIONS["show"])
    )
    # Rectangles (x0, y0, x1, y1, inclusive) blanked on every frame of this
    # sender's images, e.g. a cath lab's burned-in banner.
    blank_rectangles: tuple[Rectangle, ...] = field(default=(), metadata=_RECTANGLES)
    # Where associations from this AE title may come from: IP addresses or
    # CIDR networks; empty means the addresses ``host`` resolves to.
    networks: tuple[str, ...] = ()
    # DIMSE services this AE may use (a subset of SERVICES).
    services: tuple[Service, ...] = SERVICES
    # Concurrent associations from this AE (0: the node's per-AE default).
    max_associations: int = 0
    # Megabytes this AE may have stored in the archive (0: no quota).
    quota_mb: int = 0
    # With mutual TLS: the client certificate's subject common name that
    # proves this AE; under mutual TLS it or tls_fingerprint is required.
    tls_subject: str = ""
    # The node calls this AE (forwarding, C-MOVE destination) over TLS,
    # showing its own certificate and checking the peer's against
    # tls_ca_certificates.
    tls: bool = False
    # With mutual TLS, instead of (or besides) tls_subject: the SHA-256
    # fingerprint of this AE's client certificate (hex, colons allowed).
    tls_fingerprint: str = ""
    # Whose patients this AE may find and retrieve: hospitals (issuers), "*"
    # for all; empty means its own issuer only.
    query_issuers: tuple[str, ...] = ()
    # Where this AE may send a C-MOVE: known AE titles; empty means itself only.
    move_destinations: tuple[str, ...] = ()
    # The language of the consultation reports this hospital receives
    # (REPORT_LANGUAGES; `dicomnode.consult`).
    language: str = "en"
    # This AE (a PACS) receives the hospital's consultation reports; needed
    # when the hospital has several [[remote_ae]] entries.
    receives_reports: bool = False
    # Addresses told by e-mail (through smtp_relay) when one of the
    # hospital's cases changes: the case reference and a link, no identity.
    notify_emails: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # However the file spells the hospital ("NCC Bishkek ", two spaces),
        # it is one issuer: patients and pseudonyms are keyed by it.
        issuer = normalise_issuer(self.issuer) or normalise_issuer(self.ae_title)
        object.__setattr__(self, "issuer", issuer)
        object.__setattr__(
            self,
            "query_issuers",
            tuple(i if i == "*" else normalise_issuer(i) for i in self.query_issuers),
        )
        object.__setattr__(
            self, "tls_fingerprint", self.tls_fingerprint.replace(":", "").strip().lower()
        )

    @property
    def sees(self) -> frozenset[str] | None:
        """The issuers whose patients this AE may query and retrieve (None: all)."""
        if "*" in self.query_issuers:
            return None
        return frozenset(self.query_issuers or (self.issuer,))

    @property
    def destinations(self) -> frozenset[str]:
        """The AE titles this AE may move to."""
        return frozenset(self.move_destinations or (self.ae_title,))


@dataclass(frozen=True)
class RouteRule:
    """Forward what matches to ``destination`` (a known remote AE). Empty
    criteria match everything: ``issuer`` is the sending hospital, exactly;
    ``modalities`` a set (in the file a comma-separated string or a list)."""

    destination: str
    issuer: str = ""
    modalities: frozenset[str] = field(default=frozenset(), metadata=_MODALITIES)

    def __post_init__(self) -> None:
        # Compared with the ingest's issuer, which is normalised the same way.
        object.__setattr__(self, "issuer", normalise_issuer(self.issuer))
        if isinstance(self.modalities, str):  # built in code with the file's spelling
            object.__setattr__(self, "modalities", _modalities_from(self.modalities))

    def matches(self, issuer: str, modality: str | None) -> bool:
        return (not self.issuer or issuer == self.issuer) and (
            not self.modalities or (modality or "").upper() in self.modalities
        )


@dataclass(frozen=True)
class Config:
    ae_title: str = "CHDNODE"
    dimse_host: str = "0.0.0.0"
    dimse_port: int = 11112
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    # Mark the session cookie Secure (set when a TLS proxy fronts the web app).
    http_secure_cookies: bool = False
    # Web worker threads; seconds, in all, a connection has to complete its
    # TLS handshake and send its request headers; open connections per
    # client address (0: no cap; behind a reverse proxy it is the proxy's).
    http_threads: int = 16
    http_header_seconds: float = 10.0
    http_max_connections_per_address: int = 32
    # Request bodies: forms and JSON (KiB), a whole STOW-RS request (MiB);
    # larger ones are refused with 413 before they are read.
    http_max_form_kb: int = 1024
    stow_max_mb: int = 4096
    # Addresses or networks of reverse proxies whose X-Forwarded-For names
    # the client (comma-separated); from anyone else the header is ignored.
    trusted_proxies: tuple[Network, ...] = field(default=(), metadata=_NETWORKS)
    # Web origins (comma-separated, e.g. "https://ohif.hospital.org") whose
    # pages may call /dicom-web from the browser (CORS, HTTP Basic only);
    # empty: no CORS headers at all. Never "*". Held as browsers send them.
    cors_origins: tuple[str, ...] = field(default=(), metadata=_ORIGINS)
    data_dir: Path = Path("var")
    # Empty means SQLite in the data directory.
    index_url: str = ""
    # Where instance files go: empty means data_dir/blobs (a local or shared
    # filesystem); "s3://bucket/prefix" an S3-compatible object store, at
    # s3_endpoint_url when it is not AWS (credentials: boto3's environment).
    blob_url: str = ""
    s3_endpoint_url: str = ""
    duplicates: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST
    require_known_ae: bool = True
    check_called_ae: bool = True
    max_associations: int = 16
    max_associations_per_ae: int = 4
    # Open TCP connections (associated or not) beyond which new ones are
    # closed at once: bounds what junk or idle connections can take.
    max_connections: int = 200
    # Connections from one address that have not yet sent their whole
    # A-ASSOCIATE-RQ; more are closed at once (a slowloris from one host
    # cannot crowd out the others).
    max_pending_per_address: int = 8
    # Processes receiving on the DICOM port (SO_REUSEPORT), each with its
    # own de-identification and OCR: 0 is one per core on PostgreSQL (four
    # at most), one on SQLite (several need PostgreSQL). Connection and
    # association caps above are the node's: each process takes its share.
    receivers: int = 0
    # Seconds, in all, a new DICOM connection has to deliver its
    # A-ASSOCIATE-RQ (TLS handshake included), however slowly bytes trickle.
    association_request_seconds: float = 10.0
    # Largest instance accepted over DIMSE (MiB); a larger one is aborted
    # while it arrives, before it is held in memory.
    max_instance_mb: int = 4096
    # Largest decoded size (MiB) of an instance transcoded whole (to RLE,
    # JPEG 2000, JPEG-LS, Deflated; decoded for a DIMSE peer or forwarding),
    # one at a time; WADO-RS Explicit VR Little Endian streams frame by frame.
    transcode_max_mb: int = 256
    max_pdu_size: int = 262144
    # Instances larger than this (MiB) are received into the spool, a
    # private directory (encrypted with a key that lives only in the process,
    # emptied at start) instead of memory; empty spool_dir means one under
    # the system's temporary directory. Never inside data_dir.
    spool_threshold_mb: int = 64
    spool_dir: Path = Path("")
    # The OHIF viewer's files (`make ohif`); empty: .ohif/<version>/dist in the checkout.
    ohif_dir: Path = Path("")
    network_timeout: int = 60
    # Seconds to wait for an association answer (ACSE) and for a DIMSE
    # message once associated.
    acse_timeout: int = 30
    dimse_timeout: int = 60
    # The longest an incoming association's network loop waits for data or
    # a response to send before it looks at its timers (`dimse.waking`).
    poll_interval_us: int = 50000
    max_find_results: int = 0
    # Seconds between forwarding passes (each sends what is due).
    forward_interval_seconds: float = 5.0
    # An SMTP relay ("host" or "host:port") for case notifications to the
    # hospitals' notify_emails; empty: none sent. smtp_sender is the From;
    # web_address the node's address as the hospitals reach it, for the
    # link in the message ("https://chd.centre.example").
    smtp_relay: str = ""
    smtp_sender: str = "dicomnode@localhost"
    web_address: str = ""
    export_keep_hours: int = 72
    min_free_disk_mb: int = 512
    log_level: LogLevel = LogLevel.INFO
    # TLS (BCP 195) on the DICOM port and/or the web port, with PEM files.
    dimse_tls: bool = False
    http_tls: bool = False
    tls_certificate: str = ""
    tls_private_key: str = ""
    # CA bundle that signs client certificates; with it, DICOM TLS requires
    # a client certificate (mutual TLS) mapped to a [[remote_ae]].
    tls_ca_certificates: str = ""
    # Web sessions: ended after this much inactivity, and at the latest after
    # session_max_hours; logins: this many failures per user name and per
    # client address are free, then each attempt waits a doubling back-off
    # (2 s up to 60 s); failures 15 minutes apart start afresh.
    session_idle_minutes: int = 30
    session_max_hours: int = 12
    login_attempts: int = 5
    password_min_length: int = 12
    # Keys for pseudonyms (deid.key) and for re-identification (linkage.key);
    # outside the data directory, created 0600 on first start.
    key_dir: Path = Path("secrets")
    # Profile options applied on top of the Basic Profile (PS3.15 E.3).
    deid_options: frozenset[Option] = field(default=DEFAULT_OPTIONS, metadata=_OPTIONS)
    # Private attributes kept under RETAIN_SAFE_PRIVATE: "GGGG:CREATOR:EE; ..."
    safe_private: frozenset[SafePrivate] = field(default=frozenset(), metadata=_SAFE_PRIVATE)
    # OCR verification of burned-in text (Tesseract): frames read per instance
    # (first, last, a stride between) and the seconds one instance may take.
    ocr: bool = True
    ocr_frames: int = 3
    ocr_budget_seconds: float = 4.0
    # OCR after the C-STORE is answered: the instance is held (encrypted,
    # invisible) until a background verifier has read it, then stored or kept
    # held with what OCR found. false: read before answering (the sender then
    # learns of a hold, at OCR's cost per instance).
    ocr_deferred: bool = True
    # Threads of the deferred verifier in each node process (Tesseract runs
    # outside the GIL): 0 is one per core, less one for the network.
    ocr_workers: int = 0
    # Accept storage SOP classes the node does not know (private ones, or
    # newer than its dictionary), as Orthanc's UnknownSopClassAccepted; they
    # are de-identified by the same rules and their pixels always read by OCR.
    unknown_sop_class_accepted: bool = False
    remote_aes: tuple[RemoteAE, ...] = field(default=(), metadata={"table": "remote_ae"})
    routes: tuple[RouteRule, ...] = field(default=(), metadata={"table": "route"})

    def __post_init__(self) -> None:
        # Built in code (tests, tools) with the file's spellings: the same values.
        if isinstance(self.trusted_proxies, str):
            object.__setattr__(self, "trusted_proxies", parse_networks(self.trusted_proxies))
        if isinstance(self.cors_origins, str):
            object.__setattr__(self, "cors_origins", parse_origins(self.cors_origins))
        object.__setattr__(self, "duplicates", DuplicatePolicy(self.duplicates))
        object.__setattr__(self, "log_level", LogLevel(self.log_level))

    @property
    def receiving_processes(self) -> int:
        """How many processes receive on the DICOM port (``receivers``)."""
        if self.receivers:
            return self.receivers
        if not self.index_url.startswith("postgresql"):
            return 1
        # More would split the association caps too thin: SO_REUSEPORT hands
        # connections out by hash, not by load.
        return max(1, min(os.cpu_count() or 1, DEFAULT_RECEIVERS_MOST))

    @property
    def effective_index_url(self) -> str:
        return self.index_url or f"sqlite:///{(self.data_dir / 'index.sqlite').resolve()}"

    def remote(self, ae_title: str | None) -> RemoteAE | None:
        for remote in self.remote_aes:
            if remote.ae_title == (ae_title or "").strip():
                return remote
        return None


# -- reading the file and the environment by the dataclasses' fields --------


def _schema(cls: Any) -> dict[str, tuple[dataclasses.Field, Any]]:
    """The keys of a table: field and resolved type, in declaration order."""
    hints = get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def _tables() -> dict[str, str]:
    """TOML array-of-tables name -> Config field holding the entries."""
    return {f.metadata["table"]: name for name, (f, _) in _schema(Config).items() if _table(f)}


def _table(f: dataclasses.Field) -> bool:
    return "table" in f.metadata


def _shown(value: Any) -> str:
    """What a value is, for an error (types matter: "false" is not false)."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _convert(kind: Any, raw: Any, text: bool) -> Any:
    """``raw`` as a value of ``kind``: a TOML value of that type, or (``text``)
    an environment variable's string. ValueError says what was expected."""
    origin = get_origin(kind)
    if kind is bool:
        if text and raw.strip().lower() in ("true", "1", "false", "0"):
            return raw.strip().lower() in ("true", "1")
        if not text and isinstance(raw, bool):
            return raw
        expected = "true, false, 1 or 0" if text else "true or false (no quotes)"
        raise ValueError(f"expected {expected}, got {_shown(raw)}")
    if kind is int:
        if text and re.fullmatch(r"\s*[0-9]+\s*", raw):
            return int(raw)
        if not text and isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
            return raw
        raise ValueError(f"expected a whole number, 0 or more, got {_shown(raw)}")
    if kind is float:
        number: Any = raw
        if text:
            with contextlib.suppress(ValueError):
                number = float(raw)
        if (
            isinstance(number, int | float)
            and not isinstance(number, bool)
            and math.isfinite(number)
            and number > 0
        ):
            return float(number)
        raise ValueError(f"expected a positive number, got {_shown(raw)}")
    if kind in (str, Path):
        if not isinstance(raw, str):
            raise ValueError(
                f"expected a string{' (a path)' if kind is Path else ''}, got {_shown(raw)}"
            )
        if kind is Path and raw != raw.strip():
            raise ValueError(f"a path with leading or trailing spaces: {_shown(raw)}")
        return Path(raw) if kind is Path else raw
    if isinstance(kind, type) and issubclass(kind, Enum):
        for member in kind:
            if isinstance(raw, str) and raw.strip().lower() == str(member.value).lower():
                return member
        allowed = ", ".join(repr(m.value) for m in kind)
        raise ValueError(f"expected one of {allowed}, got {_shown(raw)}")
    if origin is Literal:
        if raw not in get_args(kind):
            allowed = ", ".join(repr(a) for a in get_args(kind))
            raise ValueError(f"expected one of {allowed}, got {_shown(raw)}")
        return raw
    if origin is tuple:
        item = get_args(kind)[0]
        items = raw.split(",") if text else raw
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ValueError(f'expected a list of strings, ["...", ...], got {_shown(raw)}')
        return tuple(_convert(item, i.strip(), text) for i in items if i.strip())
    raise TypeError(f"no reader for {kind!r}")  # a field added without one


def _read(cls: type, entry: Any, table: str, source: str) -> Any:
    """One table of the file (or the document's [node]) as ``cls``: every
    key a field, every value of the field's type, required ones present."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{source}: {table} is {_shown(entry)}, expected a table")
    schema = {k: v for k, v in _schema(cls).items() if not _table(v[0])}
    values: dict[str, Any] = {}
    for key, raw in entry.items():
        if key not in schema:
            hint = difflib.get_close_matches(key, schema, n=1)
            also = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{source}: unknown key {key!r} in {table}{also}")
        values[key] = _value(schema[key], raw, False, f"{source}: {key!r} in {table}")
    missing = [
        k
        for k, (f, _) in schema.items()
        if k not in values and f.default is dataclasses.MISSING and f.init
    ]
    if missing:
        raise ConfigError(f"{source}: {table} lacks {missing[0]!r}")
    return cls(**values)


def _value(spec: tuple[dataclasses.Field, Any], raw: Any, text: bool, where: str) -> Any:
    f, kind = spec
    try:
        if "parse" in f.metadata:
            return f.metadata["parse"](raw)
        return _convert(kind, raw, text)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _entries(document: dict[str, Any], name: str, source: str) -> list[Any]:
    entries = document.get(name, [])
    if not isinstance(entries, list):
        raise ConfigError(
            f"{source}: {name!r} at the top level is {_shown(entries)}, expected an array "
            f"of tables ([[{name}]])"
        )
    return entries


def _label(name: str, number: int, entry: Any) -> str:
    """An entry as errors name it: ``[[remote_ae]] #2 (ae_title 'OSH_ECHO')``."""
    title = entry.get("ae_title") if isinstance(entry, dict) else getattr(entry, "ae_title", None)
    return f"[[{name}]] #{number}" + (f" (ae_title {title!r})" if isinstance(title, str) else "")


def parse(document: dict[str, Any], source: str) -> Config:
    """A TOML document as a Config, keys and types checked (not the rules
    between them: `validate`); ``source`` names it in errors."""
    tables = _tables()
    known = {"node", *tables}
    for key in document:
        if key not in known:
            under_node = key in _schema(Config) and key not in tables.values()
            where = "it goes under [node]" if under_node else ""
            hint = difflib.get_close_matches(key, known, n=1)
            shown = (f"[[{hint[0]}]]" if hint[0] in tables else f"[{hint[0]}]") if hint else ""
            where = where or (f"did you mean {shown}?" if hint else "")
            raise ConfigError(
                f"{source}: unknown key {key!r} at the top level"
                + (f": {where}" if where else " (tables: [node], [[remote_ae]], [[route]])")
            )
    if "node" in document and not isinstance(document["node"], dict):
        raise ConfigError(
            f"{source}: 'node' at the top level is {_shown(document['node'])}, "
            "expected a table ([node])"
        )
    node = _read(Config, document.get("node", {}), "[node]", source)
    lists = {}
    for name, attribute in tables.items():
        kind = get_args(_schema(Config)[attribute][1])[0]
        lists[attribute] = tuple(
            _read(kind, entry, _label(name, number, entry), source)
            for number, entry in enumerate(_entries(document, name, source), 1)
        )
    return dataclasses.replace(node, **lists)


def _environment(env: Mapping[str, str]) -> dict[str, Any]:
    """The [node] values set by DICOMNODE_<KEY> variables; others refused."""
    schema = {k: v for k, v in _schema(Config).items() if not _table(v[0])}
    values: dict[str, Any] = {}
    for variable, raw in env.items():
        if not variable.startswith(ENV_PREFIX) or variable == ENV_PREFIX + "CONFIG":
            continue
        key = variable[len(ENV_PREFIX) :].lower()
        if key not in schema:
            names = [ENV_PREFIX + k.upper() for k in schema]
            hint = difflib.get_close_matches(variable, names, n=1)
            raise ConfigError(
                f"environment variable {variable}: no such [node] key"
                + (f" (did you mean {hint[0]}?)" if hint else "")
            )
        if not raw.strip():  # `VAR=` in a unit file: meant "unset", would silently win
            raise ConfigError(_EMPTY.format(variable))
        values[key] = _value(schema[key], raw, True, f"environment variable {variable} ({key})")
    return values


def _remote_label(number: int, remote: RemoteAE) -> str:
    return _label("remote_ae", number, remote)


def validate(config: Config) -> Config:
    """The rules between keys and entries; each ConfigError says which keys
    it read (`ConfigError.keys`), so `load` can name their source."""
    if not _AE_TITLE.match(config.ae_title) or not config.ae_title.strip():
        raise ConfigError(
            f"AE title {config.ae_title!r} is not 1-16 printable characters", ("ae_title",)
        )
    if config.ae_title != config.ae_title.strip():
        raise ConfigError(_SPACED.format(config.ae_title), ("ae_title",))
    remotes = list(enumerate(config.remote_aes, 1))
    seen: dict[str, int] = {}
    for number, remote in remotes:
        if not _AE_TITLE.match(remote.ae_title) or not remote.ae_title.strip():
            raise ConfigError(
                f"{_remote_label(number, remote)}: AE title {remote.ae_title!r} is not 1-16 "
                "printable characters",
                ("remote_aes",),
            )
        if remote.ae_title != remote.ae_title.strip():
            raise ConfigError(
                f"{_remote_label(number, remote)}: {_SPACED.format(remote.ae_title)}",
                ("remote_aes",),
            )
        if (first := seen.setdefault(remote.ae_title, number)) != number:
            raise ConfigError(
                f"{_remote_label(number, remote)}: the AE title is named twice (also entry "
                f"#{first}); only one entry can apply to a peer",
                ("remote_aes",),
            )
    try:
        deid_policies(config)  # the options are enums already: their combination
    except ValueError as exc:
        raise ConfigError(f"deid_options: {exc}", ("deid_options", "remote_aes")) from None
    if config.unknown_sop_class_accepted and not config.ocr:
        raise ConfigError(
            "unknown_sop_class_accepted needs ocr: nothing else verifies the pixels"
            " of a class the node does not know",
            ("unknown_sop_class_accepted", "ocr"),
        )
    for number, remote in remotes:
        entry = _remote_label(number, remote)
        if not remote.issuer:
            raise ConfigError(f"{entry}: issuer is empty", ("remote_aes",))
        if strange := set(remote.services) - set(SERVICES):
            raise ConfigError(f"{entry}: unknown services {sorted(strange)}", ("remote_aes",))
        for address in remote.notify_emails:
            if not re.fullmatch(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+", address):
                raise ConfigError(f"{entry}: {address!r} is not an e-mail address", ("remote_aes",))
        if remote.language not in REPORT_LANGUAGES:
            raise ConfigError(
                f"{entry}: language {remote.language!r} is not one of"
                f" {', '.join(REPORT_LANGUAGES)}",
                ("remote_aes",),
            )
        if not 0 < remote.port <= 65535:
            raise ConfigError(f"{entry}: port {remote.port} is not a TCP port", ("remote_aes",))
        for network in remote.networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ConfigError(
                    f"{entry}: {network!r} is not an address or network", ("remote_aes",)
                ) from None
    outgoing = any(r.tls for r in config.remote_aes)
    if (config.dimse_tls or config.http_tls or outgoing) and not (
        config.tls_certificate and config.tls_private_key
    ):
        used = ("dimse_tls", "http_tls", "remote_aes", "tls_certificate", "tls_private_key")
        raise ConfigError(
            "TLS (dimse_tls, http_tls, a remote_ae's tls): set tls_certificate and tls_private_key",
            used,
        )
    known = {r.ae_title for r in config.remote_aes}
    for number, remote in remotes:
        entry = _remote_label(number, remote)
        if unknown := set(remote.move_destinations) - known:
            raise ConfigError(
                f"{entry}: move_destinations {sorted(unknown)} are not [[remote_ae]] entries",
                ("remote_aes",),
            )
        if remote.tls_fingerprint and not re.fullmatch(r"[0-9a-f]{64}", remote.tls_fingerprint):
            raise ConfigError(f"{entry}: tls_fingerprint is not a SHA-256 in hex", ("remote_aes",))
    _check_certificate_bindings(config)
    if config.smtp_relay and not re.fullmatch(
        r"[A-Za-z0-9.\-\[\]:]+?(:\d{1,5})?", config.smtp_relay
    ):
        raise ConfigError(
            f"smtp_relay {config.smtp_relay!r} is not host or host:port", ("smtp_relay",)
        )
    if config.web_address and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", config.web_address):
        raise ConfigError(
            f"web_address {config.web_address!r} is not an http(s) address", ("web_address",)
        )
    for number, route in enumerate(config.routes, 1):
        if route.destination not in known:
            raise ConfigError(
                f"[[route]] #{number}: destination {route.destination!r} is not a [[remote_ae]]",
                ("routes", "remote_aes"),
            )
    if config.ocr_workers < 0:
        raise ConfigError("ocr_workers: 0 (one per core, less one) or more", ("ocr_workers",))
    if config.ocr_frames < 1:
        raise ConfigError("ocr_frames: at least 1", ("ocr_frames",))
    for name in (
        "http_threads",
        "http_max_form_kb",
        "stow_max_mb",
        "max_pending_per_address",
        "spool_threshold_mb",
        "transcode_max_mb",
    ):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name}: at least 1", (name,))
    for name, (floor, unit) in FLOORS.items():
        if not getattr(config, name) >= floor:
            raise ConfigError(f"{name}: at least {floor:g} {unit}", (name,))
    if config.max_pending_per_address > config.max_connections:
        raise ConfigError(
            "max_pending_per_address: at most max_connections",
            ("max_pending_per_address", "max_connections"),
        )
    if config.http_max_connections_per_address < 0:
        raise ConfigError(
            "http_max_connections_per_address: 0 (no cap) or more",
            ("http_max_connections_per_address",),
        )
    if config.spool_dir != Path("") and _inside(config.spool_dir, config.data_dir):
        raise ConfigError(
            "spool_dir: must not be inside data_dir (nothing clear goes there)",
            ("spool_dir", "data_dir"),
        )
    if config.spool_dir != Path("") and any(
        _inside(config.spool_dir, folder) or _inside(folder, config.spool_dir)
        for folder in (config.key_dir, config.data_dir)
    ):
        raise ConfigError(
            "spool_dir: a folder of its own, neither holding nor inside data_dir or key_dir "
            "(the spool clears what ended processes left in it)",
            ("spool_dir", "data_dir", "key_dir"),
        )
    for name in ("dimse_port", "http_port"):
        if not 0 <= getattr(config, name) <= 65535:
            raise ConfigError(f"{name}: not a TCP port", (name,))
    if config.index_url:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            _ = make_url(config.index_url).port
        except (ArgumentError, ValueError):
            # Never the value: it may hold a password.
            raise ConfigError(
                "index_url: not a database URL (e.g. postgresql://user@host:5432/dicomnode)",
                ("index_url",),
            ) from None
    if config.receivers < 0:
        raise ConfigError("receivers: 0 (one per core on PostgreSQL) or more", ("receivers",))
    if config.receivers > 1 and not config.index_url.startswith("postgresql"):
        raise ConfigError(
            "receivers: several receiving processes need a PostgreSQL index_url",
            ("receivers", "index_url"),
        )
    if config.index_url.startswith("sqlite") and sqlite_file(config.index_url) is None:
        raise ConfigError(
            "index_url: an SQLite index in memory is gone at every restart (and per thread):"
            " name a file, or leave index_url out",
            ("index_url",),
        )
    for name in ("data_dir", "key_dir"):
        if getattr(config, name) == Path(""):
            raise ConfigError(
                f"{name}: empty (the working directory): name a folder of its own", (name,)
            )
    if config.max_pdu_size > 0xFFFFFFFF:
        raise ConfigError(
            "max_pdu_size: at most 4294967295 (a PDU length is 32 bits)", ("max_pdu_size",)
        )
    for name, least, why in _LEAST:
        if getattr(config, name) < least:
            raise ConfigError(f"{name}: at least {least} ({why})", (name,))
    return config


# Whole numbers whose 0 would not mean "none" but break the node.
_LEAST = (
    ("max_associations", 1, "0 would refuse every association"),
    ("max_associations_per_ae", 1, "0 would refuse every association"),
    ("login_attempts", 1, "0 would make every login wait"),
    ("password_min_length", 8, "a shorter password is guessed"),
    ("export_keep_hours", 1, "0 would delete a package before its download"),
)


def parse_origins(text: str | list[str]) -> tuple[str, ...]:
    """The web origins of ``cors_origins`` (comma-separated, or a list) as
    browsers send them in Origin (RFC 6454: scheme and host in lower case,
    no default port, no path), so the request's header is compared exactly.
    ValueError for a wildcard, "null" or anything that is not
    scheme://host[:port]."""
    from urllib.parse import urlsplit

    origins: list[str] = []
    for entry in _words(text):
        parts = urlsplit(entry)
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{entry!r}: not a port") from None
        host = parts.hostname or ""
        if (
            parts.scheme.lower() not in ("http", "https")
            or not host
            or "*" in entry
            or parts.username is not None
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
        ):
            raise ValueError(f"{entry!r} is not an origin such as https://ohif.hospital.org")
        scheme = parts.scheme.lower()
        if not host.isascii():  # browsers send an international name as punycode
            try:
                host = host.encode("idna").decode("ascii")
            except UnicodeError:
                raise ValueError(f"{entry!r}: not a host name") from None
        name = f"[{host}]" if ":" in host else host
        default = {"http": 80, "https": 443}[scheme]
        origins.append(f"{scheme}://{name}" + (f":{port}" if port not in (None, default) else ""))
    return tuple(dict.fromkeys(origins))


def _check_certificate_bindings(config: Config) -> None:
    """Under mutual TLS every entry names the certificate that proves it, and
    none names the node's own (which would let a copy of it act as that AE)."""
    if not (config.dimse_tls and config.tls_ca_certificates):
        return
    from dicomnode.certificates import identity_of_file

    try:
        own = identity_of_file(config.tls_certificate)
    except (OSError, ValueError, IndexError):
        raise ConfigError(
            f"tls_certificate: {config.tls_certificate} is not a readable PEM certificate",
            ("tls_certificate",),
        ) from None
    for number, remote in enumerate(config.remote_aes, 1):
        if not (remote.tls_subject or remote.tls_fingerprint):
            raise ConfigError(
                f"{_remote_label(number, remote)}: with mutual TLS (dimse_tls and "
                "tls_ca_certificates) set tls_subject or tls_fingerprint to its certificate",
                ("remote_aes", "dimse_tls", "tls_ca_certificates"),
            )
        if (own.subject and remote.tls_subject == own.subject) or (
            remote.tls_fingerprint == own.fingerprint
        ):
            raise ConfigError(
                f"{_remote_label(number, remote)}: names the node's own certificate "
                "(tls_certificate), which never proves a client",
                ("remote_aes", "tls_certificate"),
            )


def _inside(path: Path, parent: Path) -> bool:
    return path.resolve().is_relative_to(parent.resolve())


def default_config_path(env: dict[str, str]) -> Path | None:
    named = env.get(ENV_PREFIX + "CONFIG")
    if named is not None and not named.strip():
        raise ConfigError(_EMPTY.format(ENV_PREFIX + "CONFIG"))
    if named:
        return Path(named)
    local = Path("dicomnode.toml")
    return local if local.is_file() else None


def _source(
    keys: tuple[str, ...], path: Path | None, in_file: set[str], set_by_env: set[str]
) -> str:
    """Where the values a rule read came from: the one variable, the file
    (only when they came from it), else "configuration" and the sources."""
    variables = [ENV_PREFIX + k.upper() for k in keys if k in set_by_env]
    if variables and len(keys) == 1:
        return f"environment variable {variables[0]}"
    from_file = path is not None and (not keys or any(k in in_file for k in keys))
    if not variables:
        return str(path) if from_file else "configuration"
    return f"configuration ({', '.join(variables + ([str(path)] if from_file else []))})"


def _document(path: Path) -> dict[str, Any]:
    """The TOML file, or one line saying why it cannot be read."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a configuration file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    if data.startswith(b"\xef\xbb\xbf"):
        raise ConfigError(f"{path}: starts with a byte order mark: save it as UTF-8 without one")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def load(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Defaults, then the TOML file, then environment variables."""
    env = dict(os.environ if env is None else env)
    path = path or default_config_path(env)
    config, in_file = Config(), set()
    if path is not None:
        document = _document(Path(path))
        config = parse(document, str(path))
        node = document.get("node", {})
        in_file = set(node) | {a for name, a in _tables().items() if document.get(name)}
    overrides = _environment(env)
    config = dataclasses.replace(config, **overrides)
    try:
        return validate(config)
    except ConfigError as exc:
        where = _source(exc.keys, path, in_file, set(overrides))
        raise ConfigError(f"{where}: {exc}", exc.keys) from None


def deid_policies(config: Config) -> SenderPolicies:
    """Each sender's de-identification, resolved once: its own options or the
    node's, the node's safe private attributes, its own rectangles."""
    default = DeidPolicy(options=config.deid_options, safe_private=config.safe_private)
    return SenderPolicies(
        default,
        tuple(
            (
                remote.ae_title,
                dataclasses.replace(
                    default,
                    options=default.options if remote.deid_options is None else remote.deid_options,
                    blank_rectangles=remote.blank_rectangles,
                ),
            )
            for remote in config.remote_aes
        ),
    )


def deid_setup(config: Config) -> DeidSetup:
    """What the de-identification step (`dicomnode.deid.pipeline`) is given."""
    return DeidSetup(
        key_dir=config.key_dir,
        data_dir=config.data_dir,
        policies=deid_policies(config),
        ocr=config.ocr,
        ocr_frames=config.ocr_frames,
        ocr_budget_seconds=config.ocr_budget_seconds,
        ocr_deferred=config.ocr_deferred,
        max_instance_mb=config.max_instance_mb,
    )


def without_secrets(config: Config) -> Config:
    """The configuration to show: a password inside ``index_url`` masked,
    whether in the user part or a query parameter libpq reads (``password``,
    ``sslpassword``); better kept in ~/.pgpass or PGPASSWORD."""
    if "://" not in config.index_url:
        return config
    from sqlalchemy.engine import make_url

    url = make_url(config.index_url)
    secret = {k: "***" for k in url.query if "password" in k.lower()}
    if not (url.password or secret):
        return config
    url = url.update_query_dict(secret) if secret else url
    return dataclasses.replace(config, index_url=url.render_as_string(hide_password=True))


def _toml(spec: tuple[dataclasses.Field, Any], value: Any) -> str:
    """A field's value in the file's own spelling (what `parse` reads back)."""
    f, kind = spec
    if "show" in f.metadata:
        return f.metadata["show"](value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple):
        item = (dataclasses.field(), get_args(kind)[0])
        return "[" + ", ".join(_toml(item, v) for v in value) + "]"
    return _quote("" if value == Path("") else str(value))


def _lines(item: Any, every: bool) -> list[str]:
    """``key = value`` for each field of ``item``: all of them, or (an entry)
    the required ones and those that differ from their default."""
    lines = []
    for name, spec in _schema(type(item)).items():
        value = getattr(item, name)
        if _table(spec[0]) or (not every and value == spec[0].default):
            continue
        lines.append(f"{name} = {_toml(spec, value)}")
    return lines


def to_toml(config: Config) -> str:
    """The effective configuration in the file's own format."""
    lines = ["[node]", *_lines(config, every=True)]
    for name, attribute in _tables().items():
        for entry in getattr(config, attribute):
            lines += ["", f"[[{name}]]", *_lines(entry, every=False)]
    return "\n".join(lines) + "\n"
