"""The registry protocol decision by decision: what a pointer written by an older slimgate means,
which versions ``list`` and ``gc`` see in each state, what a diff shows, and what publish and
the alias do when the store fails or loses a reply at one step. Faults are injected into the
file store (the S3 side of the same faults runs through a proxy in test_registry_faults.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from components.errors import RegistryError, RegistryInputError
from components.registry import FileRegistry, Pointer, Registry
from components.stores import FileStore


class FaultyStore(FileStore):
    """A file store that runs ``before_create(key)`` before each create-only write, and loses
    the reply of the next ``lose_swaps`` swaps (the swap lands; the writer is told it did not)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.before_create: Callable[[str], None] = lambda key: None
        self.lose_swaps = 0

    def _create(self, key: str, data: bytes | Path) -> bool:
        self.before_create(key)
        return super()._create(key, data)

    def swap(self, key: str, data: bytes, expected_etag: str | None) -> bool:
        landed = super().swap(key, data, expected_etag)
        if landed and self.lose_swaps:
            self.lose_swaps -= 1
            return False
        return landed


def model_file(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / f"{content.hex()[:12]}.onnx"
    path.write_bytes(content)
    return path


def publish(reg: Registry, tmp_path: Path, content: bytes, **files: Path) -> int:
    return reg.publish(
        "m", {"model.onnx": model_file(tmp_path, content), **files}, {"n": 1}
    ).version


def events(reg: Registry, action: str) -> list[dict[str, Any]]:
    return sorted((e for e in reg.events("m") if e["action"] == action), key=lambda e: e["time"])


# --- pointers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "history", "withdrawn", "mode", "previous"),
    [
        ({"version": 3}, (3,), (), "promote", None),
        ({"version": 3, "previous": 2}, (2, 3), (), "promote", 2),
        ({"version": 3, "previous": 5}, (3,), (5,), "rollback", 5),  # an old rollback
        ({"version": 3, "previous": 3}, (3, 3), (), "promote", 3),
    ],
)
def test_a_pointer_from_before_the_history_was_kept(
    raw: dict[str, Any], history: tuple[int, ...], withdrawn: tuple[int, ...], mode: str,
    previous: int | None,
) -> None:  # fmt: skip
    pointer = Pointer.parse(json.dumps(raw).encode(), "here")
    assert (pointer.history, pointer.withdrawn, pointer.mode, pointer.previous) == (
        history, withdrawn, mode, previous,
    )  # fmt: skip


