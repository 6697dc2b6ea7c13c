"""The App contract: what every task pipeline implements to plug into the engine and the CLI.

An app is a subclass of :class:`App`, registered by name::

    from ssmkit.registry import register_app
    from ssmkit.engine.app import App, StepContext, EvalContext
    from ssmkit.engine.config import AppConfig

    @dataclass
    class MyData:  root: str = ""; length: int = 256          # "" = the embedded generator
    @dataclass
    class MyModel: d_model: int = 64; n_layers: int = 2
    @dataclass
    class MyConfig(AppConfig):                                   # seed/train/run come from AppConfig
        data: MyData = field(default_factory=MyData)
        model: MyModel = field(default_factory=MyModel)

    @register_app("mine")
    class MyApp(App):
        config_class = MyConfig
        primary_metric = "f1"                                    # higher is better by default
        demo_overrides = ["train.epochs=1", "data.length=128"]   # the quick `ssmkit demo` tour

        def build_model(self) -> nn.Module: ...
        def build_dataset(self, split: str) -> Dataset: ...      # "train" | "val" | "test"
        def loss(self, model, batch) -> tuple[Tensor, dict]: ... # or override train_step
        def evaluate(self, model, loader, ctx) -> dict[str, float]: ...
        def infer(self, model, args, ctx) -> int: ...            # optional

With that, ``ssmkit mine train|evaluate|infer|demo`` work, ``--help`` included, with no change
to the CLI. The engine owns everything generic: config loading (``--config``, ``--set``), seeds,
device and bf16 autocast, the loop, DDP, gradient clipping, LR schedule, progress, metrics,
checkpoints and ``--resume``, the run directory and its report.

Hooks, in the order the engine calls them (``self.cfg`` is the loaded, typed config):

- ``build_model()`` -> nn.Module. Called after seeding, so initialisation is reproducible.
- ``build_dataset(split)`` -> a map-style ``torch.utils.data.Dataset``. Raise
  :class:`DataError` (see :func:`check_data_dir`) when a configured path is missing or empty;
  the CLI prints it as one paragraph with the expected layout. ``collate`` (optional) is the
  DataLoader's ``collate_fn``.
- ``configure_optimizers(model)`` -> ``{name: Optimizer}``; the default is one ``"main"``
  optimizer from ``cfg.train``. Every optimizer gets the configured LR schedule.
- ``train_step(ctx, batch)`` -> ``{metric: float | Tensor}``. The default calls ``loss`` and
  ``ctx.optimize(loss)``. Apps with unusual steps (minimax: two losses of one forward;
  diffusion: sample noise and timesteps) override ``train_step`` only, using ``ctx.model``
  (DDP-wrapped when distributed), ``ctx.backward``, ``ctx.step``, ``ctx.autocast`` and
  ``ctx.no_sync()`` (wrap the forward and backward of all but the last of several
  micro-batches, so DDP all-reduces once). Under DDP a forward takes exactly one backward:
  several losses of one forward are summed and backpropagated once;
  the loop, logging, checkpoints and resume stay the engine's. Draw randomness from torch's
  global RNG (or ``ctx.generator``): the engine checkpoints it, so resumes stay exact.
- ``evaluate(model, loader, ctx)`` -> ``{metric: float}``, run on the validation split during
  training and on ``test`` (or ``val``) by ``ssmkit <app> evaluate``. ``ctx.plots_dir`` is
  where to write figures; ``ctx.autocast()`` and ``ctx.to_device(batch)`` help.
- ``report(metrics, ctx)`` -> markdown appended to the run's report.md (optional).
- ``add_arguments(command, parser)`` (classmethod): extra per-command CLI flags (e.g. ``infer FILE --out``,
  ``--stream``); they arrive in ``infer``'s ``args``.
- ``infer(model, args, ctx)`` -> exit code. ``model`` holds the trained weights (``--ckpt``
  or ``--run``).
- ``demo_overrides``/``demo_summary``: ``ssmkit <app> demo`` (and the combined ``ssmkit demo``)
  trains with the default config plus these overrides, evaluates, and reports
  ``primary_metric`` against ``chance`` so a reader sees that the model learned.
- ``run_demo`` (optional classmethod): replaces that single run when an app's demo is a
  side-by-side comparison; it returns the engine's ``DemoResult``.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from ssmkit.engine.config import AppConfig
from ssmkit.errors import DataError


def check_data_dir(path: str | Path, layout: str, pattern: str = "*") -> Path:
    """Return ``path`` if it is a directory holding files matching ``pattern``, else raise.

    ``layout`` is the expected on-disk layout (a short tree), printed in the error so the user
    can fix the path without opening the docs.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"dataset path {str(p)!r} does not exist. Expected layout:\n{layout}")
    if p.is_dir() and not any(p.rglob(pattern)):
        raise DataError(f"dataset path {str(p)!r} holds no files matching {pattern!r}. Expected layout:\n{layout}")
    return p


