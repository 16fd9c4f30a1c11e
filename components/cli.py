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
from typing import TYPE_CHECKING

from components.errors import (
    EXIT_OK,
    InputError,
    RegistryError,
    RegistryInputError,
    SlimgateError,
)

if TYPE_CHECKING:
    from datetime import timedelta

    from components.registry import ModelRegistry
    from components.spec import Spec

__all__ = ["main"]

EPILOG = """exit codes:
  0  promoted (or the command succeeded)
  1  unexpected error
  2  bad input: spec, data, model file or arguments
  3  rejected: no candidate met the goals; nothing was written to the registry
"""


def _load(args: argparse.Namespace) -> Spec:
    from components.spec import load_spec

    overrides = {"registry": args.registry} if getattr(args, "registry", None) else None
    return load_spec(args.spec, overrides)


def _registry_uri(value: str) -> str:
    return value if "://" in value else f"file://{Path(value).resolve()}"


# --- run / demo --------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from components.console import execute_run

    if args.resume and args.run_id and args.resume != args.run_id:
        raise InputError(f"--resume {args.resume} and --run-id {args.run_id} name different runs")
    if args.resume:
        return execute_run(_load(args), Path(args.runs_dir), args.resume, resume=True)
    return execute_run(_load(args), Path(args.runs_dir), args.run_id)


def demo_spec_path() -> Path:
    """The built-in example's spec, shipped inside the package."""
    return Path(str(resources.files("components") / "examples" / "digits.yaml"))


def cmd_demo(args: argparse.Namespace) -> int:
    from components.console import execute_run, stderr_console
    from components.spec import load_spec

    spec = load_spec(demo_spec_path(), {"registry": _registry_uri(args.registry)})
    stderr_console().print(f"slimgate demo: {demo_spec_path()}")
    return execute_run(spec, Path(args.runs_dir), None)


def cmd_validate(args: argparse.Namespace) -> int:
    from components.preflight import preflight

    spec = _load(args)
    missing = spec.missing_files()
    if missing:
        raise InputError("\n".join(missing))
    preflight(spec, Path("runs"))
    search = ""
    if spec.search is not None:
        search = (f", a search of {spec.search.trials} trials over "
                  f"{len(spec.search.recipes)} recipes ({spec.search.sampler})")  # fmt: skip
    tune = spec.training.tune
    tuning = f", training tuned over {tune.trials} trials" if tune is not None else ""
    print(f"{args.spec}: valid; {len(spec.candidates)} candidates{search}{tuning}, goals: "
          + ", ".join(g.name for g in spec.goals.active()))  # fmt: skip
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    import re

    from components.init import BUILTIN_MODELS, starting_spec

    out = Path(args.out)
    if out.exists() and not args.force:
        raise InputError(f"{out} exists; choose another --out, or --force to replace it")

    named_after = args.data if ":" in args.model or args.model in BUILTIN_MODELS else args.model
    stem = re.sub(r"[^a-z0-9._-]+", "-", Path(named_after).stem.lower())
    name = args.name or re.sub(r"^[^a-z0-9]+", "", stem)[:64] or "model"
    text = starting_spec(args.model, args.data, name=name, base=out.parent,
                         label=args.label, tokenizer=args.tokenizer)  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}; check it with: slimgate validate {out}")
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
        from components.hostlock import host_lock

        with host_lock().shared():
            out = evaluate(Path(args.model), Path(args.data), Path(args.out),
                           threads=args.threads, reference=args.reference)  # fmt: skip
        print(json.dumps({k: v for k, v in out.items() if k != "per_class_accuracy"}, indent=2))
        return EXIT_OK
    if name == "benchmark":
        from components.benchmark import benchmark
        from components.hostlock import host_lock
        from components.spec import BenchmarkSettings, Target

        target = Target(threads=args.threads, batch_sizes=tuple(args.batch_sizes))
        with host_lock().shared():
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
    from components.hostlock import host_lock

    # work like any step's: the graph's cost, the files, beside others but no measurement
    with tempfile.TemporaryDirectory() as tmp, host_lock().shared():
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
    from components.console import print_bench

    print_bench(record, comparison)
    return EXIT_OK


# --- registry and optimizers ------------------------------------------------------------------


