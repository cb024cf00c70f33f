"""Blobs as objects in an S3-compatible store (AWS S3, MinIO, Ceph RGW, …).

A PUT is whole or absent (the service never shows half an object) and
durable once answered, so acknowledging an instance after it keeps the
promise the file store makes with fsync. Each PUT carries the payload's MD5,
so the service refuses an upload damaged on the way. Credentials come from
boto3's usual chain (environment, ~/.aws, an instance role), never from the
node's configuration file. Service errors surface as OSError, which the
ingest answers with "out of resources" like a full disk.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from storage.blobs import _KEY, CHUNK, LOST_AND_FOUND, BlobRef, BlobStore, check_key, read_ahead

# Parts of a multipart upload (a large instance, sent as it is read from the
# spool): each carries its own MD5; at most this much is held at once.
PART_SIZE = 16 << 20


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


class S3BlobStore(BlobStore):
    def __init__(self, bucket: str, prefix: str, endpoint_url: str = "") -> None:
        try:
            import boto3
            from botocore.config import Config as BotoConfig
        except ImportError:
            raise RuntimeError("blob_url is s3://: install chd-dicomnode[s3] (boto3)") from None
        if not bucket:
            raise ValueError("blob_url: s3://bucket/prefix names no bucket")
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            # Many associations store at once: one pooled connection each.
            config=BotoConfig(retries={"mode": "standard"}, max_pool_connections=64),
        )
        self.bucket, self.prefix = bucket, prefix.strip("/")
        parent = self.prefix.rpartition("/")[0]
        self.aside = f"{parent}/{LOST_AND_FOUND}" if parent else LOST_AND_FOUND
        self.location = f"s3://{bucket}/{self.prefix}"

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{check_key(key)}"

    def _call(self, operation: str, **arguments: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **arguments)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(f"no object in {self.location}") from None
            raise OSError(f"object store {self.location}: {code or 'error'}") from None
        except BotoCoreError as exc:  # unreachable endpoint, timeouts
            raise OSError(f"object store {self.location}: {type(exc).__name__}") from None

    def put(self, key: str, data: bytes) -> None:
        self._call("put_object", Key=self._name(key), Body=data, ContentMD5=_md5(data))

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> BlobRef:
        """One PUT when it all fits in a part, else a multipart upload of
        parts of `PART_SIZE` (whole or absent: parts are invisible until
        completed, and aborted on any failure)."""
        name, digest, size = self._name(key), hashlib.sha256(), 0
        buffer, upload = bytearray(), None
        parts: list[dict[str, Any]] = []
        try:
            for chunk in read_ahead(chunks):
                digest.update(chunk)
                size += len(chunk)
                buffer += chunk
                while len(buffer) >= PART_SIZE:
                    if upload is None:
                        upload = self._call("create_multipart_upload", Key=name)["UploadId"]
                    part = bytes(buffer[:PART_SIZE])
                    del buffer[:PART_SIZE]
                    parts.append(self._part(name, upload, len(parts) + 1, part))
            if upload is None:
                self.put(key, bytes(buffer))
            else:
                if buffer:
                    parts.append(self._part(name, upload, len(parts) + 1, bytes(buffer)))
                self._call(
                    "complete_multipart_upload",
                    Key=name,
                    UploadId=upload,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            if upload is not None:
                # What an abort cannot remove, the bucket's lifecycle rule does.
                with contextlib.suppress(OSError):
                    self._call("abort_multipart_upload", Key=name, UploadId=upload)
            raise
        return BlobRef(key, size, digest.hexdigest())

    def _part(self, name: str, upload: str, number: int, data: bytes) -> dict[str, Any]:
        answer = self._call(
            "upload_part",
            Key=name,
            UploadId=upload,
            PartNumber=number,
            Body=data,
            ContentMD5=_md5(data),
        )
        return {"ETag": answer["ETag"], "PartNumber": number}

    def read(self, key: str) -> bytes:
        return self._call("get_object", Key=self._name(key))["Body"].read()

    def read_chunks(self, key: str, size: int = CHUNK) -> Iterator[bytes]:
        body = self._call("get_object", Key=self._name(key))["Body"]
        try:
            yield from body.iter_chunks(size)
        finally:
            body.close()

    def exists(self, key: str) -> bool:
        try:
            self._call("head_object", Key=self._name(key))
        except FileNotFoundError:
            return False
        return True

    def delete(self, key: str) -> None:
        self._call("delete_object", Key=self._name(key))

    def problem(self) -> str | None:
        try:
            self._call("head_bucket")
        except OSError as exc:
            return str(exc)
        return None

    def listing(self) -> Iterator[tuple[str, float]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + "/"
        )
        for page in pages:
            for item in page.get("Contents", []):
                key = item["Key"][len(self.prefix) + 1 :]
                if _KEY.match(key):
                    yield key, item["LastModified"].timestamp()

    def set_aside(self, key: str) -> None:
        source = self._name(key)
        target = f"{self.aside}/{key.rpartition('/')[2]}"
        self._call("copy_object", Key=target, CopySource={"Bucket": self.bucket, "Key": source})
        self._call("delete_object", Key=source)

    def _package_name(self, name: str) -> str:
        """``packages/`` beside the store's prefix, outside the instance keys."""
        parent = self.prefix.rpartition("/")[0]
        folder = f"{parent}/packages" if parent else "packages"
        return f"{folder}/{self.check_package(name)}"

    def put_package(self, name: str, source: BinaryIO) -> None:
        """boto3's managed upload: read and sent in parts as it goes, the
        object appearing only once complete (a failed upload is aborted)."""
        from boto3.exceptions import S3UploadFailedError
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        # Two parts in flight at most: memory stays a few parts, not the package.
        parts = TransferConfig(multipart_chunksize=PART_SIZE, max_concurrency=2)
        try:
            self.client.upload_fileobj(source, self.bucket, self._package_name(name), Config=parts)
        except (S3UploadFailedError, ClientError, BotoCoreError) as exc:
            raise OSError(f"object store {self.location}: {type(exc).__name__}") from None

    def open_package(self, name: str) -> tuple[BinaryIO, int]:
        answer = self._call("get_object", Key=self._package_name(name))
        return answer["Body"], int(answer["ContentLength"])

    def delete_package(self, name: str) -> None:
        self._call("delete_object", Key=self._package_name(name))

    def packages(self) -> Iterator[tuple[str, float]]:
        from botocore.exceptions import BotoCoreError, ClientError

        folder = self._package_name("00000000.zip").rpartition("/")[0] + "/"
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=folder
        )
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    name = item["Key"][len(folder) :]
                    if re.fullmatch(r"[0-9a-f]{8,64}\.zip", name):
                        yield name, item["LastModified"].timestamp()
        except (ClientError, BotoCoreError) as exc:
            raise OSError(f"object store {self.location}: {type(exc).__name__}") from None
