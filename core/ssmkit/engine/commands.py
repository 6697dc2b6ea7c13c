"""What ``ssmkit <app> train|evaluate|infer|demo`` do, independent of argument parsing.

The CLI (:mod:`ssmkit.cli`) turns flags into calls of these functions; tests and notebooks can
call them directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssmkit.engine.app import App, DataError, EvalContext
from ssmkit.engine.checkpoint import CheckpointError, load_model_weights
from ssmkit.engine.config import AppConfig, ConfigError, deep_merge, load_config, read_yaml, to_dict
from ssmkit.engine.files import atomic_write_text
from ssmkit.engine.report import metrics_table, write_report
from ssmkit.engine.runtime import (
    DistInfo,
    amp_dtype,
    broadcast_str,
    dist_from_env,
    init_distributed,
    resolve_device,
    seed_everything,
    shutdown_distributed,
)
from ssmkit.engine.trainer import Trainer, run_evaluation
from ssmkit.errors import OutputError


def app_config(app_cls: type[App], config: str | Path | None = None, overrides: list[str] | None = None,
               run_dir: Path | None = None) -> AppConfig:
    """The app's default YAML <- ``run_dir/config.yaml`` (resume/evaluate) <- ``config`` <- overrides."""
    base: dict[str, Any] = {}
    default = app_cls.default_config_path()
    if default is not None:
        base = read_yaml(default)
    if run_dir is not None:
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"run directory {str(run_dir)!r} has no config.yaml; is it a run of app "
                              f"{app_cls.name!r}?")
        base = read_yaml(saved)
    if config is not None:
        base = deep_merge(base, read_yaml(resolve_config(app_cls, config)))
    for text in overrides or []:
        key = str(text).split("=", 1)[0].strip()
        if key in app_cls.config_aliases:
            raise ConfigError(f"{key!r} is not a config key; did you mean {app_cls.config_aliases[key]!r}? "
                              f"(ssmkit {app_cls.name} train --help lists every key)")
    return load_config(app_cls.config_class, None, overrides, base=base)


def resolve_config(app_cls: type[App], config: str | Path) -> Path:
    """``--config``: a YAML file, or the name of one of the app's packaged configs (from any folder)."""
    p = Path(config).expanduser()
    if p.is_file():
        return p
    packaged = app_cls.packaged_configs()
    stem = p.name[:-5] if p.name.endswith(".yaml") else p.name
    if p.parent in (Path("."), Path("configs")) and stem in packaged:
        return packaged[stem]
    raise ConfigError(f"config file {str(config)!r} does not exist; give a YAML file or the name of a packaged "
                      f"config of app {app_cls.name!r}: {', '.join(packaged) or '(none)'}")


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def run_dir_for_id(cfg: AppConfig, app_name: str) -> Path:
    """``<run.root>/<app>/<run.id>``, refused when ``run.id`` would leave that folder (``..``, an
    absolute path, a symlink pointing elsewhere)."""
    root = Path(cfg.run.root).expanduser() / app_name
    rid = cfg.run.id
    if Path(rid).is_absolute() or any(part in ("..", "") for part in Path(rid).parts) or "\\" in rid:
        raise ConfigError(f"run.id={rid!r} must be a plain name inside run.root (no '..', no absolute path); "
                          f"runs go to {str(root)!r}/<run.id>")
    path = root / rid
    if not _inside(path.resolve(), root.resolve()):
        raise ConfigError(f"run.id={rid!r} resolves to {str(path.resolve())!r}, outside {str(root.resolve())!r} "
                          "(a symlink?); choose another run.id")
    return path


