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


def test_domination_needs_one_strict_improvement() -> None:
    # equal latency, better accuracy dominates; equal accuracy, faster dominates
    assert [e["name"] for e in pareto_front([cand("a", 1, 0.9), cand("b", 1, 0.8)])] == ["a"]
    assert [e["name"] for e in pareto_front([cand("a", 1, 0.9), cand("b", 2, 0.9)])] == ["a"]
    # equal on both: neither dominates, both stay, by name
    assert [e["name"] for e in pareto_front([cand("b", 1, 0.9), cand("a", 1, 0.9)])] == ["a", "b"]
    # a candidate not measured on both axes is not on the front
    unmeasured = {**cand("u", 0.1, 0.99), "latency_p50_ms": None}
    assert [e["name"] for e in pareto_front([cand("a", 1, 0.9), unmeasured])] == ["a"]
    no_accuracy = {**cand("v", 0.1, 0.99), "accuracy": None}
    assert [e["name"] for e in pareto_front([cand("a", 1, 0.9), no_accuracy])] == ["a"]


def reference_knee(front: list[dict[str, Any]]) -> str:
    """The front's point farthest from the chord of its ends, in min-max normalised axes: the
    definition, computed with vector algebra (a projection) instead of the cross product."""
    import numpy as np

    pts = np.array([[e["latency_p50_ms"], e["accuracy"]] for e in front], dtype=float)
    span = pts.max(axis=0) - pts.min(axis=0)
    norm = (pts - pts.min(axis=0)) / np.where(span > 0, span, 1.0)
    start, end = norm[0], norm[-1]
    direction = (end - start) / (np.linalg.norm(end - start) or 1.0)
    rel = norm - start
    dist = np.linalg.norm(rel - np.outer(rel @ direction, direction), axis=1)
    best = max(range(len(front)), key=lambda i: (round(float(dist[i]), 12), -i))
    return str(front[best]["name"])


def test_the_knee_is_the_farthest_point_from_the_chord_on_many_fronts() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(3, 8))
        lat = np.sort(rng.lognormal(0, 1, n)) + 0.1 * trial
        acc = np.sort(rng.uniform(0.5, 1.0, n))
        entries = [
            cand(f"m{i}", float(la), float(ac))
            for i, (la, ac) in enumerate(zip(lat, acc, strict=True))
        ]
        front = pareto_front(entries)
        if len(front) < 3:
            continue
        assert pareto_knee(entries)["name"] == reference_knee(front)


def test_knee_ties_and_small_fronts() -> None:
    # symmetric about the chord's perpendicular bisector: two points equally far; the first wins
    tied = [cand("p0", 0, 0), cand("p1", 1, 6), cand("p2", 4, 9), cand("p3", 10, 10)]
    assert pareto_knee(tied)["name"] == "p1"
    # no bend: the fastest, although rounding leaves the middle point a hair off the chord
    for points in (
        [(1, 0.4), (2, 0.6), (3, 0.8)],
        [(1, 0.2), (3, 0.6), (5, 1.0)],
        [(0.1, 0.3), (0.2, 0.4), (0.3, 0.5), (0.4, 0.6)],
        [(1, 0.5), (2, 0.6), (3, 0.7)],
    ):
        front = [cand(f"p{i}", lat, acc) for i, (lat, acc) in enumerate(points)]
        assert pareto_knee(front[::-1])["name"] == "p0", points
    unmeasured = [cand("a", 1, float("nan")), cand("b", 2, 0.6), cand("c", 3, 0.7)]
    assert pareto_knee(unmeasured)["name"] == "a"  # a NaN area: the fastest, no crash
    two = [cand("slow", 2, 0.99), cand("fast", 1, 0.9)]
    assert pareto_knee(two)["name"] == "fast"
    dominated = [cand("z", 1, 0.99), cand("a", 2, 0.9), cand("b", 3, 0.5)]  # front: z alone
    assert pareto_knee(dominated)["name"] == "z"
    nothing_measured = [
        {**cand("b", 1, 0.9), "accuracy": None},
        {**cand("a", 1, 0.9), "accuracy": None},
    ]
    assert pareto_knee(nothing_measured)["name"] == "a"


def test_fastest_falls_back_to_latency_and_smallest_skips_unknown_sizes() -> None:
    entries = [cand("a", 0.5, 0.9, size=1, speedup=2.0), cand("b", 0.3, 0.9, size=9)]
    chosen, reason = select(entries, "fastest")
    assert chosen is not None and chosen["name"] == "b"  # b has no comparison: medians decide
    assert reason == "b is the fastest (latency_p50_ms = 0.3)"
    unknown = [{**cand("a", 1, 0.9), "size_bytes": None}, cand("b", 1, 0.9, size=7)]
    chosen, reason = select(unknown, "smallest")
    assert (
        chosen is not None
        and chosen["name"] == "b"
        and reason == "b is the smallest (size_bytes = 7)"
    )


def test_knee_ties_are_decided_on_the_fronts_own_scale() -> None:
    """Exact binary fractions, so that the areas below are computed without rounding: on a
    front 2**20 ms wide and 0.5 high, two areas 2**-30 apart are a tie (the faster wins), two
    2**-20 apart are not (the farther wins)."""
    for extra, winner in ((2.0**-50, "p1"), (2.0**-40, "p2")):  # areas 2**20 * extra apart
        front = [cand("p0", 0.0, 0.25), cand("p1", 2.0**18, 0.4375),
                 cand("p2", 2.0**19, 0.5625 + extra), cand("p3", 2.0**20, 0.75)]  # fmt: skip
        assert pareto_knee(front)["name"] == winner, extra
    duplicates = [cand("b", 1, 0.9), cand("a", 1, 0.9), cand("c", 1, 0.9)]  # a front of one point
    assert pareto_knee(duplicates)["name"] == "a"
