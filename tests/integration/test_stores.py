"""The archive store interface, held to one contract by the filesystem store and by a real
S3-compatible server (SeaweedFS): what the archive step, serving and retention rely on."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from callrec import config
from callrec.archive import reading, s3
from callrec.archive.store import FilesystemStore, ObjectStore, StoreError, object_name
from tests.harness.config import offline_toml
from tests.harness.seaweed import BUCKET, LOCKED_BUCKET, Seaweed


def s3_settings(
    tmp_path: Path, seaweed: Seaweed, prefix: str, bucket: str = BUCKET, **storage: str
) -> config.Settings:
    extra = "".join(f'{k} = "{v}"\n' for k, v in storage.items())
    path = tmp_path / "callrec.toml"
    path.write_text(
        offline_toml(tmp_path, "postgresql://x@127.0.0.1/x", seaweed.toml(prefix, bucket) + extra)
    )
    return config.load(path)


@pytest.fixture(params=["filesystem", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    if request.param == "filesystem":
        st: ObjectStore = FilesystemStore(tmp_path / "archive")
    else:
        seaweed = request.getfixturevalue("seaweed")
        st = reading.open_store(s3_settings(tmp_path, seaweed, f"t-{uuid.uuid4().hex[:8]}/"))
    yield st
    await st.close()


async def staged(st: ObjectStore, data: bytes) -> Path:
    st.staging.mkdir(parents=True, exist_ok=True)
    path = st.staging / f"{uuid.uuid4()}.part"
    path.write_bytes(data)
    return path


async def test_put_read_ranges_size_and_replace(store: ObjectStore) -> None:
    name = object_name(uuid.uuid4())
    data = bytes(range(256)) * 100
    staging = await staged(store, data)
    await store.put_file(name, staging)
    assert not staging.exists()  # the staged file is consumed
    assert await store.size(name) == len(data)
    assert await store.read(name, 0, 10) == data[:10]
    assert await store.read(name, 25_590, 100) == data[25_590:]  # a read past the end is short
    assert await store.read(name, len(data) + 5, 10) == b""
    await store.put_file(name, await staged(store, b"second"))  # an unconfirmed object is replaced
    assert await store.read(name, 0, 100) == b"second"


async def test_missing_objects_are_file_not_found(store: ObjectStore) -> None:
    name = object_name(uuid.uuid4())
    with pytest.raises(FileNotFoundError):
        await store.size(name)
    with pytest.raises(FileNotFoundError):
        await store.read(name, 0, 10)
    assert await store.delete_many([name]) == [True]  # already gone counts as gone


async def test_delete_many_and_probe(store: ObjectStore) -> None:
    names = [object_name(uuid.uuid4()) for _ in range(3)]
    for n in names:
        await store.put_file(n, await staged(store, b"x"))
    assert await store.delete_many(names) == [True, True, True]
    for n in names:
        with pytest.raises(FileNotFoundError):
            await store.size(n)
    await store.probe()
    await store.ping()


async def test_multipart_upload_of_a_long_call(store: ObjectStore) -> None:
    name = object_name(uuid.uuid4())
    data = bytes(i % 251 for i in range(s3.PART * 2 + 12345))
    await store.put_file(name, await staged(store, data))
    assert await store.size(name) == len(data)
    assert await store.read(name, s3.PART - 5, 10) == data[s3.PART - 5 : s3.PART + 5]


async def test_an_unreachable_s3_store_is_a_store_error_in_one_line(tmp_path: Path, seaweed: Seaweed) -> None:
    s = s3_settings(tmp_path, seaweed, "x/")
    broken = s3.S3Store(
        s.storage.__class__(**{**vars(s.storage), "endpoint": "http://127.0.0.1:9"}),
        tmp_path,
        access_key="a",
        secret_key="b",
    )
    try:
        with pytest.raises(StoreError) as err:
            await broken.probe()
        assert "\n" not in str(err.value) and "127.0.0.1:9" in str(err.value)
    finally:
        await broken.close()


async def test_object_lock_headers_are_sent_when_configured(tmp_path: Path, seaweed: Seaweed) -> None:
    """SeaweedFS accepts but does not enforce Object Lock: check what is sent, not what is kept."""
    s = s3_settings(tmp_path, seaweed, "lock/", LOCKED_BUCKET, object_lock="COMPLIANCE")
    st = reading.open_store(s)
    assert isinstance(st, s3.S3Store)
    sent: list[dict[str, Any]] = []
    client = await st._c()
    client.meta.events.register(
        "before-call.s3.PutObject", lambda params, **kw: sent.append(params["headers"])
    )
    until = datetime.now(UTC) + timedelta(days=180)
    try:
        await st.put_file(object_name(uuid.uuid4()), await staged(st, b"x"), retain_until=until)
    finally:
        await st.close()
    (headers,) = sent
    assert headers["x-amz-object-lock-mode"] == "COMPLIANCE"
    assert headers["x-amz-object-lock-retain-until-date"].startswith(f"{until:%Y-%m-%dT%H:%M:%S}")
