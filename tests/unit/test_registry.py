"""The registry protocol on the file store. The same protocol on S3 is tested against a real
S3 HTTP API (and a proxy that loses its replies) in tests/integration/test_s3_registry.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from components.cli import main
from components.errors import AliasRefused, RegistryError, RegistryInputError
from components.registry import AliasConflict, FileRegistry, Pointer, Registry
from components.stores import FileStore


def artifact(tmp_path: Path, content: bytes, name: str = "model.onnx") -> Path:
    path = tmp_path / f"{content.hex()[:8]}-{name}"
    path.write_bytes(content)
    return path


def promoted(reg: Registry, tmp_path: Path, *contents: bytes) -> list[int]:
    """Publish each content and move production to it, in order."""
    out = []
    for content in contents:
        v = reg.publish("m", {"model.onnx": artifact(tmp_path, content)}, {}).version
        reg.move_alias("m", v, seen_serial=_serial(reg), reason="test")
        out.append(v)
    return out


def _serial(reg: Registry) -> int:
    pointer = reg.pointer("m")
    return 0 if pointer is None else pointer.serial


def actions(reg: Registry) -> list[str]:
    return [e["action"] for e in sorted(reg.events("m"), key=lambda e: e["time"])]


def test_publish_writes_an_immutable_version_with_checksums(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    pub = reg.publish("m", {"model.onnx": artifact(tmp_path, b"one")}, {"note": "x"})
    assert (pub.version, pub.created) == (1, True)
    card = reg.card("m", 1)
    assert card["note"] == "x" and set(card["files"]) == {"model.onnx"}
    assert card["event"]["action"] == "publish" and card["event"]["version"] == 1
    reg.verify("m", 1)
    assert sorted(p.name for p in (tmp_path / "reg" / "m" / "versions" / "1").iterdir()) == [
        "card.json", "claim.json", "model.onnx"
    ]  # fmt: skip
    assert actions(reg) == ["publish"]


def test_same_content_twice_is_one_version(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    first = reg.publish("m", {"model.onnx": artifact(tmp_path, b"one")}, {})
    again = reg.publish("m", {"model.onnx": artifact(tmp_path, b"one", "copy.onnx")}, {})
    other = reg.publish("m", {"model.onnx": artifact(tmp_path, b"two")}, {})
    assert (again.version, again.created) == (first.version, False)
    assert other.version == 2 and reg.versions("m") == [1, 2]


def test_a_damaged_version_is_never_returned_for_the_same_bytes(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    reg.publish("m", {"model.onnx": artifact(tmp_path, b"one")}, {})
    (tmp_path / "reg/m/versions/1/model.onnx").unlink()
    again = reg.publish("m", {"model.onnx": artifact(tmp_path, b"one")}, {})
    assert (again.version, again.created) == (2, True)
    reg.verify("m", 2)
    publish = reg.card("m", 2)["event"]
    assert publish["skipped_damaged"] == ["version 1 (model.onnx is missing)"]


def test_a_version_without_its_card_is_invisible_and_its_number_never_reused(
    tmp_path: Path,
) -> None:
    reg = FileRegistry(tmp_path / "reg")
    reg.publish("m", {"model.onnx": artifact(tmp_path, b"one")}, {})
    # a writer that died after claiming version 2 and uploading its model
    number, _ = reg._claim("m", run_id="dead")
    assert number == 2
    reg.store.create("m/versions/2/model.onnx", artifact(tmp_path, b"half"))
    assert reg.versions("m") == [1]
    assert reg.publish("m", {"model.onnx": artifact(tmp_path, b"three")}, {}).version == 3
    assert reg.versions("m") == [1, 3]
    assert [s.state for s in reg.states("m")] == ["ok", "incomplete", "ok"]


class LostReplies(FileStore):
    """Every create lands, but its first reply is lost: the client retries, and the retry is
    refused because the key exists (what botocore does when a PUT's response never arrives)."""

    def _create(self, key: str, data: bytes | Path) -> bool:
        super()._create(key, data)
        return False


def test_a_retried_write_that_finds_its_own_bytes_is_a_success(tmp_path: Path) -> None:
    reg = Registry(LostReplies(tmp_path / "reg"))
    pub = reg.publish("m", {"model.onnx": artifact(tmp_path, b"one"),
                            "report.html": artifact(tmp_path, b"<html>", "r.html")}, {})  # fmt: skip
    assert (pub.version, pub.created) == (1, True)
    reg.verify("m", 1)
    assert sorted(p.name for p in (tmp_path / "reg/m/versions/1").iterdir()) == [
        "card.json", "claim.json", "model.onnx", "report.html"
    ]  # fmt: skip
    assert reg.move_alias("m", 1, reason="x").version == 1
    assert actions(reg) == ["publish", "move_alias"]


def test_the_alias_only_moves_forward(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    for content in (b"one", b"two", b"three"):
        reg.publish("m", {"model.onnx": artifact(tmp_path, content)}, {})
    assert reg.move_alias("m", 1, reason="first").version == 1
    assert reg.move_alias("m", 3, reason="newest").version == 3
    with pytest.raises(AliasRefused, match="production is at version 3, newer than 2"):
        reg.move_alias("m", 2, reason="a slow promoter")
    assert reg.pointer("m") is not None and reg.pointer("m").version == 3  # type: ignore[union-attr]
    assert reg.move_alias("m", 3, reason="again").serial == 2  # already there: nothing moves
    refused = [e for e in reg.events("m") if e["action"] == "alias_refused"]
    assert len(refused) == 1 and refused[0]["version"] == 2 and refused[0]["current"] == 3


def test_rollback_goes_back_withdraws_and_never_forward(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    promoted(reg, tmp_path, b"one", b"two", b"three")
    back = reg.rollback("m", reason="v3 misbehaves in production")
    assert (back.version, back.previous, back.withdrawn, back.history) == (2, 3, (3,), (1, 2))
    event = sorted(reg.events("m"), key=lambda e: e["time"])[-1]
    assert event["action"] == "rollback" and event["reason"] == "v3 misbehaves in production"
    assert event["withdrawn"] == [3] and event["user"]
    assert reg.rollback("m", reason="v2 too").version == 1  # further back, never forward
    with pytest.raises(RegistryInputError, match="the first it held; nothing to roll back to"):
        reg.rollback("m", reason="x")
    with pytest.raises(RegistryInputError, match="no 'staging' alias"):
        reg.rollback("m", alias="staging", reason="x")
    # a withdrawn version is never aliased by a promotion again
    with pytest.raises(AliasRefused, match="version 3 was withdrawn by a rollback"):
        reg.move_alias("m", 3, seen_serial=_serial(reg), reason="retry")


def test_rollback_to_an_earlier_version(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    promoted(reg, tmp_path, b"one", b"two", b"three")
    with pytest.raises(RegistryInputError, match=r"held only versions \[1, 2\]"):
        reg.rollback("m", to=3, reason="x")
    back = reg.rollback("m", to=1, reason="both later ones are bad")
    assert (back.version, back.withdrawn) == (1, (2, 3))


def test_a_promotion_that_looked_before_a_rollback_is_refused(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    promoted(reg, tmp_path, b"one", b"two")
    seen = _serial(reg)  # a run's champion step scores v2 here
    v3 = reg.publish("m", {"model.onnx": artifact(tmp_path, b"three")}, {}).version
    reg.rollback("m", reason="v2 is bad")  # meanwhile, an operator rolls back
    with pytest.raises(
        AliasRefused,
        match=r"rolled back \(pointer serial 3\) after this run looked at it \(serial 2\)",
    ):
        reg.move_alias("m", v3, seen_serial=seen, reason="judged against v2")
    # a run that looks after the rollback is judged against v1, and goes through
    assert (
        reg.move_alias("m", v3, seen_serial=_serial(reg), reason="judged against v1").version == 3
    )


def test_nothing_moves_over_a_damaged_version(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    promoted(reg, tmp_path, b"one")
    reg.publish("m", {"model.onnx": artifact(tmp_path, b"two")}, {})
    (tmp_path / "reg/m/versions/2/model.onnx").write_bytes(b"evil")
    with pytest.raises(RegistryError, match=r"version 2 is damaged: model\.onnx does not match"):
        reg.move_alias("m", 2, reason="x")
    reg.publish("m", {"model.onnx": artifact(tmp_path, b"three")}, {})
    (tmp_path / "reg/m/versions/1/model.onnx").write_bytes(b"onE")  # production's bytes flipped
    with pytest.raises(RegistryError, match="points at version 1, which is damaged"):
        reg.move_alias("m", 3, reason="x")
    assert reg.pointer("m").version == 1  # type: ignore[union-attr]


def test_a_failed_download_leaves_the_folder_as_it_was(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    reg.publish("m", {"model.onnx": artifact(tmp_path, b"one")}, {})
    out = tmp_path / "out"
    reg.download("m", 1, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (tmp_path / "reg/m/versions/1/model.onnx").write_bytes(b"evil")
    with pytest.raises(RegistryError, match=r"downloaded model\.onnx does not match its checksum"):
        reg.download("m", 1, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_states_mark_damaged_versions(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    promoted(reg, tmp_path, b"one", b"two")
    reg.publish("m", {"model.onnx": artifact(tmp_path, b"three")}, {})
    (tmp_path / "reg/m/versions/2/model.onnx").write_bytes(b"twO")  # production, one byte
    (tmp_path / "reg/m/versions/3/model.onnx").unlink()
    states = {s.version: s for s in reg.states("m")}
    assert states[1].state == "ok"
    assert states[2].state == "damaged" and "does not match its checksum" in states[2].problems[0]
    assert states[3].problems == ("model.onnx is missing",)
    (tmp_path / "reg/m/versions/2/card.json").unlink()
    states = {s.version: s for s in reg.states("m")}
    assert states[2].state == "damaged" and states[2].aliases == ("production",)
    assert "card.json is missing (the production alias points at it)" in states[2].problems


def test_events_a_killed_writer_owed_are_written_by_the_next_write(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    promoted(reg, tmp_path, b"one")
    events = tmp_path / "reg/m/events"
    for path in events.iterdir():  # as if killed after the card and after the swap
        path.unlink()
    assert reg.check("m").repaired and sorted(actions(reg)) == ["move_alias", "publish"]
    for path in events.iterdir():
        path.unlink()
    promoted(reg, tmp_path, b"two")  # the next publish and move repair on their way
    assert sorted(actions(reg)) == ["move_alias", "move_alias", "publish", "publish"]
    assert reg.check("m").repaired == []


def test_gc_removes_only_claims_that_never_completed(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    promoted(reg, tmp_path, b"one")
    dead, _ = reg._claim("m", run_id="dead")
    reg.store.create(f"m/versions/{dead}/model.onnx", artifact(tmp_path, b"half"))
    young, _ = reg._claim("m", run_id="still writing")
    reg.publish("m", {"model.onnx": artifact(tmp_path, b"two")}, {})
    later = datetime.now(UTC) + timedelta(hours=2)
    assert reg.gc("m", timedelta(days=1)) == []
    claim = tmp_path / f"reg/m/versions/{young}/claim.json"
    data = json.loads(claim.read_text())
    claim.write_text(json.dumps({**data, "time": (later - timedelta(minutes=5)).isoformat()}))
    assert reg.gc("m", timedelta(hours=1), now=later) == [dead]
    assert sorted(p.name for p in (tmp_path / f"reg/m/versions/{dead}").iterdir()) == [
        "abandoned.json"
    ]
    assert [s.state for s in reg.states("m")] == ["ok", "abandoned", "incomplete", "ok"]
    reg.verify("m", 1)
    reg.verify("m", 4)
    assert reg.publish("m", {"model.onnx": artifact(tmp_path, b"five")}, {}).version == 5


def test_download_and_diff(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    reg.publish("m", {"model.onnx": artifact(tmp_path, b"one")}, {"metrics": {"accuracy": 0.9}})
    reg.publish("m", {"model.onnx": artifact(tmp_path, b"two")}, {"metrics": {"accuracy": 0.95}})
    paths = reg.download("m", 2, tmp_path / "out")
    assert {p.name for p in paths} == {"model.onnx", "card.json"} and (
        tmp_path / "out" / "model.onnx"
    ).read_bytes() == b"two"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["card.json", "model.onnx"]
    diff = reg.diff("m", 1, 2)
    assert (
        diff["metrics"] == {"accuracy": {"from": 0.9, "to": 0.95}} and "model.onnx" in diff["files"]
    )


def test_concurrent_publishers_get_distinct_complete_versions(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    files = [artifact(tmp_path, bytes([i]) * 1000) for i in range(8)]
    results: list[int] = []
    threads = [
        threading.Thread(
            target=lambda f=f: results.append(reg.publish("m", {"model.onnx": f}, {}).version)
        )
        for f in files
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 9))
    for v in reg.versions("m"):
        reg.verify("m", v)


@pytest.mark.parametrize("name", ["../etc", "a/b", "UPPER", "", "x" * 65])
def test_model_names_cannot_escape_the_root(tmp_path: Path, name: str) -> None:
    reg = FileRegistry(tmp_path / "reg")
    with pytest.raises(RegistryInputError, match="model name"):
        reg.publish(name, {"model.onnx": artifact(tmp_path, b"one")}, {})
    assert not (tmp_path / "reg").exists() or not any((tmp_path / "reg").iterdir())


@pytest.mark.parametrize("name", ["../x", "card.json", "claim.json", ".hidden", "a/b"])
def test_file_names_are_checked(tmp_path: Path, name: str) -> None:
    reg = FileRegistry(tmp_path / "reg")
    with pytest.raises(RegistryInputError, match="is not allowed"):
        reg.publish(
            "m", {"model.onnx": artifact(tmp_path, b"one"), name: artifact(tmp_path, b"x")}, {}
        )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["show", "Bad/Name"], "model name 'Bad/Name'"),
        (["show", "m", "--version", "0"], "version 0: expected a positive integer"),
        (["show", "m", "--version", "7"], "m version 7 not found"),
        (["show", "m", "--alias", "Prod!"], "alias 'Prod!'"),
        (["rollback", "m", "--reason", "x"], "nothing to roll back to"),
        (["gc", "--older-than", "soon"], "--older-than 'soon': expected a duration"),
    ],
)
def test_bad_names_and_versions_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    reg = FileRegistry(tmp_path / "reg")
    promoted(reg, tmp_path, b"one")
    code = main(["registry", *argv, "--registry", str(tmp_path / "reg")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_the_cli_lists_verifies_and_collects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = FileRegistry(tmp_path / "reg")
    promoted(reg, tmp_path, b"one", b"two")
    where = ["--registry", str(tmp_path / "reg")]
    assert main(["registry", "verify", *where]) == 0
    assert "m\tv2 production\tok (re-hashed)" in capsys.readouterr().out
    (tmp_path / "reg/m/versions/2/model.onnx").write_bytes(b"twO")
    assert main(["registry", "list", *where]) == 1
    out, err = capsys.readouterr()
    assert "v2 production" in out and "DAMAGED: model.onnx does not match its checksum" in out
    assert "1 damaged version" in err
    assert main(["registry", "show", "m", *where]) == 1  # production, re-hashed
    assert main(["registry", "rollback", "m", "--reason", "v2 is damaged", *where]) == 0
    assert "version 2 -> 1 (withdrawn: v2)" in capsys.readouterr().out
    # no alias points at v2 now: list checks only that its files are there, verify re-hashes
    assert main(["registry", "list", *where]) == 0
    assert "m\tv2 (withdrawn)\t" in capsys.readouterr().out
    assert main(["registry", "verify", *where]) == 1
    assert "m\tv2\tDAMAGED: model.onnx does not match" in capsys.readouterr().out
    assert main(["registry", "gc", "--older-than", "7d", *where]) == 0
    assert "removed 0 leftover(s)" in capsys.readouterr().out


class Competitor(FileStore):
    """A store where, before each of our first ``races`` swaps of an alias, a rival moves it
    (a race we lose); with ``lost_reply``, our swap lands, a rival moves the alias on, and our
    reply is lost."""

    def __init__(self, root: Path, races: int = 0, lost_reply: bool = False) -> None:
        super().__init__(root)
        self.races, self.lost_reply = races, lost_reply
        self.rival: Callable[[], None] | None = None

    def swap(self, key: str, data: bytes, expected_etag: str | None) -> bool:
        rival, self.rival = self.rival, None  # the rival's own swaps go straight through
        try:
            if rival is not None and self.lost_reply:
                self.lost_reply = False
                assert super().swap(key, data, expected_etag)
                rival()
                return False
            if rival is not None and self.races > 0:
                self.races -= 1
                rival()
            return super().swap(key, data, expected_etag)
        finally:
            self.rival = rival


def with_rival(tmp_path: Path, rivals: int, **kwargs: Any) -> tuple[Registry, int]:
    """Production at v1, ``rivals`` versions published after it, then ours: each rival move
    takes production one version further, never past ours."""
    store = Competitor(tmp_path / "reg", **kwargs)
    rival = FileRegistry(tmp_path / "reg")
    promoted(rival, tmp_path, b"one")
    for i in range(rivals):
        rival.publish("m", {"model.onnx": artifact(tmp_path, bytes([100 + i]))}, {})
    reg = Registry(store)
    mine = reg.publish("m", {"model.onnx": artifact(tmp_path, b"mine")}, {}).version

    def move_on() -> None:
        at = rival.pointer("m").version  # type: ignore[union-attr]
        rival.move_alias("m", at + 1, seen_serial=_serial(rival), reason="the rival")

    store.rival = move_on
    return reg, mine


def test_lost_races_are_re_decided_until_the_move_lands(tmp_path: Path) -> None:
    reg, mine = with_rival(tmp_path, rivals=3, races=3)
    pointer = reg.move_alias("m", mine, reason="me")
    assert (pointer.version, pointer.previous, pointer.serial) == (mine, 4, 5)
    assert pointer.event is not None and pointer.event["attempts"] == 4
    assert actions(reg).count("move_alias") == 5


@pytest.mark.timing  # 40 rival moves must outlast a 0.2 s deadline
def test_contention_past_the_deadline_gives_up_and_says_so(tmp_path: Path) -> None:
    reg, mine = with_rival(tmp_path, rivals=40, races=40)
    with pytest.raises(AliasConflict, match=rf"kept moving .* version {mine} was published"):
        reg.move_alias("m", mine, reason="me", deadline_s=0.2)
    gave_up = [e for e in reg.events("m") if e["action"] == "alias_give_up"]
    assert len(gave_up) == 1 and gave_up[0]["version"] == mine and gave_up[0]["attempts"] > 1


def test_a_landed_swap_whose_reply_was_lost_is_ours_though_a_rival_moved_on(
    tmp_path: Path,
) -> None:
    reg, mine = with_rival(tmp_path, rivals=0, lost_reply=True)
    store = reg.store
    assert isinstance(store, Competitor)
    rival = FileRegistry(tmp_path / "reg")
    newer = rival.publish("m", {"model.onnx": artifact(tmp_path, b"newer")}, {}).version

    def move_past() -> None:
        rival.move_alias("m", newer, seen_serial=_serial(rival), reason="the rival")

    store.rival = move_past
    pointer = reg.move_alias("m", mine, reason="me")
    assert pointer.version == mine and reg.pointer("m").version == newer  # type: ignore[union-attr]
    assert "alias_refused" not in actions(reg)  # it landed: not a refusal
    moves = sorted(e["version"] for e in reg.events("m") if e["action"] == "move_alias")
    assert moves == [1, mine, newer]  # and its event was written by the rival, before its swap


def test_a_pointer_from_before_the_history_was_kept(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    promoted(reg, tmp_path, b"one", b"two")
    (tmp_path / "reg/m/aliases/production.json").write_text('{"version": 1, "previous": 2}')
    pointer = reg.pointer("m")  # an old rollback from 2 to 1
    assert pointer is not None and (pointer.history, pointer.withdrawn) == ((1,), (2,))
    with pytest.raises(RegistryInputError, match="nothing to roll back to"):
        reg.rollback("m", reason="never forward")
    with pytest.raises(AliasRefused, match="withdrawn"):
        reg.move_alias("m", 2, reason="x")


def test_a_rollback_someone_else_made_first_changes_nothing(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    promoted(reg, tmp_path, b"one", b"two", b"three")

    class Late(FileRegistry):
        def pointer(self, model: str, alias: str = "production") -> Pointer | None:
            found = super().pointer(model, alias)
            if not getattr(self, "raced", False):  # read v3, then the other operator acts
                self.raced = True
                reg.rollback("m", reason="the other operator")
            return found

    with pytest.raises(RegistryError, match="version 3 was rolled back by someone else"):
        Late(tmp_path / "reg").rollback("m", to=1, reason="mine")
    assert reg.pointer("m").version == 2  # type: ignore[union-attr]
    assert actions(reg).count("rollback") == 1


def test_gc_refuses_young_claims_and_finishes_an_interrupted_gc(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    promoted(reg, tmp_path, b"one")
    with pytest.raises(RegistryInputError, match="only claims older than 1:00:00"):
        reg.gc("m", timedelta(minutes=5))
    dead, _ = reg._claim("m", run_id="dead")
    reg.store.create(f"m/versions/{dead}/model.onnx", artifact(tmp_path, b"half"))
    reg.store.create(f"m/versions/{dead}/abandoned.json", b"{}")  # gc killed right after this
    incoming = tmp_path / "reg/m/versions/1/.incoming-x"
    incoming.write_bytes(b"a killed writer's temporary file")
    later = datetime.now(UTC) + timedelta(hours=3)
    assert reg.gc("m", timedelta(hours=1), now=later) == []  # already tombstoned: not counted
    assert sorted(p.name for p in (tmp_path / f"reg/m/versions/{dead}").iterdir()) == [
        "abandoned.json"
    ]
    assert not incoming.exists()


def test_a_card_written_after_gc_shows_as_damaged_not_abandoned(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    number, _ = reg._claim("m", run_id="slow")
    reg.store.create(f"m/versions/{number}/abandoned.json", b"{}")  # gc took it meanwhile
    reg.store.create(f"m/versions/{number}/card.json", b'{"files": {"model.onnx": "00"}}')
    (state,) = reg.states("m")
    assert state.state == "damaged" and state.problems == ("model.onnx is missing",)


class Unreachable(FileStore):
    def digest(self, key: str) -> str:
        raise RegistryError("cannot reach the store")


def test_a_store_that_cannot_be_reached_is_not_called_damage(tmp_path: Path) -> None:
    FileRegistry(tmp_path / "reg").publish("m", {"model.onnx": artifact(tmp_path, b"one")}, {})
    with pytest.raises(RegistryError, match="cannot reach the store"):
        Registry(Unreachable(tmp_path / "reg")).problems("m", 1)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["list", "nosuch"], "no model 'nosuch' in file://"),
        (["verify", "m", "--version", "9"], "m has no version 9"),
        (["gc", "--older-than", "inf"], "--older-than 'inf': expected a duration"),
        (["gc", "--older-than=-3d"], "--older-than '-3d': expected a duration"),
        (["download", "m", "a-file"], "is a file; give a folder"),
    ],
)
def test_more_bad_arguments_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("x")
    promoted(FileRegistry(tmp_path / "reg"), tmp_path, b"one")
    code = main(["registry", *argv, "--registry", str(tmp_path / "reg")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err


def test_production_without_its_card_is_damage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    promoted(FileRegistry(tmp_path / "reg"), tmp_path, b"one")
    (tmp_path / "reg/m/versions/1/card.json").unlink()
    for cmd in (["show", "m"], ["download", "m", str(tmp_path / "out")]):
        assert main(["registry", *cmd, "--registry", str(tmp_path / "reg")]) == 1
        assert "points at version 1, whose card.json is missing" in capsys.readouterr().err
