"""Mutation testing of the release decision: `make mutate`.

Runs mutmut on the modules a release depends on (``[tool.mutmut] only_mutate`` in
pyproject.toml) with its operator mutants only: comparisons, boolean and arithmetic operators,
``is``/``in``, ``not``, True/False, the condition of a conditional expression forced true or
false, ``break``/``continue``, augmented assignments. mutmut's string, number, argument and assignment mutants are left out:
they mostly rewrite messages and defaults, and a kill rate that counts them says little about
whether the tests pin a decision down.

It then prints one line per module (mutants, killed, equivalent, survived, kill rate over the
non-equivalent ones) and fails when a module is under ``--min``, when a survivor is neither
killed nor explained in ``infra/mutants-equivalent.toml`` (each entry explains one mutant), when
a mutant ended in anything but killed, timeout or survived (the run went wrong), or when an entry
no longer matches a surviving mutant (it went stale when the code changed).

    python infra/mutate.py            # mutate, test, report (minutes per module, resumable)
    python infra/mutate.py --report   # report on the last run only
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENT = ROOT / "infra" / "mutants-equivalent.toml"
# mutmut's statuses: a test failed, or the tests ran past their time. Anything else but
# "survived" ("suspicious": an exit code mutmut does not know, "segfault": also a SIGKILL, "no
# tests", "not checked") means the run itself went wrong: it is reported and fails.
KILLED = {"killed", "timeout"}


def operator_mutants_only() -> None:
    """Keep mutmut's operator mutators; drop those that rewrite literals and call arguments."""
    from mutmut.mutation import file_mutation, mutators

    keep = {
        "operator_swap_op",
        "operator_keywords",
        "operator_name",
        "operator_remove_unary_ops",
        "operator_augmented_assignment",
        "operator_if_exp",
    }
    chosen = [(t, fn) for t, fn in mutators.mutation_operators if fn.__name__ in keep]
    missing = keep - {fn.__name__ for _, fn in chosen}
    if missing:
        raise SystemExit(f"mutmut no longer has the mutators {sorted(missing)}: update {__file__}")
    file_mutation.mutation_operators = chosen  # type: ignore[attr-defined]


def run_mutmut(args: list[str]) -> None:
    operator_mutants_only()
    from mutmut.__main__ import cli

    try:
        cli.main(args=args, prog_name="mutmut", standalone_mode=False)
    except SystemExit as exc:  # click exits on --help and errors
        if exc.code:
            raise


@dataclass(frozen=True)
class Mutant:
    name: str
    module: str
    function: str
    status: str
    removed: tuple[str, ...]
    added: tuple[str, ...]


_NAME = re.compile(r"^(?P<module>[\w.]+?)\.x[ǁ_](?P<function>.+?)__mutmut_\d+$")


def _split(name: str) -> tuple[str, str]:
    match = _NAME.match(name)
    if match is None:
        return name.rsplit(".", 1)[0], name
    function = match["function"].replace("ǁ", ".").strip(".")
    return match["module"], function


def collect() -> list[Mutant]:
    """Every mutant of the last run with its status, and the changed lines of survivors."""
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code
    from mutmut.utils.file_utils import walk_mutatable_files

    mutants = []
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        for name, code in data.exit_code_by_key.items():
            status = status_by_exit_code[code]
            module, function = _split(name)
            removed: tuple[str, ...] = ()
            added: tuple[str, ...] = ()
            if status not in KILLED:
                diff = get_diff_for_mutant(name, path=path).splitlines()
                body = [line for line in diff if not line.startswith(("---", "+++"))]
                removed = tuple(x[1:].strip() for x in body if x.startswith("-"))
                added = tuple(x[1:].strip() for x in body if x.startswith("+"))
            mutants.append(Mutant(name, module, function, status, removed, added))
    return mutants


@dataclass(frozen=True)
class Equivalent:
    function: str
    line: str  # the mutated line as it reads after the mutation
    reason: str


def load_equivalents() -> list[Equivalent]:
    if not EQUIVALENT.exists():
        return []
    data = tomllib.loads(EQUIVALENT.read_text(encoding="utf-8"))
    return [Equivalent(e["function"], e["mutated"].strip(), e["reason"]) for e in data["mutant"]]


def report(minimum: float) -> int:
    mutants = collect()
    equivalents = load_equivalents()
    used: set[Equivalent] = set()
    rows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    unexplained: list[Mutant] = []
    for m in mutants:
        row = rows[m.module]
        row["mutants"] += 1
        if m.status in KILLED:
            row["killed"] += 1
        elif m.status == "survived":
            # each entry explains one mutant: two alike in one function need two entries
            match = next((e for e in equivalents if e not in used and e.function == m.function
                          and e.line in m.added), None)  # fmt: skip
            if match is None:
                row["survived"] += 1
                unexplained.append(m)
            else:
                row["equivalent"] += 1
                used.add(match)
        else:
            row["survived"] += 1
            unexplained.append(m)

    failed = False
    print(f"{'module':<28} {'mutants':>7} {'killed':>7} {'equiv':>6} {'survived':>8} {'score':>7}")
    for module in sorted(rows):
        r = rows[module]
        judged = r["mutants"] - r["equivalent"]
        score = r["killed"] / judged if judged else 1.0
        failed |= score < minimum
        mark = "" if score >= minimum else f"  < {minimum:.0%}"
        print(
            f"{module:<28} {r['mutants']:>7} {r['killed']:>7} {r['equivalent']:>6} "
            f"{r['survived']:>8} {score:>7.1%}{mark}"
        )
    for m in unexplained:
        change = " / ".join(m.added) or m.status
        print(f"survived: {m.name} ({m.status}): {change}")
    stale = [e for e in equivalents if e not in used]
    for e in stale:
        print(f"stale entry in {EQUIVALENT.name}: {e.function}: {e.line}")
    return 1 if failed or stale or unexplained else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="report on the last run only")
    parser.add_argument("--min", type=float, default=0.95, help="kill rate each module needs")
    parser.add_argument("mutants", nargs="*", help="mutant names or globs to run (default: all)")
    args = parser.parse_args(argv)
    if not args.report:
        run_mutmut(["run", *args.mutants])
    return report(args.min)


if __name__ == "__main__":
    sys.exit(main())
