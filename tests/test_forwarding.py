"""Forwarding survives a destination that is down and a node restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.presentation import AllStoragePresentationContexts

from dicomnode.config import ConfigError, RemoteAE, RouteRule, load
from dicomnode.forwarding import Forwarder, backoff
from dicomnode.ingest import Ingestor
from dicomnode.node import open_archive
from dicomnode.samples import PATIENTS, UID_ROOT, xa_instance
from storage.keys import Level
from storage.query import Query
from tests.conftest import REMOTES, free_port, incoming, make_config


class Destination:
    """A real storage SCP (pynetdicom) that records what it receives."""

    def __init__(self, port: int) -> None:
        self.received: list[str] = []
        ae = AE(ae_title="RESEARCH")
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(
                context.abstract_syntax, ["1.2.840.10008.1.2.5", "1.2.840.10008.1.2.1"]
            )
        self.server = ae.start_server(
            ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, self.store)]
        )

    def store(self, event: evt.Event) -> int:
        self.received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000


def test_down_destination_restart_then_everything_arrives_once(tmp_path: Path) -> None:
    port = free_port()
    config = make_config(
        tmp_path, remote_aes=(*REMOTES, RemoteAE("RESEARCH", "127.0.0.1", port, "research archive"))
    )
    archive = open_archive(config)
    ingestor = Ingestor(config, archive)
    study = generate_uid(UID_ROOT)
    for seed in range(3):
        xa = xa_instance(
            PATIENTS[0],
            frames=2,
            rows=32,
            cols=32,
            study_uid=study,
            seed=seed,
            instance_number=seed + 1,
        )
        assert ingestor.ingest(incoming(xa, calling_ae="BISHKEK_CATH")).status == 0
    (row,) = archive.index.find(Query(level=Level.STUDY, keys={"StudyInstanceUID": ""}))
    stored_study = row["StudyInstanceUID"]
    forwarder = Forwarder(config, archive)
    assert forwarder.enqueue_study(stored_study, "RESEARCH") == 3
    assert forwarder.enqueue_study(stored_study, "RESEARCH") == 0  # already waiting
    assert forwarder.run_once() == {"sent": 0, "waiting": 3}  # destination down
    assert forwarder.run_once() == {"sent": 0, "waiting": 0}  # not due again yet
    archive.close()

    # The node restarts; the destination comes back.
    destination = Destination(port)
    try:
        archive = open_archive(config)
        later = datetime.now(UTC) + backoff(1) + timedelta(seconds=1)
        assert Forwarder(config, archive).run_once(now=later) == {"sent": 3, "waiting": 0}
        assert Forwarder(config, archive).run_once(now=later) == {"sent": 0, "waiting": 0}
        assert len(destination.received) == len(set(destination.received)) == 3
        assert archive.index.forwarding.counts() == {("RESEARCH", "done"): 3}
        archive.close()
    finally:
        destination.server.shutdown()


def test_backoff_grows_and_is_capped() -> None:
    assert [backoff(n).total_seconds() for n in (1, 2, 3)] == [30, 60, 120]
    assert backoff(20) == timedelta(hours=1)


def test_routing_rules_queue_what_matches(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        remote_aes=(*REMOTES, RemoteAE("RESEARCH", "127.0.0.1", free_port(), "research")),
        routes=(RouteRule("RESEARCH", issuer="NCC Bishkek", modalities="XA"),),
    )
    archive = open_archive(config)
    ingestor = Ingestor(config, archive)
    xa = xa_instance(PATIENTS[0], frames=2, rows=16, cols=16)
    assert ingestor.ingest(incoming(xa, calling_ae="BISHKEK_CATH")).status == 0  # routed
    assert ingestor.ingest(incoming(xa, calling_ae="BISHKEK_CATH")).status == 0  # duplicate
    other = xa_instance(PATIENTS[1], frames=2, rows=16, cols=16)
    assert ingestor.ingest(incoming(other, calling_ae="DUSHANBE_ECHO")).status == 0  # other issuer
    assert archive.index.forwarding.counts() == {("RESEARCH", "pending"): 1}
    archive.close()


def test_a_route_to_an_unknown_ae_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[[route]]\ndestination = "NOWHERE"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="NOWHERE"):
        load(path, env={})
