"""Command-line conveniences of ``ssmkit anomaly``, hooked into the engine's parsers.

- ``--config NAME`` resolves to the app's packaged ``configs/NAME.yaml`` (``--config
  rolling_median``), from any folder; a path to a YAML file works as before.
- ``--set KEY=VALUE`` with a key people commonly guess (``data.train_csv``) names the real key
  (``data.train_file``) before the config loader's generic suggestion can point elsewhere.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# Keys users reach for, and the config key that means it.
ALIASES = {
    "data.train_csv": "data.train_file",
    "data.test_csv": "data.test_file",
    "data.train": "data.train_file",
    "data.test": "data.test_file",
    "data.file": "data.test_file",
    "data.path": "data.test_file",
    "data.folder": "data.root",
    "data.dir": "data.root",
    "data.label": "data.label_column",
    "data.labels": "data.label_column",
    "data.timestamp": "data.timestamp_column",
    "data.n_rows": "data.train_rows",
    "model": "model.name",
    "model.type": "model.name",
    "model.model": "model.name",
    "model.detector": "model.name",
    "score.threshold": "score.percentile",
    "train.lr_rate": "train.lr",
    "train.steps": "train.max_steps",
}


def packaged_configs(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def config_resolver(folder: Path):
    """An argparse ``type`` for ``--config``: an existing file, else ``folder/NAME.yaml``."""

    def resolve(text: str) -> str:
        p = Path(text).expanduser()
        if p.is_file():
            return str(p)
        stem = p.name[:-5] if p.name.endswith(".yaml") else p.name
        cand = folder / f"{stem}.yaml"
        if p.parent in (Path("."), Path("configs")) and cand.is_file():
            return str(cand)
        raise argparse.ArgumentTypeError(
            f"no config file {text!r}; give a YAML path or one of the packaged configs: "
            f"{', '.join(packaged_configs(folder))}"
        )

    return resolve


def check_override(text: str) -> str:
    """An argparse ``type`` for ``--set``: refuse a guessed key with the key it means."""
    key = text.split("=", 1)[0].strip()
    if key in ALIASES:
        raise argparse.ArgumentTypeError(
            f"{key!r} is not a config key; did you mean {ALIASES[key]!r}? (ssmkit anomaly train --help lists every key)"
        )
    return text


def hook_arguments(parser: argparse.ArgumentParser, configs: Path) -> None:
    """Give the engine's ``--config`` and ``--set`` flags of ``parser`` the resolvers above."""
    for action in parser._actions:  # argparse keeps its actions here; types apply at parse time
        if "--config" in action.option_strings:
            action.type = config_resolver(configs)
            action.metavar = "NAME|FILE"
            action.help = (
                f"a packaged config by name ({', '.join(packaged_configs(configs))}) or a YAML file, "
                "merged over configs/default.yaml"
            )
        elif "--set" in action.option_strings:
            action.type = check_override
