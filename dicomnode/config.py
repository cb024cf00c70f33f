"""Configuration: one TOML file, every key with a default, environment overrides.

Precedence: built-in defaults < TOML file < ``DICOMNODE_<KEY>`` environment
variables. The file is ``--config PATH``, else ``$DICOMNODE_CONFIG``, else
``./dicomnode.toml`` when present. ``dicomnode config`` prints the result.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage.values import normalise_issuer

ENV_PREFIX = "DICOMNODE_"
DEFAULT_DEID_OPTIONS = "RETAIN_MODIFIED_DATES,RETAIN_PATIENT_CHARACTERISTICS,CLEAN_DESCRIPTORS"
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE: no backslash
# DIMSE services a known AE may be allowed, per [[remote_ae]] entry.
SERVICES = ("echo", "store", "find", "move", "get")


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which key and why."""


@dataclass(frozen=True)
class RemoteAE:
    """A known peer: where it listens and which hospital issues its PatientIDs."""

    ae_title: str
    host: str
    port: int
    issuer: str
    # De-identification options for this hospital's data ("" = the node's).
    deid_options: str = ""
    # Rectangles (x0, y0, x1, y1, inclusive) blanked on every frame of this
    # sender's images, e.g. a cath lab's burned-in banner.
    blank_rectangles: tuple[tuple[int, int, int, int], ...] = ()
    # Where associations from this AE title may come from: IP addresses or
    # CIDR networks; empty means the addresses ``host`` resolves to.
    networks: tuple[str, ...] = ()
    # DIMSE services this AE may use (a subset of SERVICES).
    services: tuple[str, ...] = SERVICES
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

    def __post_init__(self) -> None:
        # However the file spells the hospital ("NCC Bishkek ", two spaces),
        # it is one issuer: patients and pseudonyms are keyed by it.
        object.__setattr__(self, "issuer", normalise_issuer(self.issuer))
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
    ``modalities`` a comma-separated list."""

    destination: str
    issuer: str = ""
    modalities: str = ""

    def __post_init__(self) -> None:
        # Compared with the ingest's issuer, which is normalised the same way.
        object.__setattr__(self, "issuer", normalise_issuer(self.issuer))

    def matches(self, issuer: str, modality: str | None) -> bool:
        wanted = {m.strip().upper() for m in self.modalities.split(",") if m.strip()}
        return (not self.issuer or issuer == self.issuer) and (
            not wanted or (modality or "").upper() in wanted
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
    trusted_proxies: str = ""
    # Web origins (comma-separated, e.g. "https://ohif.hospital.org") whose
    # pages may call /dicom-web from the browser (CORS, HTTP Basic only);
    # empty: no CORS headers at all. Never "*".
    cors_origins: str = ""
    data_dir: Path = Path("var")
    # Empty means SQLite in the data directory.
    index_url: str = ""
    # Where instance files go: empty means data_dir/blobs (a local or shared
    # filesystem); "s3://bucket/prefix" an S3-compatible object store, at
    # s3_endpoint_url when it is not AWS (credentials: boto3's environment).
    blob_url: str = ""
    s3_endpoint_url: str = ""
    duplicates: str = "keep-first"
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
    poll_interval_us: int = 1000
    max_find_results: int = 0
    # Seconds between forwarding passes (each sends what is due).
    forward_interval_seconds: float = 5.0
    export_keep_hours: int = 72
    min_free_disk_mb: int = 512
    log_level: str = "INFO"
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
    deid_options: str = DEFAULT_DEID_OPTIONS
    # Private attributes kept under RETAIN_SAFE_PRIVATE: "GGGG:CREATOR:EE; ..."
    safe_private: str = ""
    # OCR verification of burned-in text (Tesseract): frames read per instance
    # (first, last, a stride between) and the seconds one instance may take.
    ocr: bool = True
    ocr_frames: int = 3
    ocr_budget_seconds: float = 4.0
    # Accept storage SOP classes the node does not know (private ones, or
    # newer than its dictionary), as Orthanc's UnknownSopClassAccepted; they
    # are de-identified by the same rules and their pixels always read by OCR.
    unknown_sop_class_accepted: bool = False
    remote_aes: tuple[RemoteAE, ...] = field(default_factory=tuple)
    routes: tuple[RouteRule, ...] = field(default_factory=tuple)

    @property
    def effective_index_url(self) -> str:
        return self.index_url or f"sqlite:///{(self.data_dir / 'index.sqlite').resolve()}"

    def remote(self, ae_title: str | None) -> RemoteAE | None:
        for remote in self.remote_aes:
            if remote.ae_title == (ae_title or "").strip():
                return remote
        return None


_SCALARS = {f.name: f for f in dataclasses.fields(Config) if f.name not in ("remote_aes", "routes")}


def _coerce(name: str, value: Any) -> Any:
    kind = _SCALARS[name].type
    try:
        if kind == "bool":
            if isinstance(value, str):
                if value.lower() not in {"1", "0", "true", "false", "yes", "no"}:
                    raise ValueError(value)
                return value.lower() in {"1", "true", "yes"}
            return bool(value)
        if kind == "int":
            return int(value)
        if kind == "float":
            number = float(value)
            if not number > 0:
                raise ValueError(value)
            return number
        if kind == "Path":
            return Path(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected {kind}, got {value!r}") from None


def _rectangles(value: Any) -> tuple[tuple[int, int, int, int], ...]:
    try:
        rectangles = tuple(tuple(int(v) for v in r) for r in value)
    except (TypeError, ValueError):
        raise ConfigError("blank_rectangles: a list of [x0, y0, x1, y1] lists") from None
    if any(len(r) != 4 or r[0] > r[2] or r[1] > r[3] or min(r) < 0 for r in rectangles):
        raise ConfigError("blank_rectangles: each is [x0, y0, x1, y1] with x0<=x1, y0<=y1")
    return rectangles  # type: ignore[return-value]


def _strings(entry: dict[str, Any], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = entry.get(key, list(default))
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list):
        raise ConfigError(f"remote_ae {key}: a list of strings")
    return tuple(str(v).strip() for v in value if str(v).strip())


def _remote(entry: dict[str, Any]) -> RemoteAE:
    try:
        return RemoteAE(
            ae_title=str(entry["ae_title"]),
            host=str(entry["host"]),
            port=int(entry["port"]),
            issuer=normalise_issuer(str(entry.get("issuer") or "")) or str(entry["ae_title"]),
            deid_options=str(entry.get("deid_options", "")),
            blank_rectangles=_rectangles(entry.get("blank_rectangles", [])),
            networks=_strings(entry, "networks", ()),
            services=_strings(entry, "services", SERVICES),
            max_associations=int(entry.get("max_associations", 0)),
            quota_mb=int(entry.get("quota_mb", 0)),
            tls_subject=str(entry.get("tls_subject", "")),
            tls=bool(entry.get("tls", False)),
            tls_fingerprint=str(entry.get("tls_fingerprint", "")),
            query_issuers=_strings(entry, "query_issuers", ()),
            move_destinations=_strings(entry, "move_destinations", ()),
        )
    except KeyError as exc:
        raise ConfigError(f"remote_ae entry lacks {exc.args[0]!r}") from None
    except (TypeError, ValueError):
        raise ConfigError(
            f"remote_ae {entry.get('ae_title')!r}: a number is not a number"
        ) from None


def validate(config: Config) -> Config:
    for title in [config.ae_title, *(r.ae_title for r in config.remote_aes)]:
        if not _AE_TITLE.match(title) or not title.strip():
            raise ConfigError(f"AE title {title!r} is not 1-16 printable characters")
    from dicomnode.deid.header import parse_safe_private
    from dicomnode.deid.profile import parse_options

    for text in [config.deid_options, *(r.deid_options for r in config.remote_aes)]:
        try:
            parse_options(text)
        except ValueError as exc:
            raise ConfigError(f"deid_options: {exc}") from None
    try:
        parse_safe_private(config.safe_private)
    except ValueError as exc:
        raise ConfigError(f"safe_private: {exc}") from None
    if config.unknown_sop_class_accepted and not config.ocr:
        raise ConfigError(
            "unknown_sop_class_accepted needs ocr: nothing else verifies the pixels"
            " of a class the node does not know"
        )
    for remote in config.remote_aes:
        if not remote.issuer:
            raise ConfigError(f"remote_ae {remote.ae_title}: issuer is empty")
        if unknown := set(remote.services) - set(SERVICES):
            raise ConfigError(f"remote_ae {remote.ae_title}: unknown services {sorted(unknown)}")
        for network in remote.networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ConfigError(
                    f"remote_ae {remote.ae_title}: {network!r} is not an address or network"
                ) from None
    outgoing = any(r.tls for r in config.remote_aes)
    if (config.dimse_tls or config.http_tls or outgoing) and not (
        config.tls_certificate and config.tls_private_key
    ):
        raise ConfigError(
            "TLS (dimse_tls, http_tls, a remote_ae's tls): set tls_certificate and tls_private_key"
        )
    known = {r.ae_title for r in config.remote_aes}
    for remote in config.remote_aes:
        if unknown := set(remote.move_destinations) - known:
            raise ConfigError(
                f"remote_ae {remote.ae_title}: move_destinations {sorted(unknown)} are not "
                "[[remote_ae]] entries"
            )
        if remote.tls_fingerprint and not re.fullmatch(r"[0-9a-f]{64}", remote.tls_fingerprint):
            raise ConfigError(
                f"remote_ae {remote.ae_title}: tls_fingerprint is not a SHA-256 in hex"
            )
    _check_certificate_bindings(config)
    for route in config.routes:
        if route.destination not in known:
            raise ConfigError(f"route: destination {route.destination!r} is not a [[remote_ae]]")
    if config.duplicates not in {"keep-first", "replace"}:
        raise ConfigError("duplicates: must be 'keep-first' or 'replace'")
    if config.ocr_frames < 1 or config.ocr_budget_seconds <= 0:
        raise ConfigError("ocr_frames and ocr_budget_seconds: at least one frame, a positive time")
    for name in (
        "http_threads",
        "http_max_form_kb",
        "stow_max_mb",
        "max_pending_per_address",
        "spool_threshold_mb",
        "transcode_max_mb",
    ):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name}: at least 1")
    for name in ("http_header_seconds", "association_request_seconds"):
        if not getattr(config, name) > 0:
            raise ConfigError(f"{name}: a positive number of seconds")
    if config.max_pending_per_address > config.max_connections:
        raise ConfigError("max_pending_per_address: at most max_connections")
    if config.http_max_connections_per_address < 0:
        raise ConfigError("http_max_connections_per_address: 0 (no cap) or more")
    if config.spool_dir != Path("") and _inside(config.spool_dir, config.data_dir):
        raise ConfigError("spool_dir: must not be inside data_dir (nothing clear goes there)")
    for proxy in filter(None, (p.strip() for p in config.trusted_proxies.split(","))):
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"trusted_proxies: {proxy!r} is not an address or network") from None
    for name in ("dimse_port", "http_port"):
        if not 0 <= getattr(config, name) <= 65535:
            raise ConfigError(f"{name}: not a TCP port")
    try:
        parse_origins(config.cors_origins)
    except ValueError as exc:
        raise ConfigError(f"cors_origins: {exc}") from None
    return config


def parse_origins(text: str) -> tuple[str, ...]:
    """The web origins of ``cors_origins`` as browsers send them in Origin
    (RFC 6454: scheme and host in lower case, no default port, no path), so
    the request's header is compared exactly. ValueError for a wildcard,
    "null" or anything that is not scheme://host[:port]."""
    from urllib.parse import urlsplit

    origins: list[str] = []
    for entry in filter(None, (e.strip() for e in text.split(","))):
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
    from dicomnode.net.tls import identity_of_file

    try:
        own = identity_of_file(config.tls_certificate)
    except (OSError, ValueError, IndexError):
        raise ConfigError(
            f"tls_certificate: {config.tls_certificate} is not a readable PEM certificate"
        ) from None
    for remote in config.remote_aes:
        if not (remote.tls_subject or remote.tls_fingerprint):
            raise ConfigError(
                f"remote_ae {remote.ae_title}: with mutual TLS (dimse_tls and "
                "tls_ca_certificates) set tls_subject or tls_fingerprint to its certificate"
            )
        if (own.subject and remote.tls_subject == own.subject) or (
            remote.tls_fingerprint == own.fingerprint
        ):
            raise ConfigError(
                f"remote_ae {remote.ae_title}: names the node's own certificate "
                "(tls_certificate), which never proves a client"
            )


