"""``slimgate``: the command line. It parses arguments and calls step functions; nothing more.

Exit codes: 0 promoted (or success), 1 unexpected error, 2 bad input (spec, data, model,
arguments), 3 rejected: no candidate met the goals (nothing written to the registry).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.errors import EXIT_OK, InputError, SlimgateError

if TYPE_CHECKING:
    from rich.console import Console

    from components.spec import Spec

__all__ = ["main"]

EPILOG = """exit codes:
  0  promoted (or the command succeeded)
  1  unexpected error
  2  bad input: spec, data, model file or arguments
  3  rejected: no candidate met the goals; nothing was written to the registry
"""


def _console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _load(args: argparse.Namespace) -> Spec:
    from components.spec import load_spec

    overrides = {"registry": args.registry} if getattr(args, "registry", None) else None
    return load_spec(args.spec, overrides)


def _registry_uri(value: str) -> str:
    return value if "://" in value else f"file://{Path(value).resolve()}"


# --- run / demo --------------------------------------------------------------------------------


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


class _StatusHandler(logging.Handler):
    """Shows the latest log line of a step (an epoch's loss, say) next to the spinner."""

    def __init__(self, status: Any) -> None:
        super().__init__(logging.INFO)
        self.status = status
        self.step = ""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.name in ("components.search", "components.tuning") and "trial" in message:
            self.status.console.print(f"  [dim]{escape(message)}[/]")  # one line per trial stays
        self.status.update(f"[bold]{self.step}[/] {escape(message)}")


def _execute(spec: Spec, runs_dir: Path, run_id: str | None) -> int:
    from components.runner import Phase, run

    console = _console()
    status = console.status("")
    status.start()
    handler = _StatusHandler(status)
    loggers = [logging.getLogger(name) for name in ("components", "optimizers")]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    verbose = logging.getLogger().level <= logging.INFO
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
        lg.propagate = verbose  # without -v, INFO lines only feed the spinner

    def on_step(name: str, phase: Phase, seconds: float | None, error: str | None) -> None:
        if phase == "start":
            handler.step = name
            status.update(f"[bold]{name}[/] ...")
        elif phase == "done":
            console.print(f"[green]✓[/] {name} [dim]{seconds:.1f} s[/]")
        elif phase == "skipped":
            console.print(f"[dim]- {name} skipped: {escape(error or '')}[/]")
        else:
            console.print(f"[red]✗[/] {name} [dim]{seconds:.1f} s[/]")

    try:
        result = run(spec, runs_dir, run_id=run_id, on_step=on_step)
    finally:
        status.stop()
        for lg, (level, propagate) in zip(loggers, saved, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate
    _summary(spec, result.run_dir)
    return result.exit_code


def _summary(spec: Spec, run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from components.layout import RunLayout
    from components.report import collect, speedup_text

    data = collect(spec, run_dir)
    table = Table(title=f"{spec.name}: baseline and candidates", title_justify="left")
    for col in (
        "model",
        "accuracy",
        "agreement",
        "size MB",
        "p50 ms",
        "p95 ms",
        "speedup [interval]",
        "verdict",
    ):
        table.add_column(
            col, justify="left" if col in ("model", "verdict") else "right", no_wrap=True
        )

    def fmt(v: Any, spec_: str) -> str:
        return "-" if v is None else format(v, spec_)

    colours = {"pass": "green", "fail": "red", "inconclusive": "yellow", "error": "red"}
    notes = []
    for row in [data["baseline"], *data["candidates"]]:
        verdict = "error" if row.get("error") else row.get("outcome") or ""
        if row.get("error"):
            notes.append(f"{row['name']}: [red]error[/]: {row['error']}")
        for g in row.get("goals", []):
            if g["outcome"] != "pass":
                notes.append(
                    f"{row['name']}: [{colours[g['outcome']]}]{g['goal']}[/] {g['reason']}"
                )
        size = row["size_bytes"] / 1e6 if row.get("size_bytes") else None
        table.add_row(
            row["name"], fmt(row["accuracy"], ".4f"), fmt(row["agreement"], ".4f"),
            fmt(size, ".2f"), fmt(row["p50_ms"], ".3f"), fmt(row["p95_ms"], ".3f"),
            speedup_text(row),
            f"[{colours[verdict]}]{verdict}[/]" if verdict else "",
        )  # fmt: skip
    out = Console(highlight=False, width=max(Console().width, 120))
    out.print(table)
    for note in notes:
        out.print(note)
    found = data.get("search")
    if found:
        blocked = ", ".join(f"{g} {n}" for g, n in sorted(found["blocked_by_goal"].items()))
        out.print(
            f"search: {found['distinct']} distinct trials in {found['seconds']:.0f} s (stopped by the "
            f"{found['stopped_by']} limit), {found['screened_out']} stopped at the screen, "
            f"{len(found['feasible'])} met every goal; front: {', '.join(found['front']) or 'empty'}"
            + (f"; trials blocked per goal: {blocked}" if blocked else "")
        )
    reused = data.get("reused") or {}
    if reused.get("models") or reused.get("measurements"):
        out.print(
            f"reused from the cache: {len(reused['models'])} models, "
            f"{len(reused['measurements'])} measurements (unchanged inputs)"
        )
    promo = data.get("promotion") or {}
    if promo.get("status") == "promoted":
        again = "" if promo.get("created") else " (identical to an existing version)"
        out.print(
            f"[green]promoted[/] {spec.name} version {promo['version']}{again} as "
            f"'{promo['alias']}' in {promo['registry']}"
        )
    elif data["status"] == "rejected":
        out.print(f"[red]rejected[/]: {data['verdict']['reason']}; nothing was promoted")
    out.print(f"report: {RunLayout(run_dir).report_html}")


def cmd_run(args: argparse.Namespace) -> int:
    return _execute(_load(args), Path(args.runs_dir), args.run_id)


def demo_spec_path() -> Path:
    """The built-in example's spec, shipped inside the package."""
    return Path(str(resources.files("components") / "examples" / "digits.yaml"))


def cmd_demo(args: argparse.Namespace) -> int:
    from components.spec import load_spec

    spec = load_spec(demo_spec_path(), {"registry": _registry_uri(args.registry)})
    _console().print(f"slimgate demo: {demo_spec_path()}")
    return _execute(spec, Path(args.runs_dir), None)


def cmd_validate(args: argparse.Namespace) -> int:
    spec = _load(args)
    search = ""
    if spec.search is not None:
        search = (f", a search of {spec.search.trials} trials over "
                  f"{len(spec.search.recipes)} recipes ({spec.search.sampler})")  # fmt: skip
    tune = spec.training.tune
    tuning = f", training tuned over {tune.trials} trials" if tune is not None else ""
    print(f"{args.spec}: valid; {len(spec.candidates)} candidates{search}{tuning}, goals: "
          + ", ".join(g.name for g in spec.goals.active()))  # fmt: skip
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from components.spec import spec_json_schema

    print(json.dumps(spec_json_schema(), indent=2))
    return EXIT_OK


# --- steps -------------------------------------------------------------------------------------


def cmd_step(args: argparse.Namespace) -> int:
    name = args.step_name
    if name == "evaluate":
        from components.evaluate import evaluate

        out = evaluate(Path(args.model), Path(args.data), Path(args.out),
                       threads=args.threads, reference=args.reference)  # fmt: skip
        print(json.dumps({k: v for k, v in out.items() if k != "per_class_accuracy"}, indent=2))
        return EXIT_OK
    if name == "benchmark":
        from components.benchmark import benchmark
        from components.spec import BenchmarkSettings, Target

        target = Target(threads=args.threads, batch_sizes=tuple(args.batch_sizes))
        record = benchmark(
            Path(args.model), Path(args.data), Path(args.out), target, BenchmarkSettings()
        )
        for batch, r in record["batches"].items():
            print(f"batch {batch}: p50 {r['p50_ms']:.3f} ms, p95 {r['p95_ms']:.3f} ms, "
                  f"{r['throughput_per_s']:.0f}/s over {r['runs']} runs")  # fmt: skip
        return EXIT_OK

    from components.pipeline import step
    from components.steps import execute

    s = step(name)
    spec = _load(args)
    if args.run_dir:
        run_dir = Path(args.run_dir)
    elif args.runs_dir and args.run_id:
        run_dir = Path(args.runs_dir) / args.run_id
    else:
        raise InputError(f"step {name}: give --run-dir, or --runs-dir and --run-id")
    done = execute(
        name, spec, run_dir,
        item=getattr(args, s.item) if s.item else None,
        inputs={k: getattr(args, k) for k, _ in s.inputs if getattr(args, k) is not None},
        outputs={o: getattr(args, f"{o}_out") for o in (*s.outputs, "value")},
    )  # fmt: skip
    if done.status == "skipped":
        print(f"{name}: skipped: {done.reason}", file=sys.stderr)
    elif done.status == "failed":  # recorded; the steps after it judge it
        print(f"{name} {done.item or ''}: failed (recorded): {done.reason}", file=sys.stderr)
    return EXIT_OK


# --- bench -------------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    import tempfile

    from components.benchmark import benchmark
    from components.compare import compare
    from components.spec import BenchmarkSettings, Target

    try:
        device = "cpu" if args.provider == "cpu" else "cuda"
        target = Target(device=device, provider=args.provider, threads=args.threads,
                        batch_sizes=tuple(args.batch_sizes))  # fmt: skip
        settings = BenchmarkSettings(min_seconds=args.seconds, compare_rounds=args.rounds)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    model = Path(args.model)
    data = Path(args.data) if args.data else None
    for path in (model, data, Path(args.against) if args.against else None):
        if path is not None and not path.is_file():
            raise InputError(f"{path}: file not found")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "benchmark.json"
        record = benchmark(model, data, out, target, settings)
        comparison = None
        if args.against:
            comparison = compare(model, Path(args.against), data, target.batch_sizes[0],
                                 target=target, settings=settings)  # fmt: skip
            if args.out:
                record["comparison"] = comparison
                from components.layout import write_json

                write_json(out, record)
    _print_bench(record, comparison)
    return EXIT_OK


def _print_bench(record: dict[str, Any], comparison: dict[str, Any] | None) -> None:
    from rich.console import Console
    from rich.table import Table

    env = record["environment"]
    out = Console(highlight=False, width=max(Console().width, 120))
    macs = (
        f"{record['macs_per_example'] / 1e6:.1f} M MACs per example"
        if record["macs_per_example"] is not None
        else f"MACs unknown ({len(record['uncounted_nodes'])} fused nodes ONNX cannot size)"
    )
    out.print(
        f"{record['model']}: {record['size_bytes'] / 1e6:.2f} MB, {record['parameters']:,} parameters, {macs}"
    )
    out.print(
        f"{env['cpu']} ({env['simd']}), {env['threads']} threads, "
        f"{', '.join(env['providers_used'])}, onnxruntime {env['onnxruntime']}"
    )
    table = Table()
    cols = ("batch", "runs", "p50 ms", "p95 ms (bound)", "p99 ms", "throughput/s", "create ms",
            "first ms", "peak RSS MB", "CPU s/inf", "of limit")  # fmt: skip
    for col in cols:
        table.add_column(col, justify="right")
    for batch, r in record["batches"].items():
        limit = (r.get("limit") or {}).get("fraction_of_p50")
        bound = r["p95_upper_ms"]
        table.add_row(
            batch, str(r["runs"]), f"{r['p50_ms']:.3f}",
            f"{r['p95_ms']:.3f} ({'-' if bound is None else f'{bound:.3f}'})", f"{r['p99_ms']:.3f}",
            f"{r['throughput_per_s']:,.0f}", f"{r['session_create_ms']:.1f}",
            f"{r['first_inference_ms']:.2f}", f"{r['peak_rss_mb']:.0f}",
            f"{r['cpu_seconds_per_inference'] * 1e3:.3f} ms", "-" if limit is None else f"{limit:.0%}",
        )  # fmt: skip
    out.print(table)
    out.print(f"energy: {record['energy_source']}")
    if comparison:
        low, high = comparison["interval"]
        interval = (
            "no interval"
            if low is None
            else f"{comparison['confidence']:.0%} interval [{low:.3f}, {high:.3f}]"
        )
        out.print(
            f"against {comparison['baseline']}: {comparison['speedup']:.3f}x ({interval}) over "
            f"{comparison['rounds']} alternating rounds: {comparison['note']}"
        )


# --- registry and optimizers ------------------------------------------------------------------


def cmd_registry(args: argparse.Namespace) -> int:
    from components.registry import open_registry

    reg = open_registry(_registry_uri(args.registry))
    cmd = args.registry_cmd
    if cmd == "list":
        models = [args.model] if args.model else reg.models()
        if not models:
            print(f"no models in {reg.describe()}")
        for model in models:
            pointer = reg.alias(model) or {}
            for v in reg.versions(model):
                card = reg.card(model, v)
                m = card.get("metrics", {})
                mark = " production" if pointer.get("version") == v else ""
                print(f"{model}\tv{v}{mark}\t{card.get('candidate')}\t"
                      f"acc {m.get('accuracy', float('nan')):.4f}\t"
                      f"{m.get('size_bytes', 0) / 1e6:.2f} MB\t{card.get('created_at', '')}")  # fmt: skip
        return EXIT_OK
    if cmd == "diff":
        print(json.dumps(reg.diff(args.model, args.a, args.b), indent=2))
        return EXIT_OK
    if cmd == "rollback":
        pointer = reg.rollback(args.model, alias=args.alias, reason=args.reason)
        print(f"{args.model}@{args.alias}: version {pointer['previous']} -> {pointer['version']}")
        return EXIT_OK
    version = args.version
    if version is None:
        alias = reg.alias(args.model, args.alias)
        if alias is None:
            raise SlimgateError(f"{args.model} has no '{args.alias}' alias in {reg.describe()}")
        version = alias["version"]
    if cmd == "download":
        for path in reg.download(args.model, version, Path(args.dest)):
            print(path)
        return EXIT_OK
    print(json.dumps({"version": version, **reg.card(args.model, version)}, indent=2))
    return EXIT_OK


def cmd_cache(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from components.cache import ArtifactCache

    uri = args.cache or str(Path(args.runs_dir).resolve() / ".cache")
    cache = ArtifactCache.open(uri)
    if args.cache_cmd == "list":
        entries = cache.entries()
        for e in entries:
            print(f"{e['kind']:13} {e['key'][:16]}  {e['created']}  run {e['run_id']}  "
                  + ", ".join(sorted(e["files"])))  # fmt: skip
        print(f"{len(entries)} entries in {cache.describe()}")
        return EXIT_OK
    removed = cache.prune(timedelta(days=args.older_than_days))
    print(f"removed {len(removed)} entries older than {args.older_than_days:g} days "
          f"from {cache.describe()}")  # fmt: skip
    return EXIT_OK


def cmd_optimizers(args: argparse.Namespace) -> int:
    from optimizers.registry import available

    for key, cls in available().items():
        print(f"{key:32} {cls.stage.value:5} {cls.description}")
    return EXIT_OK


# --- parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:  # noqa: PLR0915 - one flat parser
    parser = argparse.ArgumentParser(
        prog="slimgate",
        description="Compress a trained model and promote it only if it meets its goals.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what each step does")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run every step of a spec", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("spec", help="the spec YAML file")
    p.add_argument("--runs-dir", default="runs", help="where run directories go (default: runs)")
    p.add_argument("--run-id", help="name of the run directory (default: time and random suffix)")
    p.add_argument("--registry", help="override the spec's registry URI")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="run the built-in example (digits CNN, int8 quantization)")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--registry", default="registry", help="registry folder (default: ./registry)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("validate", help="check a spec without running it")
    p.add_argument("spec")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("schema", help="print the spec's JSON Schema")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("step", help="run one step (what Airflow, KFP and containers call)")
    steps = p.add_subparsers(dest="step_name", required=True)
    from components.pipeline import STEPS

    for declared in STEPS:
        s = steps.add_parser(
            declared.name, help=declared.summary,
            description=f"{declared.summary}. Orchestrators pass --run-dir, or --runs-dir and "
            "--run-id; the --*-out options copy results where they expect them.",
        )  # fmt: skip
        s.add_argument("--spec", required=True)
        s.add_argument("--run-dir")
        s.add_argument("--runs-dir")
        s.add_argument("--run-id")
        s.add_argument("--registry", help="override the spec's registry URI")
        if declared.item:
            s.add_argument(f"--{declared.item}", required=True, help=f"the {declared.item} to run")
        for keyword, source in declared.inputs:
            s.add_argument(f"--{keyword}", help=f"what the {source} step handed on")
        for output in (*declared.outputs, "value"):
            s.add_argument(
                f"--{output}-out", metavar="PATH", help=f"write the step's {output} here"
            )
    s = steps.add_parser("evaluate", help="score an ONNX model on a data split")
    s.add_argument("--model", required=True)
    s.add_argument("--data", required=True, help="a split .npz written by prepare_data")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--reference", type=Path, help="predictions.npz of a model to agree with")
    s.add_argument("--threads", type=int, default=2)
    s = steps.add_parser("benchmark", help="time an ONNX model in ONNX Runtime")
    s.add_argument("--model", required=True)
    s.add_argument("--data", required=True, help="a split .npz whose rows are fed to the model")
    s.add_argument("--out", required=True, help="benchmark.json to write")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--batch-sizes", type=int, nargs="+", default=[1])
    p.set_defaults(func=cmd_step)

    p = sub.add_parser("bench", help="measure an ONNX model, optionally against another")
    p.add_argument("model", help="the ONNX file to measure")
    p.add_argument("--against", help="a baseline ONNX file: report the speedup with its interval")
    p.add_argument(
        "--data", help="a split .npz (from prepare_data) to feed; default: random inputs"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1])
    p.add_argument("--provider", choices=["cpu", "cuda", "tensorrt"], default="cpu")
    p.add_argument("--seconds", type=float, default=1.0, help="minimum timed seconds per batch")
    p.add_argument("--rounds", type=int, default=7, help="alternating processes per model")
    p.add_argument("--out", help="also write benchmark.json here")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "registry", help="read the model registry, roll an alias back",
        description="--registry takes s3://BUCKET/PREFIX, file://PATH or a path; S3 credentials "
        "and endpoint come from the standard AWS chain (AWS_PROFILE, AWS_ENDPOINT_URL, ...).",
    )  # fmt: skip
    rsub = p.add_subparsers(dest="registry_cmd", required=True)
    r = rsub.add_parser("list", help="list models and versions")
    r.add_argument("model", nargs="?")
    r = rsub.add_parser("show", help="print a version's card")
    r.add_argument("model")
    r.add_argument("--version", type=int)
    r.add_argument("--alias", default="production")
    r = rsub.add_parser("diff", help="what changed between two versions")
    r.add_argument("model")
    r.add_argument("a", type=int)
    r.add_argument("b", type=int)
    r = rsub.add_parser("download", help="copy a version's files, checking their checksums")
    r.add_argument("model")
    r.add_argument("dest")
    r.add_argument("--version", type=int)
    r.add_argument("--alias", default="production")
    r = rsub.add_parser("rollback", help="move an alias back to its previous version")
    r.add_argument("model")
    r.add_argument("--alias", default="production")
    r.add_argument("--reason", required=True, help="why: recorded in the event log")
    for r in rsub.choices.values():
        r.add_argument("--registry", default="registry", help="registry URI (default: ./registry)")
    p.set_defaults(func=cmd_registry)

    p = sub.add_parser("cache", help="list or prune the cache of finished work")
    p.add_argument("cache_cmd", choices=["list", "prune"])
    p.add_argument("--cache", help="a folder or s3://BUCKET/PREFIX (default: RUNS_DIR/.cache)")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument(
        "--older-than-days", type=float, default=30.0, help="prune: entries older than this"
    )
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("optimizers", help="list the registered optimizers")
    p.add_argument("action", choices=["list"])
    p.set_defaults(func=cmd_optimizers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except SlimgateError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"slimgate: error: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("slimgate: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