def cmd_registry(args: argparse.Namespace) -> int:
    from components.registry import open_registry

    reg = open_registry(_registry_uri(args.registry))
    cmd = args.registry_cmd
    readers = {
        "list": lambda: _registry_list(reg, args.model),
        "verify": lambda: _registry_verify(reg, args.model, args.version),
        "gc": lambda: _registry_gc(reg, args.model, _duration(args.older_than)),
    }
    if cmd in readers:
        return readers[cmd]()
    if cmd == "diff":
        print(json.dumps(reg.diff(args.model, args.a, args.b), indent=2))
        return EXIT_OK
    if cmd == "rollback":
        pointer = reg.rollback(args.model, alias=args.alias, reason=args.reason, to=args.to)
        withdrawn = (pointer.event or {}).get("withdrawn") or []
        print(f"{args.model}@{args.alias}: version {pointer.previous} -> {pointer.version}"
              + (f" (withdrawn: {', '.join(f'v{v}' for v in withdrawn)})" if withdrawn else ""))  # fmt: skip
        return EXIT_OK
    version = args.version
    if version is None:
        alias = reg.pointer(args.model, args.alias)
        if alias is None:
            raise RegistryInputError(
                f"{args.model} has no '{args.alias}' alias in {reg.describe()}"
            )
        version = alias.version
        if version not in reg.versions(args.model):
            raise RegistryError(f"{args.model}@{args.alias} points at version {version}, whose "
                                f"card.json is missing: the registry is damaged (`slimgate "
                                f"registry verify {args.model}`)")  # fmt: skip
    if cmd == "download":
        dest = Path(args.dest)
        if dest.exists() and not dest.is_dir():
            raise InputError(f"download destination {dest} is a file; give a folder")
        for path in reg.download(args.model, version, dest):
            print(path)
        return EXIT_OK
    card = reg.card(args.model, version)
    problems = reg.problems(args.model, version, card)
    print(json.dumps({"version": version, "damaged": problems, **card}, indent=2))
    if problems:
        raise RegistryError(f"{args.model} version {version} is damaged: {'; '.join(problems)}")
    return EXIT_OK


def _models(reg: ModelRegistry, model: str | None) -> list[str]:
    known = reg.models()
    if model is not None and model not in known:
        raise RegistryInputError(f"no model {model!r} in {reg.describe()}; it holds "
                                 f"{', '.join(known) or 'none'}")  # fmt: skip
    return [model] if model else known


def _registry_list(reg: ModelRegistry, model: str | None) -> int:
    models = _models(reg, model)
    if not models:
        print(f"no models in {reg.describe()}")
    damaged = 0
    for name in models:
        withdrawn = {v for p in reg.aliases(name).values() for v in p.withdrawn}
        for st in reg.states(name):
            on = "".join(f" {a}" for a in st.aliases)
            on += " (withdrawn)" if st.version in withdrawn else ""
            if st.state in ("ok", "damaged") and st.card is not None:
                m = st.card.get("metrics", {})
                line = (f"{name}\tv{st.version}{on}\t{st.card.get('candidate')}\t"
                        f"acc {m.get('accuracy', float('nan')):.4f}\t"
                        f"{m.get('size_bytes', 0) / 1e6:.2f} MB\t{st.card.get('created_at', '')}")  # fmt: skip
            else:
                claim = st.claim or {}
                line = (f"{name}\tv{st.version}{on}\t{st.state}\tclaimed {claim.get('time', '?')} "
                        f"by run {claim.get('run_id')}")  # fmt: skip
            if st.state == "damaged":
                damaged += 1
                line += f"\tDAMAGED: {'; '.join(st.problems)}"
            print(line)
    if damaged:
        raise RegistryError(f"{damaged} damaged version(s); `slimgate registry verify` says more")
    return EXIT_OK


def _registry_verify(reg: ModelRegistry, model: str | None, versions: list[int] | None) -> int:
    damaged = 0
    for name in _models(reg, model):
        check = reg.check(name, versions)
        for st in check.states:
            what = "re-hashed" if st.rehashed else "present"
            on = "".join(f" {a}" for a in st.aliases)
            if st.state == "ok":
                print(f"{name}\tv{st.version}{on}\tok ({what})")
            elif st.state == "damaged":
                damaged += 1
                print(f"{name}\tv{st.version}{on}\tDAMAGED: {'; '.join(st.problems)}")
            else:
                claim = st.claim or {}
                print(f"{name}\tv{st.version}\t{st.state} (claimed {claim.get('time', '?')} "
                      f"by run {claim.get('run_id')}; `registry gc` removes it)"
                      if st.state == "incomplete" else f"{name}\tv{st.version}\t{st.state}")  # fmt: skip
        for key in check.repaired:
            print(f"{name}\trepaired: wrote the owed event {key}")
    if damaged:
        raise RegistryError(f"{damaged} damaged version(s) in {reg.describe()}")
    return EXIT_OK


