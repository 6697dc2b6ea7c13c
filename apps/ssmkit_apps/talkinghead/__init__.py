"""Talking-head video diffusion (ACTalker): parallel Mamba control branches for audio and expression.

``audio.py`` (speech sources, reading, articulation, mel features), ``face.py`` (the embedded
faces), ``videoio.py`` (mp4/wav/CSV files), ``data.py`` (datasets and loaders), ``control.py``
(the parallel-control Mamba), ``model.py`` (the spatio-temporal UNet), ``diffusion.py``
(diffusers schedulers, loss, guided sampling), ``metrics.py``, ``app.py`` (``ssmkit talkinghead``),
``study.py`` (ablations), ``report.py`` (frame strips, plots) and ``bench.py``.
"""
