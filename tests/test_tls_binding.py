"""Certificates bound to AE titles, and host names checked on the node's own
TLS associations (issue #16).

An attacker with any certificate of the configured CA (another hospital's
device, or the node's own server certificate copied off a backup) must not be
able to call in as an AE title its certificate does not name; and the node
must not send studies to whoever answers with some CA-signed certificate at
a destination's address.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification, XRayAngiographicImageStorage

from dicomnode.config import Config, ConfigError, RemoteAE, load, validate
from dicomnode.jobs.forwarding import Forwarder
from dicomnode.net.tls import make_ca, make_certificate
from dicomnode.node import Node
from dicomnode.ops.samples import PATIENTS, xa_instance
from tests.conftest import incoming, make_config

STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"


def fingerprint(certificate: Path) -> str:
    """What `openssl x509 -noout -fingerprint -sha256` prints, normalised."""
    der = ssl.PEM_cert_to_DER_cert(certificate.read_text())
    return hashlib.sha256(der).hexdigest()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    make_ca(folder)
    make_certificate(folder, "chdnode.test", [])  # the node's own
    make_certificate(folder, "cath-a.osh.test", [])
    make_certificate(folder, "cath-b.osh.test", [])
    # The same subject as A's, issued again (or to someone else) by the CA.
    twin = folder / "twin"
    twin.mkdir()
    for name in ("ca.crt", "ca.key"):
        (twin / name).write_bytes((folder / name).read_bytes())
    make_certificate(twin, "cath-a.osh.test", [])
    # Destinations: one valid for the loopback address, one only for a name
    # the node does not call it by.
    make_certificate(folder, "pacs.test", [])
    make_certificate(folder, "pacs.elsewhere.test", ["pacs.elsewhere.test"], loopback=False)
    return folder


def mutual(tmp_path: Path, pki: Path, *remotes: RemoteAE, **overrides: object) -> Config:
    """A node with mutual TLS on its DICOM port (not validated: the runtime
    check must hold even for a table validation would refuse)."""
    values: dict[str, object] = {
        "require_known_ae": True,
        "remote_aes": remotes,
        "dimse_tls": True,
        "tls_certificate": str(pki / "chdnode.test.crt"),
        "tls_private_key": str(pki / "chdnode.test.key"),
        "tls_ca_certificates": str(pki / "ca.crt"),
    }
    values.update(overrides)
    return make_config(tmp_path, **values)


def client(pki: Path, stem: str, folder: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain((folder or pki) / f"{stem}.crt", (folder or pki) / f"{stem}.key")
    return context


def associates(node: Node, calling: str, context: ssl.SSLContext) -> bool:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate(
        "127.0.0.1", node.dicom.port, ae_title="CHDNODE", tls_args=(context, "localhost")
    )
    established = assoc.is_established
    if established:
        assoc.release()
    return established


def refusals(node: Node) -> list[tuple[str, str]]:
    rows = sorted(node.archive.index.audit.rows(), key=lambda r: r["seq"])
    return [(r["user"], r["detail"]) for r in rows if r["event"] == "association-rejected"]


A = RemoteAE("CATH_A", "127.0.0.1", 104, "Osh", tls_subject="cath-a.osh.test")
B = RemoteAE("CATH_B", "127.0.0.1", 104, "Nukus", tls_subject="cath-b.osh.test")


# -- incoming: which certificate proves which AE title ------------------------


def test_the_nodes_own_certificate_is_never_a_client(tmp_path: Path, pki: Path) -> None:
    own = fingerprint(pki / "chdnode.test.crt")
    unbound = RemoteAE("UNBOUND", "127.0.0.1", 104, "Osh")
    by_subject = RemoteAE("BY_SUBJECT", "127.0.0.1", 104, "Osh", tls_subject="chdnode.test")
    by_print = RemoteAE("BY_PRINT", "127.0.0.1", 104, "Osh", tls_fingerprint=own)
    with Node(mutual(tmp_path, pki, A, unbound, by_subject, by_print), web=False) as node:
        stolen = client(pki, "chdnode.test")
        for calling in ("UNBOUND", "BY_SUBJECT", "BY_PRINT", "CATH_A"):
            assert not associates(node, calling, stolen), calling
        assert associates(node, "CATH_A", client(pki, "cath-a.osh.test"))  # the port works
        refused = refusals(node)
    assert {user for user, _ in refused} == {"UNBOUND", "BY_SUBJECT", "BY_PRINT", "CATH_A"}
    assert all("node's own certificate" in why for _, why in refused), refused


def test_a_certificate_proves_only_the_entries_that_name_it(tmp_path: Path, pki: Path) -> None:
    a_print = fingerprint(pki / "cath-a.osh.test.crt")
    b_print = fingerprint(pki / "cath-b.osh.test.crt")
    pinned_a = RemoteAE("CATH_A", "127.0.0.1", 104, "Osh", tls_fingerprint=a_print)
    pinned_b = RemoteAE("CATH_B", "127.0.0.1", 104, "Nukus", tls_fingerprint=b_print)
    unbound = RemoteAE("UNBOUND", "127.0.0.1", 104, "Osh")
    with Node(mutual(tmp_path, pki, pinned_a, pinned_b, unbound), web=False) as node:
        cert_b = client(pki, "cath-b.osh.test")
        assert not associates(node, "CATH_A", cert_b)  # B's certificate, A's title
        assert not associates(node, "UNBOUND", cert_b)  # an entry naming no certificate
        assert not associates(node, "STRANGER", cert_b)  # unknown calling AE
        assert associates(node, "CATH_B", cert_b)  # fingerprint match
        assert associates(node, "CATH_A", client(pki, "cath-a.osh.test"))
        refused = dict(refusals(node))
    assert b_print in refused["CATH_A"] and "cath-b.osh.test" in refused["CATH_A"]
    assert "names no certificate" in refused["UNBOUND"]
    assert refused["STRANGER"] == "calling AE title is not known"


def test_subject_and_fingerprint_must_both_match(tmp_path: Path, pki: Path) -> None:
    """A second certificate with A's subject (re-issued, or issued to someone
    else by mistake) does not pass for A when A pins its fingerprint."""
    a_print = fingerprint(pki / "cath-a.osh.test.crt")
    both = replace(A, tls_fingerprint=a_print)
    with Node(mutual(tmp_path, pki, both, B), web=False) as node:
        assert not associates(node, "CATH_A", client(pki, "cath-a.osh.test", pki / "twin"))
        assert associates(node, "CATH_A", client(pki, "cath-a.osh.test"))
        assert not associates(node, "CATH_A", client(pki, "cath-b.osh.test"))
        (first, second) = [why for _, why in refusals(node)]
    assert "fingerprint" in first and "subject" in second


def test_the_policy_fails_closed(tmp_path: Path, pki: Path) -> None:
    """No certificate, an unparsable one, or no readable own certificate to
    compare with: refused, whatever the entry says."""
    from dicomnode.dimse.access import AccessPolicy

    der = ssl.PEM_cert_to_DER_cert((pki / "cath-a.osh.test.crt").read_text())
    policy = AccessPolicy(mutual(tmp_path, pki, A))
    assert policy.decide("CATH_A", "CHDNODE", "127.0.0.1", der).reject is None
    assert policy.decide("CATH_A", "CHDNODE", "127.0.0.1", None).why == "no client certificate"
    assert policy.decide("CATH_A", "CHDNODE", "127.0.0.1", b"junk").reject is not None
    lost = AccessPolicy(mutual(tmp_path, pki, A, tls_certificate=str(tmp_path / "gone.crt")))
    assert "cannot be read" in lost.decide("CATH_A", "CHDNODE", "127.0.0.1", der).why


# -- configuration -------------------------------------------------------------


def test_mutual_tls_needs_every_entry_bound(tmp_path: Path, pki: Path) -> None:
    unbound = RemoteAE("UNBOUND", "127.0.0.1", 104, "Osh", tls=True)
    with pytest.raises(ConfigError, match="UNBOUND") as raised:
        validate(mutual(tmp_path, pki, A, unbound))
    assert "\n" not in str(raised.value) and "tls_fingerprint" in str(raised.value)
    pinned = replace(unbound, tls_fingerprint=fingerprint(pki / "pacs.test.crt"))
    assert validate(mutual(tmp_path, pki, A, pinned))
    # Without client certificates (no CA bundle) there is nothing to bind.
    assert validate(mutual(tmp_path, pki, A, unbound, tls_ca_certificates=""))


def test_mutual_tls_binding_is_checked_when_the_file_is_loaded(tmp_path: Path, pki: Path) -> None:
    path = tmp_path / "dicomnode.toml"
    path.write_text(
        f"""
