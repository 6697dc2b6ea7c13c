"""``ssmkit anomaly``: time-series anomaly detection (MAAT, deep baselines, simple detectors).

    ssmkit anomaly train [--config NAME] [--set model.name=rolling_median] [--set data.source=...]
    ssmkit anomaly evaluate --run runs/anomaly/ID [--split test] [--set data.test_file=OTHER.csv]
    ssmkit anomaly infer FILE.csv --run runs/anomaly/ID --out scores.csv [--overwrite]
    ssmkit anomaly infer --stream --run runs/anomaly/ID  < rows.csv
    ssmkit anomaly demo

``--config NAME`` finds the app's packaged ``configs/NAME.yaml`` (``--config rolling_median``,
``--config isolation_forest``); a path to any YAML file works too.

Protocol (the evaluation protocol of docs/design.md): the scaler is fitted on train, the
threshold on validation scores (percentile, or best F1 when validation labels exist), the
checkpoint is chosen by validation loss. The score settings (section ``score``) were chosen on
development seeds of the generator (devstudy.py), never on the official seed 0. Test labels
are only read to compute the reported metrics.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ssmkit.engine.app import App, DataError, EvalContext, StepContext
from ssmkit.engine.config import AppConfig, ConfigError, bounded, to_dict
from ssmkit.registry import create_model, register_app, select_kwargs
from ssmkit_apps.anomaly import data as D
from ssmkit_apps.anomaly import detectors as _detectors  # noqa: F401  (registers the simple detectors)
from ssmkit_apps.anomaly import metrics as M
from ssmkit_apps.anomaly.cli_helpers import ALIASES
from ssmkit_apps.anomaly.inference import infer_file, infer_stream, range_report
from ssmkit_apps.anomaly.losses import minimax_losses
from ssmkit_apps.anomaly.scoring import channel_error_scale, score_series, window_plan

DEEP_MODELS = ("maat", "anomaly_transformer", "mamba_recon")
SIMPLE_MODELS = ("rolling_median", "first_difference", "zscore", "poly", "matrix_profile", "sub_pca")
ModelName = Literal[
    "maat",
    "anomaly_transformer",
    "mamba_recon",
    "isolation_forest",
    "rolling_median",
    "first_difference",
    "zscore",
    "poly",
    "matrix_profile",
    "sub_pca",
]


@dataclass
class DataConfig:
    """Which series to use. ``source`` picks a loader; see data/anomaly.md for each layout."""

    source: Literal["synthetic", "seasonal_trend", "npy", "psm", "swat", "timeeval", "csv", "internal_bleeding16"] = (
        "synthetic"
    )
    root: str = bounded("", doc="npy and psm: the folder")
    name: str = bounded("", doc="npy: SMD | MSL | SMAP")
    train_file: str = bounded("", doc="swat, timeeval, csv: normal training data")
    test_file: str = bounded("", doc="swat, timeeval, csv: the labelled test file")
    train_rows: int = bounded(0, ge=0, doc="timeeval without train_file: the first rows of test_file are training data")
    label_column: str = "is_anomaly"  # csv
    timestamp_column: str = ""  # csv: a column to ignore
    nan_policy: Literal["interpolate", "reject"] = "interpolate"
    val_fraction: float = bounded(0.2, gt=0, lt=1, doc="the last share of train kept for validation")
    channels: int = bounded(16, ge=1, le=1024, doc="synthetic")
    n_train: int = bounded(4000, ge=64, doc="synthetic, seasonal_trend")
    n_val: int = bounded(1000, ge=64)
    n_test: int = bounded(4000, ge=64)
    data_seed: int = bounded(0, doc="synthetic, seasonal_trend: fixes the series and its split")
    train_stride: int = bounded(1, ge=1, doc="stride of the training windows")


@dataclass
class ModelConfig:
    """One flat section for every detector; each registered model takes the keys it knows."""

    name: ModelName = "maat"
    n_channels: int = bounded(0, ge=0, doc="0: from the data; written into the run's config.yaml at training")
    window: int = bounded(64, ge=2)
    d_model: int = bounded(64, ge=1)
    n_heads: int = bounded(4, ge=1)
    n_layers: int = bounded(2, ge=1)
    d_ff: int = bounded(128, ge=1)
    dropout: float = bounded(0.0, ge=0, lt=1)
    sparse_block: int = bounded(0, ge=0, doc="> 0 switches block-sparse attention on")
    sparse_reach: int = bounded(1, ge=0)
    n_global: int = bounded(0, ge=0)
    mamba_layers: int = bounded(2, ge=0)
    d_state: int = bounded(16, ge=1)
    backend: str = "auto"
    bidirectional: bool = False
    temperature: float = bounded(1.0, gt=0)
    forecast: bool = False  # maat: a one-step forecasting head on the Mamba path (see model.MAAT)
    instance_norm: Literal["none", "mean", "meanstd"] = "none"  # deep models: reversible per-window normalisation
    n_estimators: int = bounded(100, ge=1, doc="isolation_forest")
    max_samples: int = bounded(256, ge=2, doc="isolation_forest")
    poly_degree: int = bounded(3, ge=0, le=10, doc="poly")
    pca_variance: float = bounded(0.9, gt=0, le=1, doc="sub_pca: variance share of the kept axes")
    reference_rows: int = bounded(4096, ge=2, doc="matrix_profile: training rows kept as reference")


@dataclass
class ScoreConfig:
    k: float = bounded(3.0, ge=0, doc="weight of the association discrepancy in the minimax losses")
    hop: int = bounded(0, ge=0, doc="rows between scored windows; 0: the window length")
    lag: int = bounded(0, ge=0, doc="emit each window's scores this many rows before its right edge")
    percentile: float = bounded(99.0, gt=0, lt=100, doc="threshold = this percentile of validation scores")
    # The score definition (model.combine_scores): association weighting, channel reduction
    # (mean | max | top4), per-channel normalisation by the validation error, moving average width.
    assoc: bool = True
    channels: Literal["mean", "max", "top4"] = "mean"
    normalize: bool = False
    smooth: int = bounded(1, ge=1, doc="odd width of a centred moving average")
    forecast_weight: float = bounded(0.0, ge=0, doc="maat with model.forecast: weight of the forecast error")
    vus_max_buffer: int = bounded(100, ge=0, doc="VUS: buffers 0..this (TSB-AD's slidingWindow)")
    ucr_margin: int = bounded(100, ge=0)
    plots: bool = True

    def validate(self) -> None:
        if self.smooth % 2 == 0:
            raise ValueError(f"score.smooth={self.smooth} must be odd (a centred moving average)")


@dataclass
class AnomalyConfig(AppConfig):
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)


class SeriesWindows(D.WindowDataset):
    """Windows of one standardised split, plus what evaluation needs: the series and labels."""

    def __init__(
        self,
        series: np.ndarray,
        window: int,
        stride: int,
        labels: np.ndarray | None,
        raw: np.ndarray,
        name: str,
        source: str,
    ) -> None:
        super().__init__(series, window, stride, source=source)
        self.normalized, self.labels, self.raw, self.name = series, labels, raw, name


PATH_KEYS = ("root", "train_file", "test_file")


def absolute_paths(cfg: DataConfig) -> None:
    """Store the data paths absolute, so a run evaluates from any folder."""
    for key in PATH_KEYS:
        value = getattr(cfg, key)
        if value:
            setattr(cfg, key, str(Path(value).expanduser().resolve()))


def load_split(cfg: DataConfig) -> D.SeriesSplit:
    """The configured data as a SeriesSplit (raises DataError with the expected layout)."""
    kw = dict(val_fraction=cfg.val_fraction)
    if cfg.source == "synthetic":
        return D.make_synthetic(cfg.channels, cfg.n_train, cfg.n_val, cfg.n_test, seed=cfg.data_seed)
    if cfg.source == "seasonal_trend":
        return D.make_seasonal_trend(cfg.n_train, cfg.n_val, cfg.n_test, seed=cfg.data_seed)
    if cfg.source == "internal_bleeding16":
        return D.load_internal_bleeding16(**kw)
    kw["nan_policy"] = cfg.nan_policy
    if cfg.source == "npy":
        if not cfg.root or not cfg.name:
            raise DataError(
                "data.source=npy needs data.root=FOLDER and data.name=SMD|MSL|SMAP. Expected layout:\n"
                "  FOLDER/<NAME>_train.npy  [T, C]\n  FOLDER/<NAME>_test.npy  [T, C]\n"
                "  FOLDER/<NAME>_test_label.npy  [T]"
            )
        return D.load_npy_benchmark(cfg.root, cfg.name, **kw)
    if cfg.source == "psm":
        if not cfg.root:
            raise DataError(
                "data.source=psm needs data.root=FOLDER. Expected layout:\n"
                "  FOLDER/train.csv  FOLDER/test.csv  FOLDER/test_label.csv"
            )
        return D.load_psm(cfg.root, **kw)
    if not cfg.test_file:
        raise DataError(f"data.source={cfg.source} needs data.test_file=FILE.csv (see data/anomaly.md)")
    if cfg.source == "swat":
        if not cfg.train_file:
            raise DataError("data.source=swat needs data.train_file=NORMAL.csv beside data.test_file")
        return D.load_swat(cfg.train_file, cfg.test_file, **kw)
    if cfg.source == "timeeval":
        return D.load_timeeval(cfg.test_file, cfg.train_file or None, train_rows=cfg.train_rows or None, **kw)
    # csv: a train file of normal data without labels, a test file with the label column
    if not cfg.train_file:
        raise DataError(
            "data.source=csv needs data.train_file=NORMAL.csv (unlabelled normal data) beside data.test_file"
        )
    ts = cfg.timestamp_column or None
    train, _, cols = D.load_labelled_csv(
        cfg.train_file, label_column=None, timestamp_column=ts, nan_policy=cfg.nan_policy
    )
    if cfg.label_column in cols:
        raise DataError(
            f"{cfg.train_file}: holds the label column {cfg.label_column!r} (data.label_column); training "
            "data must be unlabelled normal data, or use data.source=timeeval"
        )
    test, labels, test_cols = D.load_labelled_csv(
        cfg.test_file, label_column=cfg.label_column, timestamp_column=ts, nan_policy=cfg.nan_policy
    )
    if test_cols != cols:
        raise DataError(f"{cfg.test_file}: value columns {test_cols} differ from {cfg.train_file} {cols}")
    tr, va = D.split_validation(train, cfg.val_fraction)
    return D.SeriesSplit(
        Path(cfg.test_file).stem,
        tr,
        va,
        test,
        labels,
        channels=cols,
        source=cfg.test_file,
        test_index=D.integer_timestamps(cfg.test_file, ts) if ts else None,
    )


@register_app("anomaly")
class AnomalyApp(App):
    """time-series anomaly detection: MAAT vs deep baselines and strong simple detectors"""

    # Set here, not only by the CLI's registry lookup, so runs started from Python (compare.py,
    # devstudy.py, tests) land in <run.root>/anomaly/<id>/ like CLI runs.
    name = "anomaly"
    config_class = AnomalyConfig
    primary_metric = "rec_loss"
    higher_is_better = False
    demo_overrides = ["train.epochs=3"]
    config_aliases = ALIASES

    def __init__(self, cfg: AnomalyConfig):
        super().__init__(cfg)
        absolute_paths(cfg.data)
        self._split: D.SeriesSplit | None = None
        self._scaler: D.Scaler | None = None
        self.state: dict[str, Any] = {}  # what training stored (load_run_state)

    # ------------------------------------------------------------------------ data
    @property
    def split(self) -> D.SeriesSplit:
        if self._split is None:
            self._split = load_split(self.cfg.data)
            self._scaler = D.Scaler.fit(self._split.train)
        return self._split

    @property
    def hop(self) -> int:
        return self.cfg.score.hop or self.cfg.model.window

    def build_dataset(self, split: str) -> SeriesWindows:
        s, w = self.split, self.cfg.model.window
        if split == "train":
            raw, labels, stride = s.train, None, self.cfg.data.train_stride
        elif split == "val":
            raw, labels, stride = s.val, s.val_labels, w
        elif split == "test":
            raw, labels, stride = s.test, s.test_labels, w
        else:
            raise DataError(f"unknown split {split!r}; expected train, val or test")
        return SeriesWindows(self._scaler(raw), w, stride, labels, raw, s.name, f"{s.name} {split} split")

    def run_state(self) -> dict[str, Any]:
        """The facts inference checks: the trained columns, the training range, the data section."""
        s = self.split
        both = np.concatenate([s.train, s.val])
        return {
            "columns": list(s.channels),
            "n_channels": s.n_channels,
            "train_min": both.min(0).tolist(),
            "train_max": both.max(0).tolist(),
            "data": to_dict(self.cfg.data),
        }

    def load_run_state(self, state: dict[str, Any]) -> None:
        self.state = dict(state)

    def result_tag(self, split: str) -> str:
        """``split`` for the run's own data; ``<split>-<file stem>`` (or a digest of the data
        section) when evaluating other data, so the run's own results are never overwritten."""
        own = self.state.get("data")
        now = to_dict(self.cfg.data)
        if own is None or own == now:
            return split
        stem = Path(now["test_file"]).stem if now.get("test_file") else now["source"]
        if Path(own.get("test_file") or own.get("source", "")).stem == stem or stem == own.get("source"):
            stem += "-" + hashlib.sha256(json.dumps(now, sort_keys=True).encode()).hexdigest()[:8]
        return f"{split}-{stem}"

    # ----------------------------------------------------------------------- model
    def model_options(self) -> dict[str, Any]:
        """Every model key plus the score settings, as the registered models name them; each
        model picks its own (``select_kwargs``)."""
        m, sc = self.cfg.model, self.cfg.score
        opts = {f.name: getattr(m, f.name) for f in dataclasses.fields(m) if f.name not in ("name", "n_channels")}
        opts.update(
            score_assoc=sc.assoc,
            score_channels=sc.channels,
            score_normalize=sc.normalize,
            score_smooth=sc.smooth,
            score_forecast=sc.forecast_weight,
            seed=self.cfg.seed,
        )
        return opts

    def build_model(self) -> torch.nn.Module:
        m = self.cfg.model
        try:
            split = self.split
        except DataError:
            if m.n_channels <= 0:
                raise
            split = None  # inference on a new file: the checkpoint brings channels and scaler
        if split is not None:
            if m.n_channels <= 0:
                m.n_channels = split.n_channels  # persisted: the trainer writes config.yaml after this
            elif m.n_channels != split.n_channels:
                raise DataError(
                    f"{split.source or split.name}: the data has {split.n_channels} channels but "
                    f"model.n_channels={m.n_channels} (the checkpoint's); use data with the same channels"
                )
        try:
            window_plan(m.window, m.window, self.hop, self.cfg.score.lag)
        except ValueError:
            raise ConfigError(
                f"score.hop={self.cfg.score.hop} and score.lag={self.cfg.score.lag} must satisfy "
                f"1 <= hop and lag + hop <= model.window={m.window} (hop 0 means the window)"
            ) from None
        if m.name == "maat" and self.cfg.score.forecast_weight > 0 and not m.forecast:
            raise ConfigError(
                f"score.forecast_weight={self.cfg.score.forecast_weight} scores the forecast error of "
                "MAAT's forecasting head, but model.forecast=false; set score.forecast_weight=0 too"
            )
        try:
            model = create_model(
                m.name, n_channels=m.n_channels, **select_kwargs("model", m.name, self.model_options())
            )
        except ValueError as err:
            raise ConfigError(f"model.name={m.name}: {err}") from None
        if split is not None:
            model.set_scaler(self._scaler.mean, self._scaler.std)
        return model

    def configure_optimizers(self, model):
        if not getattr(model, "trainable", True):
            # Nothing to optimise; the engine still wants an optimizer to checkpoint.
            return {"main": torch.optim.SGD(list(model.parameters()), lr=0.0)}
        return super().configure_optimizers(model)

    def train_step(self, ctx: StepContext, batch: torch.Tensor) -> dict:
        model = ctx.model
        core = getattr(model, "module", model)
        if not core.trainable:
            if not core.fitted:  # one pass over the training series, on the first step
                core.fit_series(self._scaler(self.split.train), stride=self.cfg.data.train_stride)
            return {"fitted": 1.0}
        with ctx.autocast():
            out = model(batch)
        series_loss, prior_loss, logs = minimax_losses(out, batch, self.cfg.score.k)
        # The series phase and the prior phase each push their own side of the discrepancy
        # (stop-gradients inside the losses); their gradients add up before one step. Under DDP
        # one backward of the sum: its reducer marks each parameter ready once per forward, and
        # the series loss leaves some parameters without a gradient. One process keeps the two
        # passes (the same gradients; this summation order is what the published runs used).
        if core is not model:
            ctx.backward(series_loss + prior_loss)
        else:
            ctx.backward(series_loss, retain_graph=True)
            ctx.backward(prior_loss)
        ctx.step()
        return {"loss": (series_loss + prior_loss).detach(), **logs}

    # ------------------------------------------------------------------ evaluation
    def scores(self, model, normalized: np.ndarray, ctx: EvalContext) -> np.ndarray:
        bs = self.cfg.train.eval_batch_size or self.cfg.train.batch_size
        return score_series(
            model,
            normalized,
            self.hop,
            lag=self.cfg.score.lag,
            batch_size=bs,
            device=ctx.device,
            amp_dtype=ctx.amp_dtype,
            normalized=True,
        )

    @torch.no_grad()
    def reconstruction_loss(self, model, normalized: np.ndarray, ctx: EvalContext) -> float:
        if not getattr(model, "trainable", True) or self.cfg.model.name == "isolation_forest":
            return float("nan")
        w = model.window
        x = torch.from_numpy(normalized)
        wins = torch.stack([x[s : s + w] for s, _, _ in window_plan(len(x), w, w)]).to(ctx.device)
        with ctx.autocast():
            out = model(wins)
        loss = (out["recon"].float() - wins).pow(2).mean()
        if "forecast" in out:  # the same objective as training (losses.minimax_losses)
            loss = loss + (out["forecast"][:, :-1].float() - wins[:, 1:]).pow(2).mean()
        return float(loss)

    def evaluate(self, model, loader, ctx: EvalContext) -> dict[str, float]:
        ds: SeriesWindows = loader.dataset
        name = self.cfg.model.name
        if ctx.split != "test" and self.cfg.score.normalize and name in DEEP_MODELS:
            # Validation fixes the per-channel error scale before its scores set the threshold.
            bs = self.cfg.train.eval_batch_size or self.cfg.train.batch_size
            rec_scale, fc_scale = channel_error_scale(
                model, ds.normalized, self.hop, lag=self.cfg.score.lag, batch_size=bs, device=ctx.device
            )
            getattr(model, "module", model).set_err_scale(rec_scale, fc_scale)
        scores = self.scores(model, ds.normalized, ctx)
        M.require_finite_scores(scores, f"{ds.name} {ctx.split} split")
        if ctx.split != "test":
            # Validation (normal data, or labelled where the benchmark has validation labels)
            # sets the threshold that every later test or stream uses.
            thr = M.fit_threshold(scores, percentile=self.cfg.score.percentile, val_labels=ds.labels)
            model.threshold.fill_(thr)
            out = {"threshold": thr, "val_score_mean": float(scores.mean())}
            rec = self.reconstruction_loss(model, ds.normalized, ctx)
            if math.isfinite(rec):
                out["rec_loss"] = rec
            return out
        thr = float(model.threshold)
        if math.isnan(thr):
            raise DataError(
                "the model has no fitted threshold: evaluate the validation split first "
                "(training does this) before the test split"
            )
        out = M.evaluate_scores(scores, ds.labels, thr, vus_max_buffer=self.cfg.score.vus_max_buffer)
        share, note = range_report(ds.raw, self.state, f"{ds.name} test split")
        if share is not None:
            out["out_of_range"] = share
            if note:
                warnings.warn(note, stacklevel=2)
        if self.cfg.data.source in ("internal_bleeding16", "timeeval") and len(M.segments(ds.labels)) == 1:
            ucr = M.ucr_hit(scores, ds.labels, margin=self.cfg.score.ucr_margin)
            out["ucr_hit"] = float(ucr["hit"])
            out["ucr_argmax"] = self.split.test_position(ucr["argmax"])  # an integer, in the file's own timestamps
        if ctx.run_dir is not None:
            tag = self.result_tag(ctx.split)
            self._write_scores(ctx.run_dir / f"scores_{tag}.csv", scores, ds.labels, thr, self.split.test_index)
            if self.cfg.score.plots and ctx.plots_dir is not None:
                from ssmkit_apps.anomaly.report import plot_series

                plot_series(
                    ds.raw,
                    scores,
                    ds.labels,
                    thr,
                    ctx.plots_dir / f"{ds.name}_{name}_{tag}.png",
                    title=f"{name} on {ds.name} ({tag})",
                )
        return out

    @staticmethod
    def _write_scores(
        path: Path, scores: np.ndarray, labels: np.ndarray | None, thr: float, index: np.ndarray | None = None
    ) -> None:
        import pandas as pd

        from ssmkit.engine.files import atomic_path

        frame = pd.DataFrame(
            {"score": scores, "flag": (scores > thr).astype(int)},
            index=pd.Index(index if index is not None else np.arange(len(scores)), name="index"),
        )
        if labels is not None:
            frame["label"] = labels
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, float_format="%.6g")

    def demo_summary(self, metrics: dict[str, float]) -> str:
        keys = ("f1", "auc_pr", "vus_pr", "pa_f1")
        return ", ".join(f"{k} = {metrics[k]:.3f}" for k in keys if k in metrics)

    @classmethod
    def run_demo(cls, root, overrides=None, verbose: bool = True):
        """The full demo: MAAT, the Anomaly Transformer and the simple detectors side by side on
        the embedded data plus InternalBleeding16 (see compare.py). Returns the engine's DemoResult."""
        import time as _time

        from ssmkit.engine.commands import DemoResult
        from ssmkit_apps.anomaly.compare import run_comparison

        t0 = _time.monotonic()
        out = Path(root) / cls.name
        # The runs go under <root>/anomaly/<id>/ beside the comparison's report.md (run_root=root:
        # the engine adds the app's folder itself, so passing ``out`` would double it).
        res = run_comparison(out, list(overrides or []), verbose=verbose, run_root=root, demo=True)
        syn = res["synthetic"]
        summary = "; ".join(f"{m}: F1 {v['f1']:.3f}, AUC-PR {v['auc_pr']:.3f}" for m, v in syn.items())
        ib = res["internal_bleeding16"].get("maat")
        if ib is not None:
            summary += f"; InternalBleeding16 UCR hit: {'yes' if ib.get('ucr_hit') == 1.0 else 'no'}"
        return DemoResult(cls.name, out, {}, syn.get("maat", {}), summary, _time.monotonic() - t0)

    # ---------------------------------------------------------------------- infer
    @classmethod
    def add_arguments(cls, command: str, parser: argparse.ArgumentParser) -> None:
        if command != "infer":
            return
        parser.add_argument("file", nargs="?", help="CSV to score (value columns; timestamp/label columns are ignored)")
        parser.add_argument(
            "--out",
            help="write index,score,flag here (default: stdout); an existing file needs "
            "--overwrite, and the input is never overwritten",
        )
        parser.add_argument(
            "--stream",
            action="store_true",
            help="read rows from stdin and write each row's score as soon as its window is complete",
        )
        parser.add_argument("--threshold", type=float, help="override the validation-fitted threshold")
        parser.add_argument("--label-column", default="is_anomaly", help="label column to ignore (default: is_anomaly)")
        parser.add_argument("--timestamp-column", default="timestamp", help="column to ignore (default: timestamp)")

    def infer(self, model, args: argparse.Namespace, ctx: EvalContext) -> int:
        weights = args.ckpt or (Path(args.run) / "checkpoints" if args.run else "the weights")
        model.check_buffers(str(weights))
        if args.stream:
            if args.file:
                raise DataError("--stream reads stdin; drop the FILE argument (or drop --stream to score FILE)")
            return infer_stream(self, model, args, ctx)
        if not args.file:
            raise DataError("infer needs FILE.csv (or --stream to read stdin)")
        return infer_file(self, model, args, ctx)
