"""Typed run configuration: dataclasses loaded from YAML, overridden with ``--set a.b=1``.

Every app's config is a dataclass deriving from :class:`AppConfig`, which already holds the
engine's sections (``seed``, ``train``, ``run``); the app adds its own (``data``, ``model``...).
Loading is strict, because a silently ignored typo in a config wastes a whole training run:
unknown keys are rejected with the list of valid keys, values are type-checked against the
annotations, and a file that is not valid YAML is reported with its line and column.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from ssmkit._checks import did_you_mean
from ssmkit.engine.files import atomic_write_text
from ssmkit.errors import UserError

T = TypeVar("T")


class ConfigError(UserError):
    """A config file or override that cannot be turned into the typed config."""


_BOUNDS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b),
           "le": ("<=", lambda v, b: v <= b), "lt": ("<", lambda v, b: v < b)}


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None, doc: str = "") -> Any:
    """A config field with a declared range, checked when the config is loaded (before anything
    is written). ``epochs: int = bounded(1, ge=1)``; choices are ``Literal[...]`` annotations.
    ``doc`` is shown by ``--help`` listings."""
    meta = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    if doc:
        meta["doc"] = doc
    return field(default=default, metadata=meta)


def _check_bounds(f: dataclasses.Field, value: Any, where: str) -> None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    failed = [f"{sym} {f.metadata[k]:g}" for k, (sym, ok) in _BOUNDS.items()
              if k in f.metadata and not ok(value, f.metadata[k])]
    if value != value:  # NaN passes every comparison test above as False; say so plainly
        failed = ["a number, not NaN"]
    if failed:
        want = " and ".join(f"{sym} {f.metadata[k]:g}" for k, (sym, _) in _BOUNDS.items() if k in f.metadata)
        raise ConfigError(f"{where}={value!r} is out of range; expected {want or failed[0]}")


def describe_fields(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, type and range, default) for every leaf key of config dataclass ``cls``."""
    rows: list[tuple[str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows += describe_fields(tp, key + ".")
            continue
        rng = " and ".join(f"{sym} {f.metadata[k]:g}" for k, (sym, _) in _BOUNDS.items() if k in f.metadata)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "")
        kind = _type_name(tp) + (f", {rng}" if rng else "")
        if f.metadata.get("doc"):
            kind += f"; {f.metadata['doc']}"
        rows.append((key, kind, repr(default)))
    return rows


@dataclass
class TrainConfig:
    """The engine's training loop settings (section ``train``)."""

    epochs: int = bounded(1, ge=1)
    max_steps: int = bounded(0, ge=0)  # > 0 stops after this many optimizer steps, whatever ``epochs`` says
    batch_size: int = bounded(32, ge=1)  # global batch; DDP splits it evenly across ranks
    eval_batch_size: int = bounded(0, ge=0)  # 0: same as batch_size
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = bounded(1e-3, ge=0)  # 0 is allowed: a model with nothing to optimise (a fitted forest)
    weight_decay: float = bounded(0.0, ge=0)
    momentum: float = bounded(0.9, ge=0, lt=1)  # sgd only
    schedule: Literal["constant", "cosine", "linear"] = "cosine"
    warmup_steps: int = bounded(0, ge=0)
    min_lr_ratio: float = bounded(0.0, ge=0, le=1)  # the schedule decays to lr * min_lr_ratio
    grad_clip: float = bounded(1.0, ge=0)  # max global grad norm; 0 disables clipping
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto: bf16 autocast on CUDA, off on CPU
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_workers: int = bounded(0, ge=0)
    log_every: int = bounded(10, ge=1)  # steps between progress/metric lines
    eval_every: int = bounded(0, ge=0)  # steps between validations; 0: at the end of every epoch
    ckpt_every: int = bounded(0, ge=0)  # steps between checkpoints; 0: at the end of every epoch
    keep_checkpoints: int = bounded(2, ge=0)  # newest checkpoints kept, older ones deleted; 0 keeps all
    accumulate: int = bounded(1, ge=1)  # micro-batches per optimizer step; batch_size stays the step's batch
    ema: float = bounded(0.0, ge=0, lt=1)  # decay of a weight average used for eval and saving; 0: off
    early_stop: int = bounded(0, ge=0)  # stop after this many validations without a better primary metric
    deterministic: bool = True  # deterministic algorithms (exact CPU reruns and resumes)


@dataclass
class RunConfig:
    """Where the run directory goes (section ``run``): ``<root>/<app>/<id>/``."""

    root: str = "runs"
    id: str = ""  # empty: a timestamp


@dataclass
class AppConfig:
    """Base of every app config. Apps subclass it and add sections such as ``data``/``model``."""

    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)


# ----------------------------------------------------------------------------------- parsing


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp``; return it converted (int -> float, list -> tuple)."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if tp is Any:
        return value
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise bad
    if tp is type(None):
        if value is not None:
            raise bad
        return None
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {_field_list(tp)}, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} items ({_type_name(tp)}), got {value!r}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise bad
    return value


def _field_list(cls: type) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls))


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) mapping; missing keys keep their defaults."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping of {_field_list(cls)}, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key {path!r}.{did_you_mean(str(key), names)} "
                              f"Valid keys here: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], path)
        _check_bounds(fields[key], kwargs[key], path)
    # Sections that are absent still get merged defaults via the default_factory.
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):  # cross-field rules of a section (lag + hop <= window, say)
        try:
            check()
        except ValueError as err:
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(f"{where or 'config'}: {err}") from None
    return obj


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain YAML/JSON-able data (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a YAML mapping with ``safe_load`` (never constructs Python objects)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"config file {str(p)!r} is not valid YAML{at}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of sections, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=3e-4"`` -> (["train", "lr"], 0.0003). The value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value (e.g. train.lr=3e-4)")
    key, raw = text.split("=", 1)
    keys = [k.strip() for k in key.strip().split(".")]
    if not all(keys):
        raise ConfigError(f"override {text!r} has an empty key part; expected key.sub=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # an unparsable value is taken as a plain string; type checking decides
    if isinstance(value, float) or value is None or isinstance(value, (int, bool)):
        pass
    elif isinstance(value, str) and _looks_numeric(raw.strip()):
        value = float(raw.strip())  # YAML 1.1 reads "1e-3" as a string
    return keys, value


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Merge ``key.sub=value`` overrides into the nested mapping ``data`` (copied)."""
    import copy

    out = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for k in keys[:-1]:
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            elif not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: {k!r} is a value, not a section")
            node = nxt
        node[keys[-1]] = value
    return out


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> T:
    """Defaults of ``cls`` <- ``base`` mapping <- YAML file ``path`` <- ``overrides``."""
    data: dict[str, Any] = {}
    if base:
        data = deep_merge(data, base)
    if path is not None:
        data = deep_merge(data, read_yaml(path))
    data = apply_overrides(data, list(overrides or []))
    return from_dict(cls, data)


def deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``b`` merged into a copy of ``a``; nested mappings merge key by key."""
    out = dict(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def dump_yaml(cfg: Any, path: str | Path) -> None:
    """Write the resolved config (every key, defaults included) as YAML."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


__all__ = [
    "AppConfig", "ConfigError", "RunConfig", "TrainConfig", "apply_overrides", "bounded", "deep_merge",
    "describe_fields", "dump_yaml", "from_dict", "load_config", "parse_override", "read_yaml", "to_dict",
]
