"""Logging that never carries patient data.

pydicom quotes the offending value when it warns about a malformed element,
pynetdicom logs whole C-FIND identifiers, werkzeug logs URLs and botocore
logs whole requests at DEBUG; all are silenced here, and SQL errors are
raised without their parameters. The node's own log lines name instances
only by `ingest.reference_of`.
"""

from __future__ import annotations

import logging

import pydicom.config
from pynetdicom import _config as pynetdicom_config


def quiet_libraries() -> None:
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    pynetdicom_config.LOG_REQUEST_IDENTIFIERS = False
    pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = False
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # The DUL logs a traceback for every malformed or cut-off PDU (junk from
    # port scanners); dicomnode.transport logs one line for what it refuses.
    logging.getLogger("pynetdicom.dul").setLevel(logging.CRITICAL)
    # The JPEG 2000 codec logs every tile it encodes.
    logging.getLogger("openjpeg").setLevel(logging.WARNING)
    # Werkzeug logs every request line, URL and query string included.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # boto3/botocore at DEBUG log whole requests (headers, signed URLs);
    # Alembic announces each migration step at INFO, which is worth keeping.
    for name in ("boto3", "botocore", "s3transfer", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)


def setup(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    quiet_libraries()
