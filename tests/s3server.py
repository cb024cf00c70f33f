"""A local S3-compatible server for the tests: moto's standalone server.

Started as its own process on loopback port 0; ready once it says it is
running (its own line on stderr, which names the port it bound), stopped
when the session ends.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class LocalS3:
    def __init__(self) -> None:
        self.port = 0  # until it says which it bound
        self.endpoint = ""
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> LocalS3:
        server = Path(sys.executable).parent / "moto_server"
        self._process = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._process.stderr is not None
        said = []
        for line in self._process.stderr:
            said.append(line)
            if bound := re.search(r"Running on (http://127\.0\.0\.1:(\d+))", line):
                self.endpoint, self.port = bound.group(1), int(bound.group(2))
                break
        else:
            raise RuntimeError("moto_server exited before it was ready:\n" + "".join(said[-20:]))
        # Keep draining its request log so the pipe never fills up.
        threading.Thread(target=self._process.stderr.read, daemon=True).start()
        return self

    def bucket(self, name: str) -> str:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, **_lower(CREDENTIALS))
        client.create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=30)


def _lower(credentials: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": credentials["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": credentials["AWS_SECRET_ACCESS_KEY"],
        "region_name": credentials["AWS_DEFAULT_REGION"],
    }
