"""Typed configs: YAML + --set overrides, strict keys and types, clear errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from ssmkit.engine.config import (
    AppConfig,
    ConfigError,
    dump_yaml,
    load_config,
    parse_override,
    read_yaml,
    to_dict,
)


@dataclass
class Model:
    width: int = 8
    kind: Literal["a", "b"] = "a"
    dropout: float = 0.0
    sizes: list[int] = field(default_factory=lambda: [1, 2])
    path: str | None = None


@dataclass
class Cfg(AppConfig):
    model: Model = field(default_factory=Model)


def test_defaults_yaml_and_overrides_merge(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("seed: 3\nmodel:\n  width: 16\ntrain:\n  lr: 1.0e-2\n")
    cfg = load_config(Cfg, f, ["model.kind=b", "train.lr=3e-4", "model.sizes=[4, 5]", "model.dropout=1"])
    assert cfg.seed == 3 and cfg.model.width == 16 and cfg.model.kind == "b"
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.model.sizes == [4, 5] and cfg.model.dropout == 1.0 and isinstance(cfg.model.dropout, float)
    assert cfg.train.epochs == 1  # untouched keys keep their defaults
    out = tmp_path / "out.yaml"
    dump_yaml(cfg, out)
    assert load_config(Cfg, out) == cfg  # the saved config reproduces the run


def test_unknown_key_lists_valid_keys_and_suggests():
    with pytest.raises(ConfigError) as e:
        load_config(Cfg, None, ["model.widht=3"])
    msg = str(e.value)
    assert "'model.widht'" in msg and "Did you mean 'width'" in msg
    assert "width, kind, dropout, sizes, path" in msg
    with pytest.raises(ConfigError, match="Valid keys here: seed, train, run, model"):
        load_config(Cfg, None, ["modle.width=3"])


@pytest.mark.parametrize("override, expect", [
    ("model.width=abc", "model.width: expected int, got 'abc'"),
    ("model.width=2.5", "expected int"),
    ("model.width=true", "expected int"),  # a bool is not an int here
    ("model.kind=c", "expected 'a' | 'b'"),
    ("train.deterministic=1", "expected bool"),
    ("model.sizes=[1, x]", r"model.sizes\[1\]: expected int"),
    ("model=3", "expected a mapping"),
])
def test_bad_types_are_rejected(override, expect):
    with pytest.raises(ConfigError, match=expect):
        load_config(Cfg, None, [override])


def test_optional_and_null():
    assert load_config(Cfg, None, ["model.path=null"]).model.path is None
    assert load_config(Cfg, None, ["model.path=/x"]).model.path == "/x"


def test_invalid_yaml_reports_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train:\n  lr: 0.1\n  epochs: [1, 2\nseed: 1\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML at line \d+, column \d+"):
        read_yaml(f)
    g = tmp_path / "list.yaml"
    g.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        read_yaml(g)
    with pytest.raises(ConfigError, match="does not exist"):
        read_yaml(tmp_path / "nope.yaml")


def test_yaml_never_builds_python_objects(tmp_path):
    f = tmp_path / "evil.yaml"
    f.write_text("seed: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_yaml(f)


def test_override_syntax():
    assert parse_override("a.b=1e-3") == (["a", "b"], 1e-3)
    assert parse_override("a=hello world") == (["a"], "hello world")
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        parse_override("train.lr")
    with pytest.raises(ConfigError, match="empty key"):
        parse_override("train..lr=1")
    with pytest.raises(ConfigError, match="is a value, not a section"):
        load_config(Cfg, None, ["seed.x=1"], base={"seed": 1})
    with pytest.raises(ConfigError, match="seed: expected int"):
        load_config(Cfg, None, ["seed.x=1"])


def test_to_dict_is_plain():
    d = to_dict(load_config(Cfg))
    assert d["model"]["sizes"] == [1, 2] and d["train"]["schedule"] == "cosine"


def test_register_app_names_the_class(monkeypatch):
    # Run directories use App.name: an app reached by import (not through the CLI lookup) must
    # still carry its registered name, unless the class sets its own.
    from ssmkit import registry
    from ssmkit.engine.app import App

    registry.list_registered("app")  # discover first: discovery into the patched copy would be lost
    monkeypatch.setattr(registry, "_REGISTRY", {k: dict(v) for k, v in registry._REGISTRY.items()})

    @registry.register_app("named_by_registry")
    class Unnamed(App):
        pass

    @registry.register_app("registry_name")
    class SelfNamed(App):
        name = "own_name"

    assert Unnamed.name == "named_by_registry"
    assert SelfNamed.name == "own_name"
    assert registry.get("app", "named_by_registry") is Unnamed