def _registry_gc(reg: ModelRegistry, model: str | None, older_than: timedelta) -> int:
    for name in _models(reg, model):
        removed = reg.gc(name, older_than)
        what = [f"v{v}" if isinstance(v, int) else str(v) for v in removed]
        print(f"{name}: removed {len(removed)} leftover(s) of writes that never completed"
              + (f": {', '.join(what)}" if what else ""))  # fmt: skip
    return EXIT_OK


def _duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``15m``, ``90s`` (or a number of days)."""
    from datetime import timedelta

    units = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
    value, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "d")
    try:
        amount = float(value)
        if not amount >= 0:
            raise ValueError(text)
        return timedelta(**{units[unit]: amount})
    except (ValueError, OverflowError):
        raise InputError(
            f"--older-than {text!r}: expected a duration such as 7d, 12h, 30m or 90s"
        ) from None


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
    from optimizers.describe import config_fields, describe
    from optimizers.registry import OptimizerRegistryError, available, get

    if args.action == "show":
        if not args.key:
            raise InputError("optimizers show needs a KEY, e.g. slimgate optimizers show "
                             "quantization.static_int8 (slimgate optimizers list names them)")  # fmt: skip
        try:
            print(describe(get(args.key)))
        except OptimizerRegistryError as exc:
            raise InputError(str(exc)) from None
        return EXIT_OK
    for key, cls in available().items():
        print(f"{key:32} {cls.stage.value:5} {cls.description}")
        if args.configs:
            for f in config_fields(cls.config_class):
                print(
                    f"    {f.name} = {f.default}  ({f.type}{', ' + f.bounds if f.bounds else ''})"
                )
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
    p.add_argument("--resume", metavar="RUN_ID",
                   help="continue an interrupted or failed run from the steps it finished")  # fmt: skip
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
        description="--registry takes s3://BUCKET/PREFIX, mlflow://HOST:PORT, file://PATH or a path; "
        "S3 credentials and endpoint come from the standard AWS chain (AWS_PROFILE, "
        "AWS_ENDPOINT_URL, ...), MLflow's from its environment (MLFLOW_TRACKING_TOKEN, ...).",
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
    r = rsub.add_parser(
        "rollback", help="move an alias back to the version it held before; withdraws the one it leaves"
    )  # fmt: skip
    r.add_argument("model")
    r.add_argument("--alias", default="production")
    r.add_argument("--to", type=int, help="an earlier version the alias held (default: the last)")
    r.add_argument("--reason", required=True, help="why: recorded in the event log")
    r = rsub.add_parser(
        "verify", help="re-hash versions, report damaged and incomplete ones, write owed events",
        description="Re-hashes every version (or --version ones) and every alias target; exit 1 "
        "if any is damaged.",
    )  # fmt: skip
    r.add_argument("model", nargs="?")
    r.add_argument("--version", type=int, action="append", help="only this version (repeatable)")
    r = rsub.add_parser("gc", help="remove claimed versions that never completed")
    r.add_argument("model", nargs="?")
    r.add_argument("--older-than", required=True, help="claimed longer ago than: 7d, 12h, 30m")
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

    p = sub.add_parser("init", help="write a commented starting spec for a model and its data")
    p.add_argument("model", help="a file.onnx, a Hugging Face folder, a factory module:function, "
                                 "or digits_cnn / tabular_mlp")  # fmt: skip
    p.add_argument("data", help="a .csv, .parquet or .npz file, or digits / breast_cancer / wine "
                                "/ diabetes")  # fmt: skip
    p.add_argument("-o", "--out", default="spec.yaml", help="where to write it (spec.yaml)")
    p.add_argument("--name", help="the model's registry name (default: from MODEL)")
    p.add_argument(
        "--label", help="the label column (default: label/target/y/class, else the last)"
    )
    p.add_argument("--tokenizer", help="a local tokenizer folder, for a text column")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("optimizers", help="list the registered optimizers, or show one's config")
    p.add_argument("action", choices=["list", "show"])
    p.add_argument("key", nargs="?", help="show: the optimizer, e.g. quantization.static_int8")
    p.add_argument("--configs", action="store_true", help="list: every config field and default")
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