[node]
dimse_tls = true
tls_certificate = "{pki / "chdnode.test.crt"}"
tls_private_key = "{pki / "chdnode.test.key"}"
tls_ca_certificates = "{pki / "ca.crt"}"

[[remote_ae]]
ae_title = "OSH_CATH"
host = "127.0.0.1"
port = 104
issuer = "Osh"
"""
    )
    with pytest.raises(ConfigError, match=r"'OSH_CATH'\): .*tls_subject or tls_fingerprint"):
        load(path, env={})


@pytest.mark.parametrize("field", ["tls_subject", "tls_fingerprint"])
def test_an_entry_naming_the_nodes_own_certificate_is_refused(
    tmp_path: Path, pki: Path, field: str
) -> None:
    own = {"tls_subject": "chdnode.test", "tls_fingerprint": fingerprint(pki / "chdnode.test.crt")}
    entry = RemoteAE("LOOPHOLE", "127.0.0.1", 104, "Osh", **{field: own[field]})
    with pytest.raises(ConfigError, match=r"LOOPHOLE.*node's own certificate"):
        validate(mutual(tmp_path, pki, A, entry))


# -- outgoing: the destination's certificate must be for its host ---------------


class TlsStoreSCP:
    """A pynetdicom storage SCP behind TLS, with the given certificate."""

    def __init__(self, pki: Path, stem: str) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.crt"))
        context.load_cert_chain(pki / f"{stem}.crt", pki / f"{stem}.key")
        context.verify_mode = ssl.CERT_REQUIRED  # like storescp +tls
        self.received: list[str] = []
        ae = AE(ae_title="TLS_PACS")
        ae.add_supported_context(XRayAngiographicImageStorage, "1.2.840.10008.1.2.1")
        ae.add_supported_context(XRayAngiographicImageStorage, "1.2.840.10008.1.2.5")
        ae.add_supported_context(XRayAngiographicImageStorage, "1.2.840.10008.1.2")
        self.server = ae.start_server(
            ("127.0.0.1", 0),
            block=False,
            ssl_context=context,
            evt_handlers=[(evt.EVT_C_STORE, self._store)],
        )
        self.port = self.server.server_address[1]  # bound, not probed
        self.stored = threading.Event()

    def _store(self, event: evt.Event) -> int:
        self.received.append(event.request.AffectedSOPInstanceUID)
        self.stored.set()
        return 0x0000

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def scp(request: pytest.FixtureRequest, pki: Path) -> Iterator[TlsStoreSCP]:
    server = TlsStoreSCP(pki, request.param)
    yield server
    server.close()


def sender(tmp_path: Path, pki: Path, port: int, host: str = "127.0.0.1") -> Config:
    """A node calling TLS_PACS over TLS; its own port plain (no bindings needed)."""
    caller = RemoteAE(
        "OSH_CATH", "127.0.0.1", 104, "Osh", move_destinations=("OSH_CATH", "TLS_PACS")
    )
    pacs = RemoteAE("TLS_PACS", host, port, "Research", tls=True)
    return make_config(
        tmp_path,
        require_known_ae=True,
        remote_aes=(caller, pacs),
        tls_certificate=str(pki / "chdnode.test.crt"),
        tls_private_key=str(pki / "chdnode.test.key"),
        tls_ca_certificates=str(pki / "ca.crt"),
    )


def stored_study(node: Node) -> str:
    ds = xa_instance(PATIENTS[2], frames=2, rows=32, cols=32)
    result = node.ingestor.ingest(incoming(ds, calling_ae="OSH_CATH"))
    assert result.status == 0
    from storage.keys import Level
    from storage.query import Query

    (row,) = node.archive.index.find(Query(Level.STUDY, {"StudyInstanceUID": ""}))
    return row["StudyInstanceUID"]


def forward(node: Node, config: Config, study: str) -> tuple[dict[str, int], str]:
    forwarder = Forwarder(config, node.archive)
    assert forwarder.enqueue_study(study, "TLS_PACS") == 1
    result = forwarder.run_once()
    waiting = node.archive.index.forwarding.due_or_later()
    return result, " ".join(str(row["last_error"]) for row in waiting)


def move(node: Node, study: str) -> int:
    ae = AE(ae_title="OSH_CATH")
    ae.add_requested_context(STUDY_ROOT_MOVE)
    assoc = ae.associate("127.0.0.1", node.dicom.port, ae_title="CHDNODE")
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel, query.StudyInstanceUID = "STUDY", study
    statuses = [s.Status for s, _ in assoc.send_c_move(query, "TLS_PACS", STUDY_ROOT_MOVE) if s]
    assoc.release()
    return int(statuses[-1])


@pytest.mark.slow
@pytest.mark.parametrize("scp", ["pacs.elsewhere.test"], indirect=True)
def test_a_destination_whose_certificate_lacks_its_host_gets_nothing(
    tmp_path: Path, pki: Path, scp: TlsStoreSCP, caplog: pytest.LogCaptureFixture
) -> None:
    config = sender(tmp_path, pki, scp.port)
    caplog.set_level(logging.WARNING)
    with Node(config, web=False) as node:
        study = stored_study(node)
        result, reason = forward(node, config, study)
        assert result == {"sent": 0, "waiting": 1}
        assert "not valid for '127.0.0.1'" in reason, reason
        assert move(node, study) == 0xC000  # known destination, not associated: not A801
    assert scp.received == []
    lines = [r.getMessage() for r in caplog.records if "TLS_PACS" in r.getMessage()]
    assert any("not valid for '127.0.0.1'" in line for line in lines), lines


@pytest.mark.slow
@pytest.mark.parametrize(
    ("scp", "host"), [("pacs.test", "127.0.0.1"), ("pacs.test", "localhost")], indirect=["scp"]
)
def test_a_destination_with_the_right_certificate_gets_the_study(
    tmp_path: Path, pki: Path, scp: TlsStoreSCP, host: str
) -> None:
    config = sender(tmp_path, pki, scp.port, host)
    with Node(config, web=False) as node:
        study = stored_study(node)
        assert forward(node, config, study)[0] == {"sent": 1, "waiting": 0}
        assert move(node, study) == 0x0000
    assert len(scp.received) == 2


# -- development certificates ------------------------------------------------------


def sans(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n.value) for n in names}


def test_development_certificates_name_loopback_and_the_given_hosts(tmp_path: Path) -> None:
    make_ca(tmp_path)
    given = make_certificate(tmp_path, "node.example.org", ["10.20.0.5", "node.internal"])
    assert sans(given) == {
        "node.example.org",
        "node.internal",
        "10.20.0.5",
        "localhost",
        "127.0.0.1",
    }
    bare = make_certificate(tmp_path, "echo1.ncc.kg", [])
    assert sans(bare) == {"echo1.ncc.kg", "localhost", "127.0.0.1"}
    away = make_certificate(tmp_path, "far.example.org", ["10.0.0.9"], loopback=False)
    assert sans(away) == {"far.example.org", "10.0.0.9"}


def tls_command(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``dicomnode tls ...`` through its own parser, in process (a subprocess
    costs two seconds of imports per call)."""
    import argparse

    from dicomnode.cli.security import add_parsers, run_tls

    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    code = run_tls(parser.parse_args(["tls", *argv]))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_tls_command_prints_what_an_entry_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = str(tmp_path / "pki")
    assert tls_command(capsys, "ca", "--dir", pki)[0] == 0
    code, out, err = tls_command(capsys, "cert", "echo1.ncc.kg", "--dir", pki, "--no-loopback")
    assert code == 0, err
    printed = fingerprint(tmp_path / "pki" / "echo1.ncc.kg.crt")
    assert f'tls_fingerprint = "{printed}"' in out
    # The value operators get from openssl, colons and case aside, is the same.
    openssl = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", f"{pki}/echo1.ncc.kg.crt"],
        capture_output=True,
        text=True,
        check=True,
    )
    pasted = RemoteAE(
        "ECHO1", "127.0.0.1", 104, "NCC", tls_fingerprint=openssl.stdout.split("=")[1]
    )
    assert pasted.tls_fingerprint == printed
    assert sans(tmp_path / "pki" / "echo1.ncc.kg.crt") == {"echo1.ncc.kg"}
    shown = tls_command(capsys, "fingerprint", str(tmp_path / "pki" / "echo1.ncc.kg.crt"))
    assert shown == (0, f'tls_subject = "echo1.ncc.kg"\ntls_fingerprint = "{printed}"\n', "")
    # A device label is no host name: with no --host and no loopback it would have none.
    code, _, err = tls_command(capsys, "cert", "Echo 1", "--dir", pki, "--no-loopback")
    assert code == 2 and err.count("\n") == 1 and "--host" in err
    assert tls_command(capsys, "fingerprint", str(tmp_path / "nothing.crt"))[0] == 2


def test_the_tls_command_runs_beside_a_configuration_it_is_needed_to_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An upgrade leaves a configuration that no longer validates (entries
    without fingerprints): the command that prints them must still run."""
    from dicomnode.cli.main import main

    broken = tmp_path / "dicomnode.toml"
    broken.write_text('[node]\nae_title = "not a valid AE title at all"\n')
    pki = str(tmp_path / "pki")
    assert main(["--config", str(broken), "tls", "ca", "--dir", pki]) == 0
    assert main(["--config", str(broken), "tls", "cert", "echo1", "--dir", pki]) == 0
    capsys.readouterr()
    assert main(["--config", str(broken), "tls", "fingerprint", f"{pki}/echo1.crt"]) == 0
    assert "tls_fingerprint = " in capsys.readouterr().out
    assert main(["--config", str(broken), "stats"]) != 0  # the others still refuse it