def new_run_dir(cfg: AppConfig, app_name: str, dist: DistInfo, overwrite: bool = False) -> Path:
    """Create this run's directory on rank 0 and share its path with every rank.

    The folder is made with ``mkdir`` (never ``exist_ok``), so two runs started in the same
    second cannot both claim it: the loser retries with a suffix. An explicit ``run.id`` that
    already exists is refused unless ``overwrite`` (which deletes the old run first).
    """
    path = Path()
    if dist.is_main:
        if cfg.run.id:
            path = run_dir_for_id(cfg, app_name)
            if path.exists():
                if not overwrite:
                    raise ConfigError(f"run.id={cfg.run.id!r}: {str(path)!r} already holds a run; pass --resume "
                                      f"{path} to continue it, --overwrite to replace it, or choose another run.id")
                shutil.rmtree(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir()
        else:
            root = Path(cfg.run.root).expanduser() / app_name
            root.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for n in range(1, 10_000):
                path = root / (stamp if n == 1 else f"{stamp}-{n}")
                try:
                    path.mkdir()
                    break
                except FileExistsError:
                    continue
            else:
                raise OutputError(f"cannot create a new run directory under {str(root)!r}")
    return Path(broadcast_str(dist, str(path)))


def latest_run(root: str | Path, app_name: str) -> Path:
    base = Path(root) / app_name
    runs = sorted((p for p in base.glob("*") if (p / "config.yaml").is_file()), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise CheckpointError(f"--resume: no runs of app {app_name!r} under {str(base)!r}; pass the run directory")
    return runs[-1]


def train(app_cls: type[App], config: str | Path | None = None, overrides: list[str] | None = None,
          resume: str | Path | None = None, verbose: bool = True,
          overwrite: bool = False) -> tuple[Path, dict[str, float]]:
    """Train (or resume, ``resume`` = a run dir or ``"latest"``); returns (run dir, val metrics).

    The config is loaded and checked before anything is written. ``overwrite`` replaces an
    existing run of the same ``run.id``.

    Under torchrun (WORLD_SIZE > 1) every rank calls this; the process group is set up here.
    """
    dist = dist_from_env()
    run_dir: Path | None = None
    if resume is not None:
        if str(resume) == "latest":
            cfg0 = app_config(app_cls, config, overrides)
            run_dir = latest_run(cfg0.run.root, app_cls.name)
        else:
            run_dir = Path(resume)
            if not run_dir.is_dir():
                raise CheckpointError(f"--resume {str(run_dir)!r}: no such run directory")
    cfg = app_config(app_cls, config, overrides, run_dir=run_dir)
    device = resolve_device(cfg.train.device, dist.local_rank)
    init_distributed(dist, device)
    try:
        fresh = run_dir is None
        made: list[Path] = []
        if run_dir is None:
            root = Path(cfg.run.root).expanduser()
            made = [p for p in (root, root / app_cls.name) if not p.exists()]
            run_dir = new_run_dir(cfg, app_cls.name, dist, overwrite=overwrite)
            made = [*made, run_dir]
        app = app_cls(cfg)
        try:
            metrics = Trainer(app, run_dir, dist, verbose=verbose).fit(resume=resume is not None)
        except BaseException:
            # A run that failed before writing anything (bad data, say) leaves no empty folder.
            if fresh and dist.is_main:
                for p in reversed(made):
                    if p.is_dir() and not any(p.iterdir()):
                        p.rmdir()
            raise
    finally:
        shutdown_distributed()
    if verbose and dist.is_main:
        shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        print(f"done: validation {shown}\nreport: {run_dir / 'report.md'}", flush=True)
    return run_dir, metrics


def weights_for(run: str | Path | None, ckpt: str | Path | None) -> Path:
    """The weights to evaluate: ``--ckpt`` if given, else the run's best, else its final weights."""
    if ckpt is not None:
        return Path(ckpt)
    if run is None:
        raise CheckpointError("no weights given: pass --run RUN_DIR (a training run) or --ckpt FILE")
    r = Path(run)
    for cand in (r / "checkpoints" / "best.safetensors", r / "model.safetensors"):
        if cand.is_file():
            return cand
    raise CheckpointError(f"run {str(r)!r} has no weights (checkpoints/best.safetensors or model.safetensors); "
                          "did its training finish?")


def read_run_state(run_dir: Path) -> dict[str, Any]:
    """The run's ``app_state.json`` (what :meth:`App.run_state` returned at training), or ``{}``."""
    f = Path(run_dir) / "app_state.json"
    if not f.is_file():
        return {}
    try:
        state = json.loads(f.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{str(f)!r} is damaged ({err}); re-run training or restore the file") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{str(f)!r} must hold a JSON object")
    return state


def load_app_model(app_cls: type[App], run: str | Path | None, ckpt: str | Path | None,
                   config: str | Path | None, overrides: list[str] | None):
    """(app, model on its device, eval context) ready for evaluation or inference."""
    run_dir = Path(run) if run is not None else None
    if run_dir is not None and not run_dir.is_dir():
        raise CheckpointError(f"--run {str(run_dir)!r}: no such run directory")
    cfg = app_config(app_cls, config, overrides, run_dir=run_dir)
    seed_everything(cfg.seed, cfg.train.deterministic)
    device = resolve_device(cfg.train.device)
    app = app_cls(cfg)
    if run_dir is not None:
        app.load_run_state(read_run_state(run_dir))
    model = app.build_model()
    load_model_weights(model, weights_for(run_dir, ckpt))
    model.to(device).eval()
    ctx = EvalContext(device=device, amp_dtype=amp_dtype(cfg.train.amp, device), run_dir=run_dir)
    return app, model, ctx


def evaluate(app_cls: type[App], run: str | Path | None = None, ckpt: str | Path | None = None,
             split: str = "test", config: str | Path | None = None, overrides: list[str] | None = None,
             verbose: bool = True) -> dict[str, float]:
    """Evaluate trained weights on ``split``; with a run dir, also write ``eval_<split>.json``."""
    app, model, ctx = load_app_model(app_cls, run, ckpt, config, overrides)
    ctx.split = split
    ds = app.build_dataset(split)
    if len(ds) == 0:
        raise DataError(f"the {split!r} split of app {app_cls.name!r} is empty")
    metrics = run_evaluation(app, model, ds, ctx)
    if ctx.run_dir is not None:
        tag = result_tag(app, split, ctx.run_dir)
        atomic_write_text(ctx.run_dir / f"eval_{tag}.json", json.dumps(metrics, indent=2) + "\n")
        _add_report_section(ctx.run_dir / "report.md", f"Evaluation on {tag}", metrics_table(metrics))
    if verbose:
        print(f"{app_cls.name} {split} metrics:")
        print(metrics_table(metrics))
    return metrics


def result_tag(app: App, split: str, run_dir: Path) -> str:
    """``app.result_tag(split)``, plus a digest of the data section when it differs from the
    run's own config: results on other data never overwrite the run's results."""
    tag = app.result_tag(split)
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return tag
    own = read_yaml(saved).get("data")
    now = to_dict(app.cfg).get("data")
    if own == now or tag != split:
        return tag
    digest = hashlib.sha256(json.dumps(now, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{split}-data-{digest}"


def _add_report_section(report: Path, head: str, body: str) -> None:
    """Put ``## head`` into report.md before its Config section, replacing an older copy."""
    if not report.is_file():
        return
    text = report.read_text()
    marker = f"## {head}\n"
    if marker in text:  # re-evaluation: drop the previous section up to the next heading
        before, rest = text.split(marker, 1)
        nxt = rest.find("\n## ")
        text = before + (rest[nxt + 1:] if nxt >= 0 else "")
    section = f"{marker}\n{body.strip()}\n\n"
    at = text.find("## Config\n")
    text = text[:at] + section + text[at:] if at >= 0 else text.rstrip("\n") + "\n\n" + section
    atomic_write_text(report, text)


def infer(app_cls: type[App], args: Any) -> int:
    app, model, ctx = load_app_model(app_cls, args.run, args.ckpt, args.config, args.set)
    return int(app.infer(model, args, ctx) or 0)


def run_extra(app_cls: type[App], command: str, args: Any) -> int:
    """An app's own subcommand (``App.extra_commands``), with its trained model when it needs one."""
    spec = app_cls.extra_commands[command]
    if spec.needs_model:
        app, model, ctx = load_app_model(app_cls, args.run, args.ckpt, args.config, args.set)
        return int(app.run_command(command, model, args, ctx) or 0)
    app = app_cls(app_config(app_cls, args.config, args.set))
    return int(app.run_command(command, None, args, None) or 0)


@dataclass
class DemoResult:
    app: str
    run_dir: Path
    val: dict[str, float]
    test: dict[str, float]
    summary: str
    seconds: float


def demo(app_cls: type[App], root: str | Path = "runs/demo", overrides: list[str] | None = None,
         verbose: bool = True) -> DemoResult:
    """Train with the default config + the app's ``demo_overrides``, evaluate on test, report.

    An app whose demo is more than one training run (a comparison of several models, say)
    defines a classmethod ``run_demo(root, overrides, verbose) -> DemoResult`` instead.
    """
    custom = getattr(app_cls, "run_demo", None)
    if custom is not None:
        return custom(root, overrides, verbose=verbose)
    t0 = time.monotonic()
    # Runs land in <root>/<app>/<timestamp>/, like any training run under run.root.
    ov = [*app_cls.demo_overrides, f"run.root={root}", *(overrides or [])]
    run_dir, val = train(app_cls, None, ov, verbose=verbose)
    test = evaluate(app_cls, run=run_dir, split="test", verbose=False)
    app = app_cls(app_config(app_cls, run_dir=run_dir))
    summary = app.demo_summary(test)
    seconds = time.monotonic() - t0
    if verbose:
        print(f"{app_cls.name} demo: test {summary} [{seconds:.0f} s, {run_dir}]", flush=True)
    return DemoResult(app_cls.name, run_dir, val, test, summary, seconds)


def demo_all(apps: list[type[App]], root: str | Path = "runs/demo", verbose: bool = True) -> tuple[Path, list]:
    """Run every app's demo and write one combined ``<root>/report.md``. Failures are reported, not fatal."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    results: list[DemoResult | tuple[str, str]] = []
    for cls in apps:
        try:
            results.append(demo(cls, root, verbose=verbose))
        except (ValueError, TypeError, RuntimeError, OSError) as err:
            msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            results.append((cls.name, f"{type(err).__name__}: {msg}"))
            if verbose:
                print(f"{cls.name} demo FAILED: {msg}", flush=True)
    rows = ["| app | test result | time | run |", "|---|---|---|---|"]
    for r in results:
        if isinstance(r, DemoResult):
            link = f"[{r.run_dir.name}]({os.path.relpath(r.run_dir, root)}/report.md)"
            rows.append(f"| {r.app} | {r.summary} | {r.seconds:.0f} s | {link} |")
        else:
            rows.append(f"| {r[0]} | FAILED: {r[1]} | | |")
    body = ("Each app trained from scratch on its embedded data with its quick demo settings, then was "
            "evaluated on its held-out test split.\n\n" + "\n".join(rows))
    report = write_report(root, "ssmkit demo", [("Results", body)])
    return report, results


__all__ = ["DemoResult", "app_config", "demo", "demo_all", "evaluate", "infer", "load_app_model", "run_extra", "train"]