def _inside(path: Path, parent: Path) -> bool:
    return path.resolve().is_relative_to(parent.resolve())


def default_config_path(env: dict[str, str]) -> Path | None:
    if named := env.get(ENV_PREFIX + "CONFIG"):
        return Path(named)
    local = Path("dicomnode.toml")
    return local if local.is_file() else None


def load(path: Path | None = None, env: dict[str, str] | None = None) -> Config:
    """Defaults, then the TOML file, then environment variables."""
    env = dict(os.environ if env is None else env)
    values: dict[str, Any] = {}
    remotes: list[RemoteAE] = []
    routes: list[RouteRule] = []
    path = path or default_config_path(env)
    if path is not None:
        try:
            document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        for name, value in document.get("node", {}).items():
            if name not in _SCALARS:
                raise ConfigError(f"{path}: unknown key node.{name}")
            values[name] = _coerce(name, value)
        remotes = [_remote(entry) for entry in document.get("remote_ae", [])]
        routes = [
            RouteRule(
                str(r.get("destination", "")),
                str(r.get("issuer", "")),
                str(r.get("modalities", "")),
            )
            for r in document.get("route", [])
        ]
    for name in _SCALARS:
        if (value := env.get(ENV_PREFIX + name.upper())) is not None:
            values[name] = _coerce(name, value)
    return validate(Config(**values, remote_aes=tuple(remotes), routes=tuple(routes)))


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def without_secrets(config: Config) -> Config:
    """The configuration to show: a password inside ``index_url`` masked
    (better kept in ~/.pgpass or PGPASSWORD, which libpq reads)."""
    if "@" not in config.index_url or "://" not in config.index_url:
        return config
    from sqlalchemy.engine import make_url

    url = make_url(config.index_url)
    if not url.password:
        return config
    return dataclasses.replace(config, index_url=url.render_as_string(hide_password=True))


