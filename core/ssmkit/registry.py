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

import difflib
import importlib
import pkgutil
from typing import Any, Callable

KINDS = ("app", "model", "scan", "block", "dataset", "bench")

# Packages whose submodules are imported (recursively) before a registry is read.
_DISCOVER = {
    "scan": ["ssmkit.scans"],
    "block": ["ssmkit.layers"],
    "model": ["ssmkit.layers", "ssmkit_apps"],
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


def _import_tree(package: str) -> None:
    try:
        pkg = importlib.import_module(package)
    except ModuleNotFoundError as err:
        if err.name == package or package.startswith(str(err.name)):
            return  # an optional package (e.g. the apps) is not installed
        raise
    for info in pkgutil.walk_packages(getattr(pkg, "__path__", []), prefix=package + "."):
        leaf = info.name.rsplit(".", 1)[-1]
        if leaf.startswith("_") or leaf.startswith("triton_"):
            continue  # private modules and GPU kernels register nothing
        importlib.import_module(info.name)


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
        raise ValueError(unknown_name_message(kind, name, list(_REGISTRY[kind]))) from None


def create(kind: str, name: str, /, **kwargs: Any) -> Any:
    return get(kind, name)(**kwargs)


def create_block(name: str, /, **kwargs: Any) -> Any:
    return create("block", name, **kwargs)


def create_model(name: str, /, **kwargs: Any) -> Any:
    return create("model", name, **kwargs)


def create_scan(name: str, /, **kwargs: Any) -> Any:
    return create("scan", name, **kwargs)


def list_blocks() -> list[str]:
    return list_registered("block")


def list_models() -> list[str]:
    return list_registered("model")


def list_scans() -> list[str]:
    return list_registered("scan")


def list_apps() -> list[str]:
    return list_registered("app")


def unknown_name_message(kind: str, name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}.{hint} Valid {kind}s: {', '.join(sorted(valid)) or '(none)'}"
