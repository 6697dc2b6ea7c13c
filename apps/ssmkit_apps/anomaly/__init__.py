"""Time-series anomaly detection: MAAT (Mamba Adaptive Anomaly Transformer), deep baselines and
strong simple detectors.

The app's files follow the shape every ssmkit app has (docs/architecture.md, "How to add an
app"): ``data.py`` (loaders, embedded generators, windows), ``model.py`` (the deep detectors),
``detectors.py`` (rolling median, first difference, z-score, POLY, matrix profile,
sub-sequence PCA) and ``forest.py`` (IsolationForest), ``losses.py``, ``metrics.py`` (F1, AUC-PR,
VUS as TSB-AD computes it, affiliation), ``app.py`` (the ``ssmkit anomaly`` commands),
``configs/``; plus ``scoring.py`` (batch and streaming scores), ``inference.py`` (``infer``),
``cli_helpers.py`` (guessed config keys), ``report.py`` (plots, tables), ``compare.py``
(side-by-side evaluation), ``devstudy.py`` (settings chosen on development seeds) and
``bench.py`` (``ssmkit bench anomaly``).
"""