def to_toml(config: Config) -> str:
    """The effective configuration in the file's own format."""
    lines = ["[node]"]
    for name in _SCALARS:
        value = getattr(config, name)
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int):
            text = str(value)
        else:
            text = _quote(str(value))
        lines.append(f"{name} = {text}")
    for remote in config.remote_aes:
        lines += ["", "[[remote_ae]]", f"ae_title = {_quote(remote.ae_title)}"]
        lines += [f"host = {_quote(remote.host)}", f"port = {remote.port}"]
        lines.append(f"issuer = {_quote(remote.issuer)}")
        if remote.deid_options:
            lines.append(f"deid_options = {_quote(remote.deid_options)}")
        if remote.blank_rectangles:
            boxes = ", ".join(f"[{', '.join(map(str, r))}]" for r in remote.blank_rectangles)
            lines.append(f"blank_rectangles = [{boxes}]")
        lines.append(f"networks = [{', '.join(map(_quote, remote.networks))}]")
        lines.append(f"services = [{', '.join(map(_quote, remote.services))}]")
        lines.append(f"max_associations = {remote.max_associations}")
        lines.append(f"quota_mb = {remote.quota_mb}")
        if remote.tls_subject:
            lines.append(f"tls_subject = {_quote(remote.tls_subject)}")
        if remote.tls:
            lines.append("tls = true")
        if remote.tls_fingerprint:
            lines.append(f"tls_fingerprint = {_quote(remote.tls_fingerprint)}")
        if remote.query_issuers:
            lines.append(f"query_issuers = [{', '.join(map(_quote, remote.query_issuers))}]")
        if remote.move_destinations:
            names = ", ".join(map(_quote, remote.move_destinations))
            lines.append(f"move_destinations = [{names}]")
    for route in config.routes:
        lines += ["", "[[route]]", f"destination = {_quote(route.destination)}"]
        lines += [f"issuer = {_quote(route.issuer)}", f"modalities = {_quote(route.modalities)}"]
    return "\n".join(lines) + "\n"
