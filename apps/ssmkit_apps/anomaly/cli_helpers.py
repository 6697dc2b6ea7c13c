"""Config keys people commonly guess for ``ssmkit anomaly``, and the key each means.

``--set data.train_csv=...`` is refused with the real key (``data.train_file``) before the config
loader's generic closest-name suggestion can point elsewhere (``App.config_aliases``).
"""

from __future__ import annotations

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
