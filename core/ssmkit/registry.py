"""One registry seam for apps, models, scan strategies, blocks, datasets and benchmarks.

Every kind of pluggable thing is registered with ``register(kind, name)`` (or the typed
helpers ``register_block`` etc.), created with ``create(kind, name, **kw)`` and listed with
``list_registered(kind)``. Tests parametrize over these lists, so whatever is registered is
tested.

Registration happens when a module is imported. To keep ``import ssmkit`` free of side effects
and to let a new app be "a new folder, nothing else changes", the packages that hold
registrable things are imported lazily, the first time a registry is queried.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from typing import Any

from ssmkit._checks import unknown_name
from ssmkit.errors import MissingExtraError

KINDS = ("app", "model", "scan", "block", "dataset", "bench")

# Packages whose submodules are imported (recursively) before a registry is read.
_DISCOVER = {
    "scan": ["ssmkit.scans"],
    "block": ["ssmkit.layers"],
    "model": ["ssmkit.layers", "ssmkit.models", "ssmkit_apps"],
    "app": ["ssmkit_apps"],
    "dataset": ["ssmkit_apps"],
    "bench": ["ssmkit.bench", "ssmkit_apps"],
}

_REGISTRY: dict[str, dict[str, Any]] = {k: {} for k in KINDS}
_DISCOVERED: set[str] = set()


def _check_kind(kind: str) -> None:
    if kind not in _REGISTRY:
        raise ValueError(f"unknown registry kind {kind!r}; expected one of {list(KINDS)}")


def register(kind: str, name: str | None = None) -> Callable[[Any], Any]:
    """Decorator: register ``obj`` under ``name`` (default: ``obj.__name__``) in ``kind``."""
    _check_kind(kind)

    def deco(obj: Any) -> Any:
        key = name or getattr(obj, "name", None) or obj.__name__
        existing = _REGISTRY[kind].get(key)
        if existing is not None and existing is not obj:
            same_origin = (getattr(existing, "__module__", None), getattr(existing, "__qualname__", None)) == (
                getattr(obj, "__module__", None),
                getattr(obj, "__qualname__", None),
            )
            if not same_origin:  # a module reloaded re-registers itself; a real clash is an error
                raise ValueError(f"{kind} {key!r} is already registered by {existing!r}")
        _REGISTRY[kind][key] = obj
        return obj

    return deco


def register_block(name: str | None = None):
    return register("block", name)


def register_scan(name: str | None = None):
    return register("scan", name)


def register_model(name: str | None = None):
    return register("model", name)


def register_app(name: str | None = None):
    """Register an App class; it also gets ``name`` as its ``name`` attribute unless it sets one,
    so run directories and messages name the app however the class is reached (CLI or import)."""
    inner = register("app", name)

    def deco(cls: Any) -> Any:
        if name and isinstance(cls, type) and not cls.__dict__.get("name"):
            cls.name = name
        return inner(cls)

    return deco


def register_dataset(name: str | None = None):
    return register("dataset", name)


def register_bench(name: str | None = None):
    return register("bench", name)


# Modules that could not be imported because an optional third-party package is missing:
# module name -> the missing package. ``get`` turns an unknown name into "install ssmkit[<extra>]".
_MISSING: dict[str, str] = {}
_OWN_PACKAGES = ("ssmkit", "ssmkit_apps")


def _import_tree(package: str) -> None:
    try:
        pkg = importlib.import_module(package)
    except ModuleNotFoundError as err:
        if err.name == package or package.startswith(str(err.name)):
            return  # an optional package (e.g. the apps) is not installed
        raise
    for info in pkgutil.walk_packages(getattr(pkg, "__path__", []), prefix=package + ".",
                                      onerror=lambda name: None):
        leaf = info.name.rsplit(".", 1)[-1]
        if leaf.startswith("_") or leaf.startswith("triton_"):
            continue  # private modules and GPU kernels register nothing
        try:
            importlib.import_module(info.name)
        except ModuleNotFoundError as err:
            top = str(err.name).split(".")[0]
            if top in _OWN_PACKAGES:
                raise  # a broken import inside ssmkit is a bug, not a missing extra
            _MISSING[info.name] = str(err.name)


def missing_extra(name: str) -> str | None:
    """Why ``name`` (an app or its models) is not registered: the optional package it needs and
    the extra that installs it, or None when nothing is missing for it."""
    for module, missing in sorted(_MISSING.items()):
        parts = module.split(".")
        if name in parts or any(name.startswith(p) for p in parts[1:2]):
            extra = parts[1] if parts[0] == "ssmkit_apps" and len(parts) > 1 else "all"
            return (f"{name!r} needs the optional package {missing!r} (imported by {module}); install it with "
                    f"pip install 'ssmkit[{extra}]'")
    return None


def discover(kind: str) -> None:
    """Import every package that may register things of ``kind`` (once)."""
    _check_kind(kind)
    for package in _DISCOVER[kind]:
        if package not in _DISCOVERED:
            _DISCOVERED.add(package)
            _import_tree(package)


def list_registered(kind: str) -> list[str]:
    discover(kind)
    return sorted(_REGISTRY[kind])


def get(kind: str, name: str) -> Any:
    discover(kind)
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        why = missing_extra(name)
        if why is not None:
            raise MissingExtraError(why) from None
        raise ValueError(unknown_name_message(kind, name, list(_REGISTRY[kind]))) from None


def accepted_kwargs(kind: str, name: str) -> list[str] | None:
    """The keyword arguments the registered ``name`` takes, or None when it takes ``**kwargs``."""
    obj = get(kind, name)
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    params = sig.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def select_kwargs(kind: str, name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``options`` that ``name`` accepts: how an app with one flat model section
    lets each registered model pick its own arguments (no per-model key lists in the app)."""
    accepted = accepted_kwargs(kind, name)
    return dict(options) if accepted is None else {k: v for k, v in options.items() if k in accepted}


