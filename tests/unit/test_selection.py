from __future__ import annotations

from typing import Any

from components.gate import pareto_front, pareto_knee, select


def cand(
    name: str, ms: float, acc: float, size: int = 1, speedup: float | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "latency_p50_ms": ms,
        "accuracy": acc,
        "size_bytes": size,
        "speedup": speedup,
    }


def test_front_drops_dominated_candidates() -> None:
    entries = [
        cand("a", 1.0, 0.99),
        cand("b", 0.5, 0.98),
        cand("c", 0.6, 0.97),
        cand("d", 0.2, 0.90),
    ]
    assert [e["name"] for e in pareto_front(entries)] == [
        "d",
        "b",
        "a",
    ]  # c: b is faster and better


def test_knee_is_the_bend_of_the_front() -> None:
    entries = [cand("slow-best", 1.0, 0.99), cand("knee", 0.3, 0.985), cand("fast-bad", 0.1, 0.80)]
    assert pareto_knee(entries)["name"] == "knee"
    chosen, reason = select(entries, "knee")
    assert chosen is not None and chosen["name"] == "knee" and "Pareto front" in reason


def test_fastest_prefers_interleaved_speedups_and_breaks_ties_by_name() -> None:
    entries = [
        cand("b", 0.30, 0.9, speedup=1.5),
        cand("a", 0.31, 0.9, speedup=1.5),
        cand("c", 0.2, 0.9, speedup=1.2),
    ]
    chosen, _ = select(entries, "fastest")
    assert (
        chosen is not None and chosen["name"] == "a"
    )  # c's median looks faster; its comparison is not


def test_smallest_and_empty() -> None:
    chosen, _ = select([cand("x", 1, 0.9, size=5), cand("y", 1, 0.9, size=3)], "smallest")
    assert chosen is not None and chosen["name"] == "y"
    assert select([], "fastest") == (None, "")