def test_unreadable_cards_and_pointers_are_named(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    publish(reg, tmp_path, b"one")
    card = tmp_path / "reg" / "m" / "versions" / "1" / "card.json"
    for bad in (b"[1, 2]", b"{", b'{"files": 3}'):
        card.write_bytes(bad)
        with pytest.raises(RegistryError, match=r"m/versions/1/card.json is not a readable card"):
            reg.card("m", 1)
    alias = tmp_path / "reg" / "m" / "aliases" / "production.json"
    alias.parent.mkdir(parents=True)
    alias.write_bytes(b'{"previous": 1}')
    with pytest.raises(RegistryError, match="is not an alias pointer"):
        reg.pointer("m")
    with pytest.raises(RegistryInputError, match="version True: expected a positive integer"):
        reg.card("m", True)


def test_alias_as_json_and_the_local_file_of_a_version(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    assert reg.alias("m") is None
    v = publish(reg, tmp_path, b"one")
    reg.move_alias("m", v, reason="t")
    found = reg.alias("m")
    assert found is not None and (found["version"], found["serial"], found["mode"]) == (
        1, 1, "promote",
    )  # fmt: skip
    assert reg.file("m", 1, "model.onnx").read_bytes() == b"one"
    with pytest.raises(RegistryError, match=r"m version 1 has no report\.html"):
        reg.file("m", 1, "report.html")
    with pytest.raises(RegistryInputError, match=r"file name '\.\./x' is not allowed"):
        reg.file("m", 1, "../x")


# --- what list and verify see --------------------------------------------------------------


def test_models_and_versions_ignore_stray_files(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    publish(reg, tmp_path, b"one")
    store = reg.store
    store.create("notes/a/b/c.txt", b"x")  # four parts, not a version
    store.create("other/versions/1/readme.txt", b"x")  # a version folder with no claim or card
    store.create("m/versions/7", b"x")  # a file where a version folder would be
    store.create("m/versions/notes.txt", b"x")
    assert reg.models() == ["m"]
    assert reg.versions("m") == [1]
    store.create("claimed/versions/1/claim.json", b"{}")
    assert reg.models() == ["claimed", "m"]


def test_problems_lists_every_file_missing_or_changed(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    report = tmp_path / "report.html"
    report.write_text("report")
    publish(reg, tmp_path, b"one", **{"report.html": report})
    root = tmp_path / "reg" / "m" / "versions" / "1"
    (root / "model.onnx").unlink()
    (root / "report.html").write_text("changed")
    problems = reg.problems("m", 1)
    assert problems[0] == "model.onnx is missing"
    assert problems[1].startswith("report.html does not match its checksum (sha256 ")
    assert len(problems) == 2


def test_states_of_claims_cards_and_aliases(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    publish(reg, tmp_path, b"one")  # v1: complete, then its card is lost (its event stays)
    publish(reg, tmp_path, b"two")  # v2: complete, aliased, then its card and events are lost
    reg.move_alias("m", 2, reason="t")
    publish(reg, tmp_path, b"three")  # v3: ok
    root = tmp_path / "reg" / "m"
    (root / "versions" / "1" / "card.json").unlink()
    (root / "versions" / "2" / "card.json").unlink()
    for event in events(reg, "publish"):
        if event["version"] == 2:
            (tmp_path / "reg" / event["key"]).unlink()
    reg.store.create("m/versions/4/claim.json", b'{"time": "2020-01-01T00:00:00+00:00"}')
    # a publish event that created nothing (same bytes as another version) is no evidence
    reg.store.create("m/versions/5/claim.json", b'{"time": "2020-01-01T00:00:00+00:00"}')
    reg.store.create("m/events/20200101T000000.000000Z-0000abcd.json",
                     json.dumps({"action": "publish", "version": 5, "created": False}).encode())  # fmt: skip
    states = {s.version: s for s in reg.states("m")}
    assert {v: s.state for v, s in states.items()} == {
        1: "damaged", 2: "damaged", 3: "ok", 4: "incomplete", 5: "incomplete",
    }  # fmt: skip
    assert states[1].problems == ("card.json is missing (its publish event exists)",)
    assert states[2].problems == ("card.json is missing (the production alias points at it)",)
    assert states[2].aliases == ("production",)
    assert states[4].claim == {"time": "2020-01-01T00:00:00+00:00"}


def test_diff_shows_what_changed_on_either_side(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    a = reg.publish("m", {"model.onnx": model_file(tmp_path, b"one")}, {
        "metrics": {"accuracy": 0.9, "size_bytes": 10, "per_class": {"0": 1.0}},
        "lineage": {"recipe": "a", "data_profile": {"x": 1}, "spec_sha256": "s"},
    }).version  # fmt: skip
    report = tmp_path / "report.html"
    report.write_text("r")
    b = reg.publish("m", {"model.onnx": model_file(tmp_path, b"two"), "report.html": report}, {
        "metrics": {"accuracy": 0.9, "size_bytes": 8, "latency_ms": 1.5, "per_class": {"0": 0.5}},
        "lineage": {"recipe": "b", "data_profile": {"x": 2}, "spec_sha256": "s", "seed": 1},
    }).version  # fmt: skip
    diff = reg.diff("m", a, b)
    assert diff["metrics"] == {"latency_ms": {"from": None, "to": 1.5},
                               "size_bytes": {"from": 10, "to": 8}}  # fmt: skip
    assert diff["lineage"] == {"recipe": {"from": "a", "to": "b"}, "seed": {"from": None, "to": 1}}
    assert set(diff["files"]) == {"model.onnx", "report.html"}
    assert diff["files"]["report.html"]["from"] is None
    assert reg.diff("m", b, a)["metrics"]["latency_ms"] == {"from": 1.5, "to": None}


def test_download_makes_the_folders_it_needs(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    publish(reg, tmp_path, b"one")
    files = reg.download("m", 1, tmp_path / "a" / "b" / "c")
    assert sorted(p.name for p in files) == ["card.json", "model.onnx"]
    assert (tmp_path / "a" / "b" / "c" / "model.onnx").read_bytes() == b"one"


# --- publish ----------------------------------------------------------------------------------


def test_publish_events_say_whether_a_version_was_created(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    publish(reg, tmp_path, b"one")
    publish(reg, tmp_path, b"two")
    assert publish(reg, tmp_path, b"one") == 1  # v2 holds other bytes: v1 is found behind it
    first, second, again = events(reg, "publish")
    assert (first["version"], first["created"], second["created"]) == (1, True, True)
    assert "skipped_damaged" not in first and "skipped_damaged" not in second
    assert (again["version"], again["created"]) == (1, False)


def test_the_newest_intact_version_with_the_same_bytes_is_returned(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    report = tmp_path / "report.html"
    report.write_text("r")
    publish(reg, tmp_path, b"one", **{"report.html": report})
    damaged = tmp_path / "reg" / "m" / "versions" / "1" / "report.html"
    damaged.write_text("changed")
    assert publish(reg, tmp_path, b"one", **{"report.html": report}) == 2  # v1 passed over
    damaged.write_text("r")  # v1 intact again: two intact versions hold these bytes
    assert publish(reg, tmp_path, b"one", **{"report.html": report}) == 2


def test_a_publish_that_fails_removes_its_files_and_keeps_its_number(tmp_path: Path) -> None:
    store = FaultyStore(tmp_path / "reg")
    reg = Registry(store)

    def fail_the_card(key: str) -> None:
        if key.endswith("/card.json"):
            raise RegistryError("the store went away")

    store.before_create = fail_the_card
    with pytest.raises(RegistryError, match="the store went away"):
        publish(reg, tmp_path, b"one")
    assert store.keys("m/versions/") == ["m/versions/1/claim.json"]  # the model was removed
    store.before_create = lambda key: None
    assert publish(reg, tmp_path, b"one") == 2


def test_a_card_that_landed_although_its_write_failed_completes_the_version(tmp_path: Path) -> None:
    store = FaultyStore(tmp_path / "reg")
    reg = Registry(store)
    original = FileStore._create

    def landed_then_failed(self: FileStore, key: str, data: bytes | Path) -> bool:
        result = original(self, key, data)
        if key.endswith("/card.json"):
            raise RegistryError("the reply was lost")
        return result

    store._create = landed_then_failed.__get__(store)  # type: ignore[method-assign]
    assert publish(reg, tmp_path, b"one") == 1
    assert reg.versions("m") == [1] and reg.problems("m", 1) == []


@pytest.mark.parametrize("how", ["claim removed", "tombstone written"])
def test_a_publish_whose_claim_was_collected_meanwhile_publishes_nothing(
    tmp_path: Path, how: str
) -> None:
    store = FaultyStore(tmp_path / "reg")
    reg = Registry(store)

    def gc_meanwhile(key: str) -> None:
        if key.endswith("/model.onnx"):
            if how == "claim removed":
                store.delete("m/versions/1/claim.json")
            else:
                FileStore._create(store, "m/versions/1/abandoned.json", b"{}")

    store.before_create = gc_meanwhile
    with pytest.raises(RegistryError, match="its claim was removed while it was being written"):
        publish(reg, tmp_path, b"one")
    assert reg.versions("m") == []


# --- the alias ---------------------------------------------------------------------------------


def test_a_rollback_whose_reply_was_lost_is_recognised_as_ours(tmp_path: Path) -> None:
    store = FaultyStore(tmp_path / "reg")
    reg = Registry(store)
    for content in (b"one", b"two"):
        reg.move_alias("m", publish(reg, tmp_path, content), reason="t")
    store.lose_swaps = 1
    pointer = reg.rollback("m", reason="bad release")
    assert (pointer.version, pointer.withdrawn) == (1, (2,))
    assert [e["version"] for e in events(reg, "rollback")] == [1]


def test_each_rollback_event_names_only_what_it_withdrew(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    for content in (b"one", b"two", b"three"):
        reg.move_alias("m", publish(reg, tmp_path, content), reason="t")
    reg.rollback("m", reason="r")  # 3 -> 2
    seen = reg.pointer("m")
    assert seen is not None
    reg.move_alias("m", publish(reg, tmp_path, b"four"), seen_serial=seen.serial, reason="t")
    reg.rollback("m", reason="r")  # 4 -> 2
    first, second = events(reg, "rollback")
    assert (first["withdrawn"], second["withdrawn"]) == ([3], [4])
    pointer = reg.pointer("m")
    assert pointer is not None and pointer.withdrawn == (3, 4)


def test_a_rollback_to_a_damaged_version_is_refused_with_the_intact_ones_named(
    tmp_path: Path,
) -> None:
    reg = FileRegistry(tmp_path / "reg")
    for content in (b"one", b"two", b"three"):
        reg.move_alias("m", publish(reg, tmp_path, content), reason="t")
    (tmp_path / "reg" / "m" / "versions" / "2" / "model.onnx").unlink()
    with pytest.raises(RegistryError, match=r"version 2: it is damaged \(model.onnx is missing\); "
                                            r"roll back to an earlier one with --to \(\[1\]\)$"):  # fmt: skip
        reg.rollback("m", reason="r")
    (tmp_path / "reg" / "m" / "versions" / "1" / "model.onnx").unlink()
    with pytest.raises(RegistryError, match=r"version 1: it is damaged \(model.onnx is missing\)$"):
        reg.rollback("m", reason="r", to=1)


def test_giving_up_says_how_many_attempts_it_made(tmp_path: Path) -> None:
    from components.registry import AliasConflict

    store = FaultyStore(tmp_path / "reg")
    reg = Registry(store)
    v = publish(reg, tmp_path, b"one")
    original = FileStore.swap

    def always_lost(self: FileStore, key: str, data: bytes, etag: str | None) -> bool:
        return False

    store.swap = always_lost.__get__(store)  # type: ignore[method-assign]
    with pytest.raises(AliasConflict, match=r"kept moving for 0 s \((\d+) attempts\); version 1 "
                                            r"was published but not aliased") as caught:  # fmt: skip
        reg.move_alias("m", v, reason="t", deadline_s=0.0)
    (give_up,) = events(reg, "alias_give_up")
    attempts = int(re.search(r"\((\d+) attempts", str(caught.value)).group(1))  # type: ignore[union-attr]
    # at least one attempt (more on a clock too coarse to see the first one take time)
    assert give_up["attempts"] == attempts >= 1
    assert (give_up["version"], give_up["move"]) == (1, "move_alias")
    store.swap = original.__get__(store)  # type: ignore[method-assign]


def test_a_pointer_whose_event_has_a_bad_key_is_not_replaced(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    reg.move_alias("m", publish(reg, tmp_path, b"one"), reason="t")
    v2 = publish(reg, tmp_path, b"two")
    path = tmp_path / "reg" / "m" / "aliases" / "production.json"
    for key in ("evil.json", "other/events/x.json"):
        raw = json.loads(path.read_text())
        raw["event"]["key"] = key
        path.write_text(json.dumps(raw))
        with pytest.raises(RegistryError, match="a pointer carries an event with a bad key"):
            reg.move_alias("m", v2, reason="t")


# --- gc ----------------------------------------------------------------------------------------


def claim(reg: Registry, version: int, time: str | None) -> None:
    body = {} if time is None else {"time": time}
    reg.store.create(f"m/versions/{version}/claim.json", json.dumps(body).encode())
    reg.store.create(f"m/versions/{version}/model.onnx", b"half")


def test_gc_goes_on_past_every_version_it_leaves(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    now = datetime(2030, 1, 1, tzinfo=UTC)
    old = (now - timedelta(days=30)).isoformat()
    claim(reg, 1, old)
    assert reg.gc("m", timedelta(days=7), now=now) == [1]  # v1 abandoned now
    claim(reg, 2, None)  # a claim without a time
    claim(reg, 3, (now - timedelta(hours=2)).isoformat())  # too young
    reg.store.create("m/versions/4/model.onnx", b"half")  # no claim at all
    claim(reg, 5, old)
    assert reg.gc("m", timedelta(days=7), now=now) == [5]


def test_gc_collects_a_claim_exactly_as_old_as_the_limit(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    now = datetime(2030, 1, 1, tzinfo=UTC)
    claim(reg, 1, (now - timedelta(days=7)).isoformat())
    claim(reg, 2, (now - timedelta(days=7) + timedelta(microseconds=1)).isoformat())
    assert reg.gc("m", timedelta(days=7), now=now) == [1]


def test_gc_never_collects_a_version_that_was_complete(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    publish(reg, tmp_path, b"one")
    (tmp_path / "reg" / "m" / "versions" / "1" / "card.json").unlink()  # damaged, not incomplete
    assert reg.gc("m", timedelta(days=7), now=datetime(2100, 1, 1, tzinfo=UTC)) == []
    assert (tmp_path / "reg" / "m" / "versions" / "1" / "model.onnx").is_file()


def test_gc_that_lost_a_race_for_a_tombstone_goes_on(tmp_path: Path) -> None:
    store = FaultyStore(tmp_path / "reg")
    reg = Registry(store)
    now = datetime(2030, 1, 1, tzinfo=UTC)
    for v in (1, 2):
        claim(reg, v, (now - timedelta(days=30)).isoformat())

    def rival_gc(key: str) -> None:
        if key == "m/versions/1/abandoned.json":
            FileStore._create(store, key, b'{"by": "another gc"}')

    store.before_create = rival_gc
    assert reg.gc("m", timedelta(days=7), now=now) == [2]


def test_states_go_on_past_an_unreadable_card(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    publish(reg, tmp_path, b"one")
    publish(reg, tmp_path, b"two")
    (tmp_path / "reg" / "m" / "versions" / "1" / "card.json").write_bytes(b"{")
    assert [(s.version, s.state) for s in reg.states("m")] == [(1, "damaged"), (2, "ok")]


def test_a_clean_publish_warns_of_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reg = FileRegistry(tmp_path / "reg")
    with caplog.at_level("WARNING", logger="components.registry"):
        publish(reg, tmp_path, b"one")
        reg.move_alias("m", 1, reason="t")
    assert caplog.records == []


def test_a_failed_publish_on_a_store_that_cannot_be_read_claims_nothing(tmp_path: Path) -> None:
    store = FaultyStore(tmp_path / "reg")
    reg = Registry(store)
    down = {"now": False}
    original = FileStore.read

    def read(self: FileStore, key: str) -> tuple[bytes, str] | None:
        if down["now"]:
            raise RegistryError("the store went away")
        return original(self, key)

    def fail_the_card(key: str) -> None:
        if key.endswith("/card.json"):
            down["now"] = True
            raise RegistryError("the store went away")

    store.read = read.__get__(store)  # type: ignore[method-assign]
    store.before_create = fail_the_card
    with pytest.raises(RegistryError, match="the store went away"):
        publish(reg, tmp_path, b"one")
    down["now"] = False
    assert reg.versions("m") == []
    assert (tmp_path / "reg" / "m" / "versions" / "1" / "model.onnx").is_file()  # nothing deleted
