"""The ``ssmkit`` command.

    ssmkit list                          apps, models, blocks, scans, datasets, benches
    ssmkit doctor                        versions, device, active selective-scan backends
    ssmkit demo                          every app's quick demo + one combined report
    ssmkit bench NAME [flags]            a registered benchmark suite
    ssmkit APP train|evaluate|infer|demo an app's commands (apps plug in through the registry)

Errors a user can fix (bad config, missing data, damaged checkpoint, unknown name) are printed as
one paragraph with exit status 2; set SSMKIT_DEBUG=1 to see the Python traceback instead.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

from ssmkit import registry
from ssmkit._checks import unknown_name
from ssmkit.errors import MissingExtraError, UserError

BUILTINS = {
    "list": "list what is registered: apps, models, blocks, scans, datasets, benches",
    "doctor": "show versions, the device and which selective-scan backends are active",
    "demo": "run every app's quick demo and write one combined report",
    "bench": "run a registered benchmark suite: ssmkit bench NAME [flags]",
}
APP_COMMANDS = {
    "train": "train a model (or --resume a run)",
    "evaluate": "evaluate trained weights on a split",
    "infer": "run a trained model on your own input",
    "demo": "quick train + evaluate on the embedded data, with a report",
}


class UsageError(UserError):
    """A command line that names something that does not exist."""


def _suggest(name: str, valid: list[str], what: str) -> str:
    return unknown_name(what, name, valid, cutoff=0.5) + "."


# ------------------------------------------------------------------------------- builtins


def cmd_list(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ssmkit list", description=BUILTINS["list"])
    p.add_argument("kind", nargs="?", choices=list(registry.KINDS), help="only this registry")
    args = p.parse_args(argv)
    for kind in [args.kind] if args.kind else registry.KINDS:
        names = registry.list_registered(kind)
        plural = "benches" if kind == "bench" else f"{kind}s"
        print(f"{plural} ({len(names)}):")
        for n in names:
            obj = registry.get(kind, n)
            doc = ""
            if hasattr(obj, "describe"):
                doc = obj.describe()
            elif getattr(obj, "__doc__", None):
                doc = obj.__doc__.strip().splitlines()[0]
            print(f"  {n:<24} {doc}".rstrip())
        if not names:
            print("  (none)")
    return 0


def cmd_doctor(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ssmkit doctor", description=BUILTINS["doctor"])
    p.parse_args(argv)
    import torch

    import ssmkit
    from ssmkit.ops.selective_scan import resolve_backend, triton_status

    print(f"ssmkit   {ssmkit.__version__}  ({Path(ssmkit.__file__).parent})")
    print(f"python   {platform.python_version()}  ({sys.executable})")
    print(f"torch    {torch.__version__}  (threads: {torch.get_num_threads()})")
    try:
        import triton

        print(f"triton   {triton.__version__}")
    except Exception as err:
        print(f"triton   not importable ({type(err).__name__}: {err})")
    print(f"CUDA     build {torch.version.cuda or 'none'}, available: {torch.cuda.is_available()}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            prop = torch.cuda.get_device_properties(i)
            print(f"  cuda:{i} {prop.name}, {prop.total_memory / 2**30:.0f} GiB, sm_{prop.major}{prop.minor}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device   {device} (what train.device=auto picks)")
    print("selective-scan backends:")
    print("  reference  active  (plain PyTorch loop; the definition of correct)")
    try:
        import ssmkit.ops.selective_scan.chunked

        print("  chunked    active  (parallel pure PyTorch; CPU default and GPU fallback)")
    except Exception as err:
        print(f"  chunked    inactive ({type(err).__name__}: {err})")
    ok, why = triton_status(device)
    print(f"  triton     {'active ' if ok else 'inactive'} ({why})")
    env = os.environ.get("SSMKIT_BACKEND")
    try:
        auto = resolve_backend("auto", device)
        print(f"  auto on {device.type} -> {auto}" + (f" (SSMKIT_BACKEND={env})" if env else ""))
    except (ValueError, RuntimeError) as err:
        print(f"  auto on {device.type} -> error: {err}")
    return 0


def cmd_bench(argv: list[str]) -> int:
    benches = registry.list_registered("bench")
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: ssmkit bench NAME [flags]   (ssmkit bench NAME --help for a suite's flags)\n")
        print("Benchmark suites time variants side by side and print ms and ratios.")
        print("suites: " + (", ".join(benches) or "(none registered)"))
        return 0
    name = argv[0]
    if name not in benches:
        raise UsageError(_suggest(name, benches, "bench"))
    return int(registry.get("bench", name)(argv[1:]) or 0)


def cmd_demo(argv: list[str]) -> int:
    from ssmkit.engine.app import get_app
    from ssmkit.engine.commands import demo_all

    apps = registry.list_apps()
    p = argparse.ArgumentParser(prog="ssmkit demo", description=BUILTINS["demo"] + ". Each app trains "
                                "from scratch on its embedded data with its quick settings.")
    p.add_argument("--out", default="runs/demo", help="where the runs and report.md go (default: runs/demo)")
    p.add_argument("--apps", default=",".join(apps), help=f"comma-separated subset (default: all: {','.join(apps)})")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    args = p.parse_args(argv)
    chosen = [a for a in args.apps.split(",") if a]
    for a in chosen:
        if a not in apps:
            raise UsageError(_suggest(a, apps, "app"))
    report, results = demo_all([get_app(a) for a in chosen], args.out, verbose=not args.quiet)
    print(f"\ndemo report: {report}")
    print(report.read_text().split("## Results", 1)[-1].strip())
    failed = [r for r in results if isinstance(r, tuple)]
    return 1 if failed else 0


# ------------------------------------------------------------------------------------ apps


def _common(p: argparse.ArgumentParser, config: bool = True) -> None:
    if config:
        p.add_argument("--config", metavar="NAME|FILE", help="a YAML file, or the name of one of the app's "
                       "packaged configs (ssmkit APP train --help lists them), merged over its configs/default.yaml")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                   help="override one config value, e.g. --set train.lr=3e-4 (repeatable)")


def _weights(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", metavar="RUN_DIR", help="a training run directory (its config and best weights)")
    p.add_argument("--ckpt", metavar="FILE", help="weights: a checkpoint folder, .safetensors, or .pt/.pth "
                   "(loaded with weights_only=True)")


def config_keys_help(app_cls) -> str:
    """Every config key of the app, its type, range and default: the ``train --help`` epilog."""
    from ssmkit.engine.config import describe_fields

    rows = describe_fields(app_cls.config_class)
    width = max((len(k) for k, _, _ in rows), default=0)
    lines = [f"packaged configs (--config NAME): {', '.join(app_cls.packaged_configs()) or '(none)'}", "",
             "config keys (--set KEY=VALUE; defaults before the app's configs/default.yaml):"]
    lines += [f"  {k:<{width}}  {kind} (default {default})" for k, kind, default in rows]
    return "\n".join(lines)


def app_parser(app_cls) -> argparse.ArgumentParser:
    name = app_cls.name
    p = argparse.ArgumentParser(prog=f"ssmkit {name}", description=f"{name}: {app_cls.describe()}",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=f"examples:\n  ssmkit {name} demo\n  ssmkit {name} train --set train.epochs=3\n"
                                       f"  ssmkit {name} train --resume runs/{name}/RUN_ID\n"
                                       f"  ssmkit {name} evaluate --run runs/{name}/RUN_ID --split test\n"
                                       f"  torchrun --nproc_per_node=2 -m ssmkit {name} train")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    t = sub.add_parser("train", help=APP_COMMANDS["train"], description=APP_COMMANDS["train"] + ". Writes "
                       f"runs/{name}/<id>/ with config.yaml, metrics.jsonl, checkpoints/, report.md and plots/.")
    _common(t)
    t.add_argument("--resume", nargs="?", const="latest", metavar="RUN_DIR",
                   help="continue a killed run from its newest good checkpoint (default: the latest run)")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run of the same run.id")
    t.epilog = config_keys_help(app_cls)
    t.formatter_class = argparse.RawDescriptionHelpFormatter
    e = sub.add_parser("evaluate", help=APP_COMMANDS["evaluate"], description=APP_COMMANDS["evaluate"] + ".")
    _weights(e)
    e.add_argument("--split", default="test", help="which split (default: test)")
    _common(e)
    infer_name = app_cls.infer_command
    i = sub.add_parser(infer_name, help=APP_COMMANDS["infer"], description=APP_COMMANDS["infer"] + ".")
    _weights(i)
    _common(i)
    i.add_argument("--overwrite", action="store_true", help="replace an existing --out (never the input itself)")
    d = sub.add_parser("demo", help=APP_COMMANDS["demo"], description=APP_COMMANDS["demo"] + ".")
    d.add_argument("--out", default="runs/demo", help="root of the demo run (default: runs/demo)")
    d.add_argument("--quiet", action="store_true", help="no progress output")
    _common(d, config=False)
    parsers = [("train", t), ("evaluate", e), (infer_name, i), ("demo", d)]
    for cmd, spec in app_cls.extra_commands.items():
        x = sub.add_parser(cmd, help=spec.help, description=spec.help + ".")
        if spec.needs_model:
            _weights(x)
        _common(x)
        x.add_argument("--overwrite", action="store_true", help="replace existing outputs (never an input)")
        parsers.append((cmd, x))
    for cmd, sp in parsers:
        app_cls.add_arguments(cmd, sp)
    return p


def cmd_app(name: str, argv: list[str]) -> int:
    from ssmkit.engine import commands
    from ssmkit.engine.app import get_app

    app_cls = get_app(name)
    valid = [c for c in APP_COMMANDS if c != "infer"] + [app_cls.infer_command, *app_cls.extra_commands]
    if argv and not argv[0].startswith("-") and argv[0] not in valid:
        raise UsageError(_suggest(argv[0], valid, f"command for app {name!r}"))
    args = app_parser(app_cls).parse_args(argv)
    if args.command in app_cls.extra_commands:
        return commands.run_extra(app_cls, args.command, args)
    if args.command == app_cls.infer_command:
        args.command = "infer"
    if args.command == "train":
        commands.train(app_cls, args.config, args.set, resume=args.resume, verbose=not args.quiet,
                       overwrite=args.overwrite)
        return 0
    if args.command == "evaluate":
        commands.evaluate(app_cls, args.run, args.ckpt, args.split, args.config, args.set)
        return 0
    if args.command == "infer":
        return commands.infer(app_cls, args)
    res = commands.demo(app_cls, args.out, args.set, verbose=not args.quiet)
    print(f"report: {res.run_dir / 'report.md'}")
    return 0


# ------------------------------------------------------------------------------------ main


def top_help() -> str:
    apps = registry.list_apps()
    lines = ["usage: ssmkit COMMAND [args]   |   ssmkit APP {train,evaluate,infer,demo} [args]", "",
             "State-space-model kernels, layers and task pipelines.", "", "commands:"]
    lines += [f"  {k:<10} {v}" for k, v in BUILTINS.items()]
    lines += ["", "apps (ssmkit APP --help for their commands):"]
    if apps:
        from ssmkit.engine.app import get_app

        lines += [f"  {a:<10} {get_app(a).describe()}" for a in apps]
    else:
        lines.append("  (none registered)")
    lines += ["", "Configs: --config FILE and --set key.sub=value; runs go to runs/<app>/<id>/.",
              "Distributed: torchrun --nproc_per_node=N -m ssmkit APP train ...",
              "Set SSMKIT_DEBUG=1 to see full tracebacks."]
    return "\n".join(lines)


def dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(top_help())
        return 0
    if argv[0] in ("-V", "--version"):
        import ssmkit

        print(ssmkit.__version__)
        return 0
    head, rest = argv[0], argv[1:]
    handlers = {"list": cmd_list, "doctor": cmd_doctor, "bench": cmd_bench, "demo": cmd_demo}
    if head in handlers:
        return handlers[head](rest)
    apps = registry.list_apps()
    if head in apps:
        return cmd_app(head, rest)
    why = registry.missing_extra(head)
    if why is not None:
        raise MissingExtraError(f"app {why}")
    raise UsageError(_suggest(head, sorted([*BUILTINS, *apps]), "app or command"))


def _one_paragraph(err: BaseException) -> str:
    text = " ".join(line.strip() for line in str(err).strip().splitlines() if line.strip())
    return text or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the command; user-fixable errors exit 2 with one paragraph, bugs exit 1."""
    from ssmkit.engine.app import DataError
    from ssmkit.engine.checkpoint import CheckpointError
    from ssmkit.engine.config import ConfigError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("SSMKIT_DEBUG") == "1"
    try:
        return dispatch(argv)
    except KeyboardInterrupt:
        print("ssmkit: interrupted", file=sys.stderr)
        return 130
    except DataError as err:
        if debug:
            raise
        # Keep the expected layout readable: it is a small tree, not prose.
        print(f"ssmkit: data error: {str(err).strip()}", file=sys.stderr)
        return 2
    except UserError as err:
        if debug:
            raise
        label = ("config error" if isinstance(err, ConfigError)
                 else "checkpoint error" if isinstance(err, CheckpointError) else "error")
        print(f"ssmkit: {label}: {_one_paragraph(err)}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as err:
        if debug:
            raise
        # The user named a path that cannot be read or written: say which.
        name = err.filename if err.filename is not None else ""
        print(f"ssmkit: error: {err.strerror or type(err).__name__}: {name}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, RuntimeError, OSError, FloatingPointError) as err:
        if debug:
            raise
        where = ""
        tb = err.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is not None:
            where = f" (raised in {Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno})"
        print(f"ssmkit: internal error: {type(err).__name__}: {_one_paragraph(err)}{where}. This is a bug; "
              "rerun with SSMKIT_DEBUG=1 for the full traceback and report it.", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
