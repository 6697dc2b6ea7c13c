"""Time-series anomaly detection: MAAT (Mamba Adaptive Anomaly Transformer) and baselines.

The app's files follow the shape every ssmkit app has (DESIGN.md §1):
``data.py`` (loaders, embedded generator, windows), ``model.py`` (+ ``forest.py``),
``losses.py``, ``metrics.py``, ``app.py`` (the ``ssmkit anomaly`` commands), ``configs/``;
plus ``scoring.py`` (batch and streaming scores), ``report.py`` (plots, tables),
``compare.py`` (side-by-side evaluation) and ``bench.py`` (``ssmkit bench anomaly``).
"""