def create(kind: str, name: str, /, **kwargs: Any) -> Any:
    """Build the registered ``name`` of ``kind`` with ``kwargs``; an argument it does not take
    raises ValueError naming the closest valid one."""
    obj = get(kind, name)
    accepted = accepted_kwargs(kind, name)
    if accepted is not None:
        for key in kwargs:
            if key not in accepted:
                raise ValueError(f"{kind} {name!r} takes no argument {key!r}." + unknown_name(
                    "argument", key, accepted).split(".", 1)[1])
    return obj(**kwargs)


def create_block(name: str, /, **kwargs: Any) -> Any:
    """A registered block (an ``nn.Module`` that keeps its input's shape) by name.

    >>> import torch
    >>> block = create_block("mamba", d_model=16)
    >>> block(torch.randn(2, 10, 16)).shape
    torch.Size([2, 10, 16])
    """
    return create("block", name, **kwargs)


def create_model(name: str, /, **kwargs: Any) -> Any:
    """A registered model (a full network, an app's or a backbone) by name, timm-style:
    variants are registered functions (``name_tiny``, ``name_small``) that fix their widths
    and pass the rest of ``kwargs`` on."""
    return create("model", name, **kwargs)


def create_scan(name: str, /, **kwargs: Any) -> Any:
    """A registered 2-D/3-D scan strategy by name (``list_scans()`` lists them)."""
    return create("scan", name, **kwargs)


def list_blocks() -> list[str]:
    """Names of every registered block."""
    return list_registered("block")


def list_models() -> list[str]:
    """Names of every registered model."""
    return list_registered("model")


def list_scans() -> list[str]:
    """Names of every registered scan strategy."""
    return list_registered("scan")


def list_apps() -> list[str]:
    """Names of every registered app."""
    return list_registered("app")


def unknown_name_message(kind: str, name: str, valid: list[str]) -> str:
    return unknown_name(kind, name, valid)
