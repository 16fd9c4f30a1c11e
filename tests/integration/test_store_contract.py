"""The object-store contract the registry's protocol rests on, on the local file system and on a
real S3 HTTP API (moto's server on loopback): create-only writes that recognise their own bytes,
compare-and-swap on etags, listing by prefix, fetch, delete. Both stores answer alike."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from components.stores import FileStore, KeyMissing, ObjectStore, S3Store, open_store


@pytest.fixture(params=["file", "s3", "s3-no-prefix"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "file":
        yield FileStore(tmp_path / "store")
        return
    request.getfixturevalue("s3_endpoint")
    if request.param == "s3-no-prefix":  # a bucket of its own: the whole bucket is listed
        import boto3

        bucket = f"store-{uuid.uuid4().hex[:12]}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        found = open_store(f"s3://{bucket}")
    else:
        found = open_store(f"s3://models/team/{tmp_path.name}")
    assert isinstance(found, S3Store)
    yield found
    for key in found.keys(""):
        found.delete(key)


def test_create_writes_once_and_recognises_its_own_bytes(
    store: ObjectStore, tmp_path: Path
) -> None:
    assert store.read("m/versions/1/claim.json") is None
    assert store.create("m/versions/1/claim.json", b"mine") is True
    found = store.read("m/versions/1/claim.json")
    assert found is not None and found[0] == b"mine" and found[1]
    assert store.create("m/versions/1/claim.json", b"theirs") is False
    assert store.create("m/versions/1/claim.json", b"mine") is True  # a retried write
    assert store.read("m/versions/1/claim.json") == found
    source = tmp_path / "model.onnx"
    source.write_bytes(b"weights")
    assert store.create("m/versions/1/model.onnx", source) is True
    assert store.create("m/versions/1/model.onnx", source) is True
    source.write_bytes(b"other weights")
    assert store.create("m/versions/1/model.onnx", source) is False
    assert store.digest("m/versions/1/model.onnx") == hashlib.sha256(b"weights").hexdigest()


def test_swap_replaces_only_the_version_it_read(store: ObjectStore) -> None:
    assert store.swap("m/aliases/production.json", b"v1", None) is True
    assert store.swap("m/aliases/production.json", b"v1 again", None) is False
    first = store.read("m/aliases/production.json")
    assert first is not None and first[0] == b"v1"
    assert store.swap("m/aliases/production.json", b"v2", first[1]) is True
    second = store.read("m/aliases/production.json")
    assert second is not None and second[0] == b"v2" and second[1] != first[1]
    assert store.swap("m/aliases/production.json", b"v3", first[1]) is False  # a stale etag
    assert store.read("m/aliases/production.json") == second


def test_keys_list_by_prefix_and_delete_and_fetch(store: ObjectStore, tmp_path: Path) -> None:
    for key in ("a/versions/1/card.json", "a/versions/2/card.json", "ab/x.json", "b/y.json"):
        assert store.create(key, key.encode())
    assert store.keys("a/") == ["a/versions/1/card.json", "a/versions/2/card.json"]
    assert store.keys("a") == ["a/versions/1/card.json", "a/versions/2/card.json", "ab/x.json"]
    assert store.keys("") == [
        "a/versions/1/card.json", "a/versions/2/card.json", "ab/x.json", "b/y.json",
    ]  # fmt: skip
    assert store.keys("a/versions/2/") == ["a/versions/2/card.json"]
    assert store.keys("a/versions/1/ca") == ["a/versions/1/card.json"]  # a prefix mid-name
    store.create("a/versions/10/card.json", b"10")
    assert store.keys("a/versions/1") == ["a/versions/1/card.json", "a/versions/10/card.json"]
    store.delete("a/versions/10/card.json")
    assert store.keys("c/") == []
    dest = tmp_path / "fetched"
    store.fetch("b/y.json", dest)
    assert dest.read_bytes() == b"b/y.json"
    store.delete("b/y.json")
    store.delete("b/y.json")  # deleting what is gone is not an error
    assert store.read("b/y.json") is None
    with pytest.raises(KeyMissing, match=r"b/y\.json not found"):
        store.fetch("b/y.json", dest)
    with pytest.raises(KeyMissing, match=r"b/y\.json not found"):
        store.digest("b/y.json")


def test_keys_that_leave_the_root_are_refused(store: ObjectStore) -> None:
    from components.errors import RegistryError

    with pytest.raises(RegistryError, match="leaves the registry"):
        store.read("../outside")


def test_the_file_store_hides_and_sweeps_what_killed_writers_left(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    store.create("m/versions/1/card.json", b"card")
    old = tmp_path / "store" / "m" / "versions" / "1" / ".incoming-old"
    young = old.with_name(".incoming-young")
    old.write_bytes(b"half")
    young.write_bytes(b"half")
    now = datetime.now(UTC)
    hour_ago = (now - timedelta(hours=1, seconds=1)).timestamp()
    os.utime(old, (hour_ago, hour_ago))
    assert store.keys("m/") == ["m/versions/1/card.json"]
    assert store.sweep(timedelta(hours=1), now) == [str(old)]
    assert not old.exists() and young.exists()
    assert FileStore(tmp_path / "nothing").sweep(timedelta(0), now) == []
    assert FileStore(tmp_path / "nothing").keys("") == []
    assert store.describe() == f"file://{tmp_path / 'store'}"


# --- what S3 answers when it is not well --------------------------------------------------


def through(proxy_endpoint: str) -> S3Store:
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=proxy_endpoint,
                          config=Config(retries={"max_attempts": 1, "mode": "standard"}))  # fmt: skip
    return S3Store("models", "faults", client=client)


@pytest.mark.parametrize(("status", "code"), [(500, "InternalError"), (503, "SlowDown"),
                                              (400, "Throttling")])  # fmt: skip
def test_server_errors_and_throttling_are_one_line_errors(
    s3_endpoint: str, status: int, code: str
) -> None:
    from faultproxy import FaultProxy

    from components.errors import RegistryError

    with FaultProxy(s3_endpoint) as proxy:
        proxy.plan = lambda method, path, n: (status, code)
        with pytest.raises(
            RegistryError, match=f"answered {code} .* while reading s3://models/faults"
        ):
            through(proxy.endpoint).read("m/card.json")


def test_other_client_errors_are_not_taken_for_an_outage(s3_endpoint: str) -> None:
    from botocore.exceptions import ClientError
    from faultproxy import FaultProxy

    with FaultProxy(s3_endpoint) as proxy:
        proxy.plan = lambda method, path, n: (400, "InvalidArgument")
        with pytest.raises(ClientError, match="InvalidArgument"):
            through(proxy.endpoint).read("m/card.json")


def test_a_conditional_write_in_conflict_is_tried_again(s3_endpoint: str) -> None:
    from faultproxy import FaultProxy

    with FaultProxy(s3_endpoint) as proxy:
        proxy.plan = lambda method, path, n: (
            (409, "ConditionalRequestConflict") if n < 2 else "pass"
        )
        store = through(proxy.endpoint)
        assert store.create("m/claim.json", b"mine") is True
        assert [f for _, _, f in proxy.log[:2]] == [(409, "ConditionalRequestConflict")] * 2
        assert store.read("m/claim.json") is not None
        proxy.plan = lambda method, path, n: (409, "ConditionalRequestConflict")
        assert store.swap("m/other.json", b"x", None) is False  # conflict to the end: not written


def test_listing_reads_every_page(s3_endpoint: str) -> None:
    store = open_store("s3://models/paged")
    assert isinstance(store, S3Store)
    store.page_size = 2
    keys = [f"m/versions/{i}/card.json" for i in range(5)]
    for key in keys:
        store.create(key, b"{}")
    assert store.keys("m/") == sorted(keys)


def test_a_refused_create_of_a_key_that_then_vanished_is_not_a_success(tmp_path: Path) -> None:
    class Refusing(FileStore):
        def _create(self, key: str, data: bytes | Path) -> bool:
            return False  # refused, as if another writer held the key, then deleted it

    assert Refusing(tmp_path / "store").create("k", b"mine") is False


def test_sweep_takes_only_what_is_older_than_the_limit(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    store.create("k", b"x")
    exactly = tmp_path / "store" / ".incoming-exactly"
    exactly.write_bytes(b"half")
    os.utime(exactly, (1_000_000_000, 1_000_000_000))
    at_the_limit = datetime.fromtimestamp(1_000_003_600, UTC)
    assert store.sweep(timedelta(hours=1), at_the_limit) == []
    assert store.sweep(timedelta(hours=1), at_the_limit + timedelta(seconds=1)) == [str(exactly)]


def test_a_file_store_on_a_relative_or_linked_root_lists_its_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    FileStore(tmp_path / "real").create("m/versions/1/card.json", b"{}")
    assert FileStore(tmp_path / "link").keys("") == ["m/versions/1/card.json"]
    monkeypatch.chdir(tmp_path)
    assert FileStore(Path("real")).keys("") == ["m/versions/1/card.json"]
    assert FileStore(Path("link")).keys("m/") == ["m/versions/1/card.json"]