def move_to(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch of tuples, lists and dicts to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [move_to(v, device) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    return batch


@dataclass
class EvalContext:
    """What ``evaluate``/``infer``/``report`` get besides the model."""

    device: torch.device
    amp_dtype: torch.dtype | None = None  # bf16 on CUDA unless disabled; None: full precision
    split: str = "val"
    run_dir: Path | None = None
    global_step: int = 0  # optimizer steps taken so far

    @property
    def plots_dir(self) -> Path | None:
        if self.run_dir is None:
            return None
        d = self.run_dir / "plots"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def to_device(self, batch: Any) -> Any:
        return move_to(batch, self.device)


@dataclass
class StepContext(EvalContext):
    """What ``train_step`` gets: the (possibly DDP-wrapped) model, optimizers and helpers."""

    model: nn.Module | None = None
    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    schedulers: dict[str, Any] = field(default_factory=dict)
    grad_clip: float = 0.0
    epoch: int = 0
    generator: torch.Generator | None = None  # torch's global CPU generator; checkpointed
    grad_norms: dict[str, float] = field(default_factory=dict)
    #: Gradient accumulation (``train.accumulate``): the loss of each micro-batch is scaled by
    #: ``loss_scale`` and ``step`` only acts on the last micro-batch of an optimizer step.
    loss_scale: float = 1.0
    last_micro_batch: bool = True

    def backward(self, loss: torch.Tensor, retain_graph: bool = False) -> None:
        """Backpropagate ``loss`` (bf16 autocast needs no loss scaling)."""
        if not torch.isfinite(loss.detach()).all():
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {self.global_step}")
        (loss * self.loss_scale if self.loss_scale != 1.0 else loss).backward(retain_graph=retain_graph)

    def step(self, name: str = "main") -> None:
        """Clip the gradients of optimizer ``name``'s parameters, step it, advance its schedule.

        Under gradient accumulation this waits for the last micro-batch of the step."""
        if not self.last_micro_batch:
            return
        opt = self.optimizers[name]
        params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        if self.grad_clip > 0 and params:
            norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
            self.grad_norms[name] = float(norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched = self.schedulers.get(name)
        if sched is not None:
            sched.step()

    def no_sync(self) -> contextlib.AbstractContextManager:
        """Forward and backward passes inside accumulate gradients locally without DDP's
        all-reduce; the next forward and backward outside sync the accumulated sum. Use it for all
        but the last of several micro-batches in one step. DDP decides at the forward whether a
        backward reduces, so the forward belongs inside too; without DDP it does nothing."""
        sync_off = getattr(self.model, "no_sync", None)
        return sync_off() if callable(sync_off) else contextlib.nullcontext()

    def optimize(self, loss: torch.Tensor, name: str = "main") -> None:
        """``backward(loss)`` then ``step(name)``: the ordinary training step."""
        self.backward(loss)
        self.step(name)

    def lr(self, name: str = "main") -> float:
        return float(self.optimizers[name].param_groups[0]["lr"])


class ExtraCommand(NamedTuple):
    """An app's own subcommand. ``needs_model``: it runs on trained weights (``--run``/``--ckpt``)."""

    help: str
    needs_model: bool = True


class App:
    """Base class of every app; see the module docstring for the contract."""

    #: Set by the CLI from the registered name; used for ``runs/<name>/``.
    name: ClassVar[str] = ""
    #: The typed config dataclass (a subclass of AppConfig).
    config_class: ClassVar[type[AppConfig]] = AppConfig
    #: YAML file (relative to the app's package folder) loaded before ``--config``/``--set``.
    default_config: ClassVar[str] = "configs/default.yaml"
    #: The metric that selects the best checkpoint and headlines reports, and how to read it.
    primary_metric: ClassVar[str] = "loss"
    higher_is_better: ClassVar[bool] = True
    #: The primary metric of a trivial predictor (e.g. 1 / n_classes), shown in reports.
    chance: ClassVar[float | None] = None
    #: ``--set`` style overrides that make ``demo`` quick (the ``ssmkit demo`` tour).
    demo_overrides: ClassVar[list[str]] = []
    #: One line for ``ssmkit list`` and ``--help``; defaults to the first docstring line.
    summary: ClassVar[str] = ""

    #: Keys users commonly guess, and the config key each means (``{"data.train_csv":
    #: "data.train_file"}``): an override of such a key is refused with the real one.
    config_aliases: ClassVar[dict[str, str]] = {}
    #: The name of the inference command (talking-head generation calls it ``generate``).
    infer_command: ClassVar[str] = "infer"
    #: Subcommands beyond train/evaluate/infer/demo, e.g. ``{"index": ExtraCommand("build an
    #: index")}``; their flags come from ``add_arguments(name, parser)`` and they run through
    #: ``run_command(name, model, args, ctx)``.
    extra_commands: ClassVar[dict[str, ExtraCommand]] = {}

    collate: Callable[[list[Any]], Any] | None = None

    def __init__(self, cfg: AppConfig):
        if not isinstance(cfg, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(cfg).__name__}")
        self.cfg = cfg

    # ----------------------------------------------------------------- required by every app
    def build_model(self) -> nn.Module:
        raise TypeError(f"app {type(self).__name__} must define build_model()")

    def build_dataset(self, split: str) -> torch.utils.data.Dataset:
        raise TypeError(f"app {type(self).__name__} must define build_dataset(split)")

    def evaluate(self, model: nn.Module, loader: Iterator[Any], ctx: EvalContext) -> dict[str, float]:
        raise TypeError(f"app {type(self).__name__} must define evaluate(model, loader, ctx)")

    # ------------------------------------------------------------------- training (optional)
    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        """Return (scalar loss, extra metrics) for one batch; used by the default train_step."""
        raise TypeError(f"app {type(self).__name__} must define loss(model, batch) or override train_step")

    def train_step(self, ctx: StepContext, batch: Any) -> dict[str, Any]:
        with ctx.autocast():
            loss, metrics = self.loss(ctx.model, batch)
        ctx.optimize(loss.float())
        return {"loss": loss.detach(), **metrics}

    def configure_optimizers(self, model: nn.Module) -> dict[str, torch.optim.Optimizer]:
        t = self.cfg.train
        # Weight decay shrinks matrices; on biases, norm gains and parameters flagged
        # ``_no_weight_decay`` (Mamba's A_log and D) it would change the dynamics instead.
        decay, no_decay = [], []
        for p in model.parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 or getattr(p, "_no_weight_decay", False) else decay).append(p)
        params = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        params = [g for g in params if g["params"]]
        if t.optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=t.lr, momentum=t.momentum,
                                                         weight_decay=t.weight_decay)
        elif t.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
        return {"main": opt}

    # ------------------------------------------------------------------ reporting / inference
    def report(self, metrics: dict[str, float], ctx: EvalContext) -> str:
        """Markdown appended to report.md after the final evaluation (plots go to ctx.plots_dir)."""
        return ""

    @classmethod
    def add_arguments(cls, command: str, parser: argparse.ArgumentParser) -> None:
        """Add app-specific flags to ``command`` ("train", "evaluate", "infer", "demo").

        A classmethod: the CLI builds its parsers before any config is loaded.
        """

    def infer(self, model: nn.Module, args: argparse.Namespace, ctx: EvalContext) -> int:
        raise DataError(f"app {self.name!r} has no infer command")

    def run_command(self, command: str, model: nn.Module | None, args: argparse.Namespace,
                    ctx: EvalContext | None) -> int:
        """Run one of ``extra_commands``; ``model``/``ctx`` are None unless it ``needs_model``."""
        raise DataError(f"app {self.name!r} has no command {command!r}")

    # ------------------------------------------------------------------------- run state
    def run_state(self) -> dict[str, Any]:
        """JSON-able facts about the training data that inference must check against (the
        column names, the channel count, the class names). The engine writes them to the run's
        ``app_state.json`` once the datasets are built, and hands them back through
        :meth:`load_run_state` before any evaluation or inference of that run."""
        return {}

    def load_run_state(self, state: dict[str, Any]) -> None:
        """Receive what :meth:`run_state` returned at training time (``{}`` for older runs)."""

    def result_tag(self, split: str) -> str:
        """The name of an evaluation's results (``eval_<tag>.json``). The engine appends a
        digest of the data section when it differs from the run's own, so evaluating on other
        data never overwrites the run's results; apps may name that case better."""
        return split

    def demo_summary(self, metrics: dict[str, float]) -> str:
        """One line for the combined demo report."""
        m = metrics.get(self.primary_metric)
        if m is None:
            return ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)))
        chance = f" (chance {self.chance:.3g})" if self.chance is not None else ""
        return f"{self.primary_metric} = {m:.4g}{chance}"

    # ------------------------------------------------------------------------------ helpers
    @classmethod
    def package_dir(cls) -> Path:
        import sys

        return Path(sys.modules[cls.__module__].__file__).resolve().parent

    @classmethod
    def packaged_configs(cls) -> dict[str, Path]:
        """``configs/*.yaml`` shipped with the app, by name (what ``--config NAME`` resolves)."""
        folder = cls.package_dir() / "configs"
        return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}

    @classmethod
    def default_config_path(cls) -> Path | None:
        p = cls.package_dir() / cls.default_config if cls.default_config else None
        return p if p is not None and p.is_file() else None

    @classmethod
    def describe(cls) -> str:
        if cls.summary:
            return cls.summary
        doc = (cls.__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""


def get_app(name: str) -> type[App]:
    """The App class registered as ``name`` (unknown names raise with the nearest valid one)."""
    from ssmkit import registry

    cls = registry.get("app", name)
    if not (isinstance(cls, type) and issubclass(cls, App)):
        raise TypeError(f"app {name!r} is registered as {cls!r}, which is not a subclass of ssmkit.engine.app.App")
    if not cls.__dict__.get("name"):
        cls.name = name
    return cls


__all__ = ["App", "DataError", "EvalContext", "ExtraCommand", "StepContext", "check_data_dir", "get_app", "move_to"]
