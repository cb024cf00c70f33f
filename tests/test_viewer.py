from dicomnode.config import Config
from dicomnode.ingest import Ingestor
from storage.archive import Archive
from tests.conftest import incoming
from tests.test_ingest import instance
from viewer import create_app


def test_health_and_stats(config: Config, archive: Archive, ingestor: Ingestor) -> None:
    client = create_app(config, archive).test_client()
    assert client.get("/healthz").json == {"status": "ok", "ae_title": "CHDNODE"}
    assert client.get("/api/stats").json["instances"] == 0
    ingestor.ingest(incoming(instance()))
    assert client.get("/api/stats").json["instances"] == 1
    assert client.get("/nothing-here").status_code == 404
