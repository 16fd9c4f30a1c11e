"""The registry under what production does to it: separate OS processes racing to promote while
an operator rolls back, writers killed with SIGKILL at every write, and replies lost, connections
reset and requests delayed by a proxy in front of a real S3 API (moto's server), all on 127.0.0.1.

The invariants checked after each: every attempt was aliased or recorded as refused; every
version is complete and intact or visibly incomplete, none lost; the alias policy held (forward
only, back only by rollback, nothing a rollback withdrew, nothing judged before it); one event per
publish and one per pointer write.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from faultproxy import FaultProxy

from components.registry import Registry, store_registry

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def proxy(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of moto; this process and its children talk to it."""
    with FaultProxy(s3_endpoint) as fp:
        monkeypatch.setenv("AWS_ENDPOINT_URL", fp.endpoint)
        yield fp


def fresh_uri(kind: str, tmp_path: Path) -> str:
    if kind == "disk":
        return f"file://{tmp_path / 'registry'}"
    return f"s3://models/faults-{uuid.uuid4().hex[:8]}"


def artifact(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / f"{uuid.uuid4().hex[:8]}.onnx"
    path.write_bytes(content)
    return path


def audit(reg: Registry) -> dict[str, Any]:
    """Check the invariants every state must hold; return what the log says happened."""
    check = reg.check("m")
    assert not check.damaged, [(s.version, s.problems) for s in check.damaged]
    complete = reg.versions("m")
    events = reg.events("m")
    published = Counter(e["version"] for e in events if e["action"] == "publish" and e["created"])
    assert sorted(published) == complete and set(published.values()) <= {1}, published
    moves = sorted((e for e in events if e["action"] in ("move_alias", "rollback")),
                   key=lambda e: e["serial"])  # fmt: skip
    pointer = reg.pointer("m")
    assert [e["serial"] for e in moves] == list(range(1, (pointer.serial if pointer else 0) + 1))
    at: int | None = None
    withdrawn: set[int] = set()
    rolled_back_at = 0
    for e in moves:  # replay the log: the alias policy held at every write
        if e["action"] == "move_alias":
            assert at is None or e["version"] > at, e
            assert e["version"] not in withdrawn and e["seen_serial"] >= rolled_back_at, e
        else:
            assert at is not None and e["version"] < at, e
            withdrawn |= set(e["withdrawn"])
            rolled_back_at = e["serial"]
        assert e["previous"] == at
        at = e["version"]
    assert at == (pointer.version if pointer else None)
    return {"complete": complete, "moves": moves, "events": events, "check": check}


# --- lost replies, resets, delays ------------------------------------------------------------


def promote(reg: Registry, path: Path, run_id: str) -> int:
    pointer = reg.pointer("m")
    version = reg.publish("m", {"model.onnx": path, "report.html": path}, {}, run_id=run_id).version
    reg.move_alias("m", version, seen_serial=pointer.serial if pointer else 0, reason="test",
                   run_id=run_id)  # fmt: skip
    return version


def nth_put(fate: str, start: int, n: int) -> Callable[[str, str, int], str | float]:
    """A plan: the n-th PUT from request ``start`` on meets ``fate``."""
    counter = itertools.count()

    def plan(method: str, path: str, i: int) -> str | float:
        return fate if method == "PUT" and i >= start and next(counter) == n else "pass"

    return plan


def puts(proxy: FaultProxy, since: int) -> list[str]:
    return [p for m, p, _ in proxy.log[since:] if m == "PUT"]


@pytest.mark.parametrize("fate", ["drop", "reset"])
def test_a_lost_reply_at_every_write_loses_nothing(
    proxy: FaultProxy, tmp_path: Path, fate: str
) -> None:
    reg = store_registry(fresh_uri("s3", tmp_path))
    promote(reg, artifact(tmp_path, b"first"), "setup")
    start = len(proxy.log)
    promote(reg, artifact(tmp_path, b"second"), "clean")
    writes = len(puts(proxy, start))
    # claim, model, report, card, publish event, swap, move event
    assert writes == 7, puts(proxy, start)
    for n in range(writes):  # the n-th write of a promotion meets its fate, for every n
        reg = store_registry(fresh_uri("s3", tmp_path))
        promote(reg, artifact(tmp_path, b"first"), "setup")
        start = len(proxy.log)
        proxy.plan = nth_put(fate, start, n)
        version = promote(reg, artifact(tmp_path, b"second" * 100), "faulted")
        proxy.plan = lambda m, p, i: "pass"
        assert puts(proxy, start)[n] == puts(proxy, start)[n + 1]  # hit, and retried
        state = audit(reg)
        assert version == 2 and state["complete"] == [1, 2] and not state["check"].repaired, n
        assert reg.pointer("m").version == 2  # type: ignore[union-attr]
        out = tmp_path / f"out-{n}"
        reg.download("m", 2, out)
        assert (out / "model.onnx").read_bytes() == b"second" * 100


def test_a_flaky_network_is_waited_out(proxy: FaultProxy, tmp_path: Path) -> None:
    rng = random.Random(7)

    def flaky(m: str, p: str, i: int) -> str | float:
        fates: list[str | float] = (
            ["reset", "drop", 0.1, "pass", "pass", "pass"] if m == "PUT" else [0.2, 0.05, "pass"]
        )
        return rng.choice(fates)

    proxy.plan = flaky
    reg = store_registry(fresh_uri("s3", tmp_path))
    for i in range(3):
        promote(reg, artifact(tmp_path, bytes([i]) * 2000), f"run-{i}")
    proxy.plan = lambda m, p, i: "pass"
    assert proxy.fates("drop") and proxy.fates("reset")
    assert audit(reg)["complete"] == [1, 2, 3]


# --- SIGKILL at every write -------------------------------------------------------------------

KILLED = textwrap.dedent("""
    import os, signal, sys
    from datetime import UTC, datetime, timedelta
    from pathlib import Path
    from components.registry import store_registry
    reg = store_registry(sys.argv[1])
    op, kill_after, count = sys.argv[2], int(sys.argv[4]), [0]

    def counted(fn):
        def write(*args, **kwargs):
            out = fn(*args, **kwargs)
            count[0] += 1
            if count[0] == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        return write

    for name in ("_create", "swap", "delete"):
        setattr(reg.store, name, counted(getattr(reg.store, name)))
    if op == "promote":
        pointer = reg.pointer("m")
        v = reg.publish("m", {"model.onnx": Path(sys.argv[3])}, {}, run_id="doomed").version
        reg.move_alias("m", v, seen_serial=pointer.serial, reason="killed at some write")
    elif op == "rollback":
        reg.rollback("m", reason="killed at some write")
    else:
        reg.gc("m", timedelta(hours=1), now=datetime.now(UTC) + timedelta(hours=2))
""")


def setup(reg: Registry, tmp_path: Path, op: str) -> None:
    promote(reg, artifact(tmp_path, b"old"), "setup")
    if op == "rollback":
        promote(reg, artifact(tmp_path, b"bad"), "setup")
    if op == "gc":  # a writer that died after claiming v2 and uploading its model
        number, _ = reg._claim("m", run_id="dead")
        reg.store.create(f"m/versions/{number}/model.onnx", artifact(tmp_path, b"half"))


def finish(reg: Registry, tmp_path: Path, op: str) -> None:
    """What an operator does next: collect, promote again, roll back again, gc again."""
    if op == "promote":
        removed = reg.gc("m", timedelta(hours=1), now=datetime.now(UTC) + timedelta(hours=2))
        assert promote(reg, artifact(tmp_path, b"next"), "after") == 3
        assert reg.versions("m") == ([1, 3] if removed else [1, 2, 3])
    elif op == "rollback":
        if reg.pointer("m").version == 2:  # type: ignore[union-attr]
            reg.rollback("m", reason="again, after the crash")
        assert reg.pointer("m").version == 1  # type: ignore[union-attr]
    else:
        reg.gc("m", timedelta(hours=1), now=datetime.now(UTC) + timedelta(hours=2))
        assert [st.state for st in reg.states("m")] == ["ok", "abandoned"]
    assert not audit(reg)["check"].repaired


EXPECTED = {  # per write killed after: (complete versions, production, events owed)
    # the claim, the model, the card, the publish event, the swap, the move event
    "promote": [([1], 1, 0), ([1], 1, 0), ([1, 2], 1, 1), ([1, 2], 1, 0), ([1, 2], 2, 1),
                ([1, 2], 2, 0)],
    # the swap, the rollback event
    "rollback": [([1, 2], 1, 1), ([1, 2], 1, 0)],
    # the tombstone, the claim's deletion, the model's, the gc event
    "gc": [([1], 1, 0)] * 4,
}  # fmt: skip


@pytest.mark.parametrize("op", ["promote", "rollback", "gc"])
@pytest.mark.parametrize("kind", ["disk", "s3"])
def test_sigkill_at_every_write_leaves_a_state_verify_accepts_or_repairs(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str, op: str
) -> None:
    if kind == "s3":
        request.getfixturevalue("s3_endpoint")
    outcomes = []
    for n in range(1, 20):
        uri = fresh_uri(kind, tmp_path / str(n))
        reg = store_registry(uri)
        setup(reg, tmp_path, op)
        proc = subprocess.run([sys.executable, "-c", KILLED, uri, op,
                               str(artifact(tmp_path, b"new")), str(n)], check=False,
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
        if proc.returncode == 0:
            break  # it made fewer than n writes: every write point was killed at
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        state = audit(reg)  # verify: nothing damaged; owed events written
        pointer = reg.pointer("m")
        assert pointer is not None
        outcomes.append((state["complete"], pointer.version, len(state["check"].repaired)))
        finish(reg, tmp_path, op)
    else:
        pytest.fail(f"the {op} never finished")
    assert outcomes == EXPECTED[op]


# --- contention: 8 processes x 5 rounds, and a rollback racing them ------------------------------

PROMOTER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from components.errors import AliasRefused
    from components.registry import AliasConflict, store_registry
    uri, worker, rounds, start, tmp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), Path(sys.argv[5])
    reg = store_registry(uri)
    time.sleep(max(0.0, start - time.time()))
    for r in range(rounds):
        path = tmp / f"w{worker}-r{r}.onnx"
        path.write_bytes(f"{worker}:{r}:".encode() * 300)
        pointer = reg.pointer("m")  # what the run's champion step would have scored
        seen = pointer.serial if pointer else 0
        run = f"w{worker}-r{r}"
        v = reg.publish("m", {"model.onnx": path}, {"worker": worker, "round": r}, run_id=run).version
        try:
            reg.move_alias("m", v, seen_serial=seen, reason="passed the gate", run_id=run, deadline_s=90)
            outcome, why = "aliased", ""
        except AliasRefused as exc:
            outcome, why = "refused", str(exc)
        except AliasConflict as exc:
            outcome, why = "gave_up", str(exc)
        print(json.dumps({"run": run, "version": v, "outcome": outcome, "why": why}), flush=True)
""")

ROLLBACK = textwrap.dedent("""
    import json, sys, time
    from components.registry import store_registry
    reg = store_registry(sys.argv[1])
    deadline = time.time() + 120
    while time.time() < deadline:
        pointer = reg.pointer("m")
        if pointer is not None and pointer.serial >= int(sys.argv[2]):
            break
        time.sleep(0.02)
    back = reg.rollback("m", reason="racing the promoters", deadline_s=90)
    print(json.dumps({"from": back.previous, "to": back.version, "withdrawn": list(back.withdrawn)}))
""")


@pytest.mark.parametrize("kind", ["disk", "s3"])
def test_racing_promoters_and_a_rollback_keep_the_policy_and_lose_nothing(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    if kind == "s3":  # through the proxy: some replies lost, some connections reset, some slow
        fp: FaultProxy = request.getfixturevalue("proxy")
        rng = random.Random(16)
        fates: list[str | float] = ["drop", "reset", 0.02, *["pass"] * 37]
        fp.plan = lambda m, p, i: "pass" if m != "PUT" else rng.choice(fates)
    uri = fresh_uri(kind, tmp_path)
    reg = store_registry(uri)
    promote(reg, artifact(tmp_path, b"seed"), "seed")
    workers, rounds = 8, 5
    start = time.time() + 4  # every interpreter imported and waiting
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", PROMOTER, uri, str(w), str(rounds),
                               str(start), str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
             for w in range(workers)]  # fmt: skip
    racer = subprocess.Popen([sys.executable, "-c", ROLLBACK, uri, "6"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    results = [p.communicate(timeout=300) for p in procs]
    rollback_out, rollback_err = racer.communicate(timeout=300)
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in results]
    assert racer.returncode == 0, rollback_err[-2000:]
    attempts = [json.loads(line) for out, _ in results for line in out.splitlines()]
    outcomes = Counter(a["outcome"] for a in attempts)
    assert len(attempts) == workers * rounds and set(outcomes) <= {"aliased", "refused"}, outcomes

    state = audit(reg)
    versions = sorted(a["version"] for a in attempts)
    assert versions == list(range(2, 2 + workers * rounds))  # each its own, complete version
    assert state["complete"] == [1, *versions]
    moved = {e["version"] for e in state["moves"] if e["action"] == "move_alias"}
    aliased = {a["version"] for a in attempts if a["outcome"] == "aliased"}
    assert aliased | {1} == moved  # every aliased attempt is a move in the log, and only those
    refused = [e for e in state["events"] if e["action"] == "alias_refused"]
    assert sorted(e["version"] for e in refused) == sorted(
        a["version"] for a in attempts if a["outcome"] == "refused"
    )  # every refusal recorded
    rollbacks = [e for e in state["moves"] if e["action"] == "rollback"]
    back = json.loads(rollback_out)
    assert len(rollbacks) == 1 and rollbacks[0]["version"] == back["to"]
    assert reg.pointer("m").version not in back["withdrawn"]  # type: ignore[union-attr]
