"""The archive in any S3-compatible object store (``[storage] backend = "s3"``), shared by every
callrec of the register (docs/archive.md#stores).

aiobotocore (aio-libs): botocore's complete S3 model on aiohttp, which callrec already runs on,
so multipart upload, ranged GET, batch delete and Object Lock headers are all the real S3 API
rather than a subset. ``request_checksum_calculation="when_required"``: botocore 1.36+ adds
CRC trailers by default, which several S3-compatible stores refuse (docs/archive.md#stores).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from callrec.archive.settings import StorageSettings
from callrec.archive.store import StoreError

PART = 8 * 1024 * 1024
"""Multipart above this: a 2-hour call of Opus is about 11 MB, of FLAC 50 MB, of WAV 115 MB."""
_MISSING = {"NoSuchKey", "404", "NotFound"}
_DELETE_BATCH = 1000  # the S3 limit per DeleteObjects


class S3Store:
    """Objects under ``prefix`` in ``bucket``. The client is made on first use, inside the
    running event loop, and closed by ``close()``."""

    def __init__(self, settings: StorageSettings, staging: Path, *, access_key: str, secret_key: str) -> None:
        self._s = settings
        self._keys = (access_key, secret_key)
        self.name = f"s3:{settings.endpoint}/{settings.bucket}/{settings.prefix}"
        self.staging = staging
        self.shared = True
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._lock = asyncio.Lock()

    async def _c(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    stack = contextlib.AsyncExitStack()
                    config = Config(
                        request_checksum_calculation="when_required",
                        response_checksum_validation="when_required",
                        s3={"addressing_style": "path"},
                        connect_timeout=5,
                        read_timeout=30,
                        retries={"max_attempts": 3, "mode": "standard"},
                    )
                    self._client = await stack.enter_async_context(
                        get_session().create_client(
                            "s3",
                            endpoint_url=self._s.endpoint,
                            region_name=self._s.region,
                            aws_access_key_id=self._keys[0],
                            aws_secret_access_key=self._keys[1],
                            config=config,
                        )
                    )
                    self._stack = stack
        return self._client

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
        self._client = self._stack = None

    def _key(self, name: str) -> str:
        return f"{self._s.prefix}{name}"

    def _error(self, exc: Exception, name: str = "") -> Exception:
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                return FileNotFoundError(name)
            return StoreError(
                f"{self.name}: {code or 'error'}: {exc.response.get('Error', {}).get('Message', '')}"[:200]
            )
        return StoreError(f"{self.name}: {type(exc).__name__}: {exc}"[:200])

    async def put_file(self, name: str, path: Path, *, retain_until: datetime | None = None) -> None:
        extra: dict[str, Any] = {}
        if self._s.object_lock and retain_until is not None:
            # The store keeps the object at least until the row's retain_until (docs/archive.md):
            # erasure destroys the key first, so a locked object is ciphertext only.
            extra = {"ObjectLockMode": self._s.object_lock, "ObjectLockRetainUntilDate": retain_until}
        try:
            c = await self._c()
            size = (await asyncio.to_thread(path.stat)).st_size
            if size <= PART:
                body = await asyncio.to_thread(path.read_bytes)
                await c.put_object(Bucket=self._s.bucket, Key=self._key(name), Body=body, **extra)
            else:
                await self._multipart(c, name, path, extra)
        except (TimeoutError, ClientError, BotoCoreError, OSError) as exc:
            raise self._error(exc, name) from exc
        await asyncio.to_thread(path.unlink, missing_ok=True)

    async def _multipart(self, c: Any, name: str, path: Path, extra: dict[str, Any]) -> None:
        key = self._key(name)
        upload = await c.create_multipart_upload(Bucket=self._s.bucket, Key=key, **extra)
        upload_id = upload["UploadId"]
        parts = []
        try:
            with await asyncio.to_thread(path.open, "rb") as f:
                number = 1
                while block := await asyncio.to_thread(f.read, PART):
                    part = await c.upload_part(
                        Bucket=self._s.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=block
                    )
                    parts.append({"ETag": part["ETag"], "PartNumber": number})
                    number += 1
            await c.complete_multipart_upload(
                Bucket=self._s.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await c.abort_multipart_upload(Bucket=self._s.bucket, Key=key, UploadId=upload_id)
            raise

    async def read(self, name: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            c = await self._c()
            resp = await c.get_object(
                Bucket=self._s.bucket, Key=self._key(name), Range=f"bytes={offset}-{offset + length - 1}"
            )
            async with resp["Body"] as body:
                return bytes(await body.read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return b""  # past the end: the caller's size check says what is wrong
            raise self._error(exc, name) from exc
        except (TimeoutError, BotoCoreError, OSError) as exc:
            raise self._error(exc, name) from exc

    async def size(self, name: str) -> int:
        try:
            c = await self._c()
            head = await c.head_object(Bucket=self._s.bucket, Key=self._key(name))
            return int(head["ContentLength"])
        except (TimeoutError, ClientError, BotoCoreError, OSError) as exc:
            raise self._error(exc, name) from exc

    async def delete_many(self, names: Sequence[str]) -> list[bool]:
        gone: list[bool] = []
        try:
            c = await self._c()
            for i in range(0, len(names), _DELETE_BATCH):
                batch = list(names[i : i + _DELETE_BATCH])
                resp = await c.delete_objects(
                    Bucket=self._s.bucket,
                    Delete={"Objects": [{"Key": self._key(n)} for n in batch], "Quiet": True},
                )
                failed = {e.get("Key") for e in resp.get("Errors", []) if e.get("Code") not in _MISSING}
                gone += [self._key(n) not in failed for n in batch]
        except (TimeoutError, ClientError, BotoCoreError, OSError) as exc:
            raise self._error(exc) from exc
        return gone

    async def probe(self) -> None:
        name = f".probe-{uuid.uuid4()}"
        try:
            c = await self._c()
            await c.put_object(Bucket=self._s.bucket, Key=self._key(name), Body=b"callrec probe")
            resp = await c.get_object(Bucket=self._s.bucket, Key=self._key(name))
            async with resp["Body"] as body:
                data = await body.read()
            await c.delete_object(Bucket=self._s.bucket, Key=self._key(name))
        except (TimeoutError, ClientError, BotoCoreError, OSError) as exc:
            raise self._error(exc, name) from exc
        if data != b"callrec probe":
            raise StoreError(f"{self.name}: the probe object read back wrong")

    async def ping(self) -> None:
        """A cheap request for the connection-health gauge."""
        try:
            c = await self._c()
            await c.head_bucket(Bucket=self._s.bucket)
        except (TimeoutError, ClientError, BotoCoreError, OSError) as exc:
            raise self._error(exc) from exc
