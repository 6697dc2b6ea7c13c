"""``ssmkit anomaly``: time-series anomaly detection (MAAT and baselines) on the engine.

    ssmkit anomaly train [--set model.name=anomaly_transformer] [--config configs/psm.yaml]
    ssmkit anomaly evaluate --run runs/anomaly/ID [--split test]
    ssmkit anomaly infer FILE.csv --run runs/anomaly/ID --out scores.csv
    ssmkit anomaly infer --stream --run runs/anomaly/ID  < rows.csv
    ssmkit anomaly demo

Protocol (DESIGN.md §6): the scaler is fitted on train, the threshold on validation scores
(percentile, or best F1 when validation labels exist), the checkpoint is chosen by validation
loss (reconstruction, plus the forecast loss of MAAT's forecasting head). The score settings
(section ``score``) were chosen on development seeds of the generator (devstudy.py), never on
the official seed 0. Test labels are only read to compute the reported metrics.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ssmkit.engine.app import App, DataError, EvalContext, StepContext
from ssmkit.engine.config import AppConfig
from ssmkit.registry import create_model, register_app
from ssmkit_apps.anomaly import data as D
from ssmkit_apps.anomaly import metrics as M
from ssmkit_apps.anomaly.losses import minimax_losses
from ssmkit_apps.anomaly.scoring import channel_error_scale, score_series, stream, window_plan


@dataclass
class DataConfig:
    """Which series to use. ``source`` picks a loader; see data/anomaly.md for each layout."""

    source: Literal["synthetic", "npy", "psm", "swat", "timeeval", "csv", "internal_bleeding16"] = "synthetic"
    root: str = ""  # npy (with name) and psm: the folder
    name: str = ""  # npy: SMD | MSL | SMAP
    train_file: str = ""  # swat, timeeval, csv
    test_file: str = ""
    train_rows: int = 0  # timeeval without a train file: the first rows of test are training data
    label_column: str = "is_anomaly"  # csv
    timestamp_column: str = ""  # csv: a column to ignore
    nan_policy: Literal["interpolate", "reject"] = "interpolate"
    val_fraction: float = 0.2
    channels: int = 16  # synthetic
    n_train: int = 4000
    n_val: int = 1000
    n_test: int = 4000
    data_seed: int = 0  # synthetic: fixes the series and its train/val/test split
    train_stride: int = 1  # stride of the training windows


@dataclass
class ModelConfig:
    name: Literal["maat", "anomaly_transformer", "mamba_recon", "isolation_forest"] = "maat"
    n_channels: int = 0  # 0: from the data; written into the run's config.yaml at training
    window: int = 64
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 128
    dropout: float = 0.0
    sparse_block: int = 0  # > 0 switches block-sparse attention on
    sparse_reach: int = 1
    n_global: int = 0
    mamba_layers: int = 2
    d_state: int = 16
    backend: str = "auto"
    bidirectional: bool = False
    temperature: float = 1.0
    forecast: bool = False  # maat: a one-step forecasting head on the Mamba path (see model.MAAT)
    n_estimators: int = 100  # isolation_forest
    max_samples: int = 256


@dataclass
class ScoreConfig:
    k: float = 3.0  # weight of the association discrepancy in the minimax losses
    hop: int = 0  # rows between scored windows; 0: the window length (non-overlapping blocks)
    lag: int = 0  # emit each window's scores this many rows before its right edge (lag + hop <= window)
    percentile: float = 99.0  # threshold = this percentile of validation scores (no val labels)
    # The score definition (model.combine_scores): association weighting, channel reduction
    # (mean | max | top4), per-channel normalisation by the validation error, moving average width.
    assoc: bool = True
    channels: Literal["mean", "max", "top4"] = "mean"
    normalize: bool = False
    smooth: int = 1
    forecast_weight: float = 0.0  # maat with model.forecast: weight of the forecast error in the score
    vus_max_buffer: int = 100
    ucr_margin: int = 100
    plots: bool = True


@dataclass
class AnomalyConfig(AppConfig):
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)


class SeriesWindows(D.WindowDataset):
    """Windows of one standardised split, plus what evaluation needs: the series and labels."""

    def __init__(self, series: np.ndarray, window: int, stride: int, labels: np.ndarray | None,
                 raw: np.ndarray, name: str, source: str) -> None:
        super().__init__(series, window, stride, source=source)
        self.normalized, self.labels, self.raw, self.name = series, labels, raw, name


def load_split(cfg: DataConfig) -> D.SeriesSplit:
    """The configured data as a SeriesSplit (raises DataError with the expected layout)."""
    kw = dict(val_fraction=cfg.val_fraction)
    try:
        if cfg.source == "synthetic":
            return D.make_synthetic(cfg.channels, cfg.n_train, cfg.n_val, cfg.n_test, seed=cfg.data_seed)
        if cfg.source == "internal_bleeding16":
            return D.load_internal_bleeding16(**kw)
        kw["nan_policy"] = cfg.nan_policy
        if cfg.source == "npy":
            if not cfg.root or not cfg.name:
                raise DataError("data.source=npy needs data.root=FOLDER and data.name=SMD|MSL|SMAP. Expected layout:\n"
                                "  FOLDER/<NAME>_train.npy  [T, C]\n  FOLDER/<NAME>_test.npy  [T, C]\n"
                                "  FOLDER/<NAME>_test_label.npy  [T]")
            return D.load_npy_benchmark(cfg.root, cfg.name, **kw)
        if cfg.source == "psm":
            if not cfg.root:
                raise DataError("data.source=psm needs data.root=FOLDER. Expected layout:\n"
                                "  FOLDER/train.csv  FOLDER/test.csv  FOLDER/test_label.csv")
            return D.load_psm(cfg.root, **kw)
        if not cfg.test_file:
            raise DataError(f"data.source={cfg.source} needs data.test_file=FILE.csv (see data/anomaly.md)")
        if cfg.source == "swat":
            return D.load_swat(cfg.train_file, cfg.test_file, **kw)
        if cfg.source == "timeeval":
            return D.load_timeeval(cfg.test_file, cfg.train_file or None, train_rows=cfg.train_rows or None, **kw)
        # csv: a train file of normal data without labels, a test file with the label column
        train, _, cols = D.load_labelled_csv(cfg.train_file, label_column=None,
                                             timestamp_column=cfg.timestamp_column or None, nan_policy=cfg.nan_policy)
        if cfg.label_column in cols:
            raise DataError(f"{cfg.train_file}: holds the label column {cfg.label_column!r}; training data must be unlabelled "
                            "normal data, or use data.source=timeeval")
        test, labels, test_cols = D.load_labelled_csv(cfg.test_file, label_column=cfg.label_column,
                                                      timestamp_column=cfg.timestamp_column or None, nan_policy=cfg.nan_policy)
        if test_cols != cols:
            raise DataError(f"{cfg.test_file}: value columns {test_cols} differ from {cfg.train_file} {cols}")
        tr, va = D.split_validation(train, cfg.val_fraction)
        return D.SeriesSplit(Path(cfg.test_file).stem, tr, va, test, labels, channels=cols, source=cfg.test_file)
    except FileNotFoundError as err:
        raise DataError(str(err)) from None


@register_app("anomaly")
class AnomalyApp(App):
    """time-series anomaly detection: MAAT vs Anomaly Transformer, Mamba and IsolationForest baselines"""

    # Set here, not only by the CLI's registry lookup, so runs started from Python (compare.py,
    # devstudy.py, tests) land in <run.root>/anomaly/<id>/ like CLI runs.
    name = "anomaly"
    config_class = AnomalyConfig
    primary_metric = "rec_loss"
    higher_is_better = False
    demo_overrides = ["train.epochs=3"]

    def __init__(self, cfg: AnomalyConfig):
        super().__init__(cfg)
        self._split: D.SeriesSplit | None = None
        self._scaler: D.Scaler | None = None

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

    # ----------------------------------------------------------------------- model
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
                raise DataError(f"{split.source or split.name}: the data has {split.n_channels} channels but "
                                f"model.n_channels={m.n_channels} (the checkpoint's); use data with the same channels")
        kw = {k: getattr(m, k) for k in ("window", "d_model", "n_heads", "n_layers", "d_ff", "dropout", "sparse_block",
                                          "sparse_reach", "n_global", "mamba_layers", "d_state", "backend",
                                          "bidirectional", "temperature")}
        if m.name == "isolation_forest":
            kw = dict(window=m.window, n_estimators=m.n_estimators, max_samples=m.max_samples, seed=self.cfg.seed)
        elif m.name == "mamba_recon":
            kw = {k: kw[k] for k in ("window", "d_model", "mamba_layers", "d_state", "dropout", "backend", "bidirectional")}
        if m.name == "maat" and self.cfg.score.forecast_weight > 0 and not m.forecast:
            raise DataError(f"score.forecast_weight={self.cfg.score.forecast_weight} scores the forecast error of "
                            "MAAT's forecasting head, but model.forecast=false; set score.forecast_weight=0 too")
        if m.name != "isolation_forest":
            sc = self.cfg.score
            kw.update(score_channels=sc.channels, score_normalize=sc.normalize, score_smooth=sc.smooth)
            if m.name != "mamba_recon":
                kw.update(score_assoc=sc.assoc, forecast=m.forecast, score_forecast=sc.forecast_weight)
        model = create_model(m.name, n_channels=m.n_channels, **kw)
        if split is not None:
            model.set_scaler(self._scaler.mean, self._scaler.std)
        return model

    def configure_optimizers(self, model):
        if self.cfg.model.name == "isolation_forest":
            # Nothing to optimise; the engine still wants an optimizer to checkpoint.
            return {"main": torch.optim.SGD(list(model.parameters()), lr=0.0)}
        return super().configure_optimizers(model)

    def train_step(self, ctx: StepContext, batch: torch.Tensor) -> dict:
        model = ctx.model
        core = getattr(model, "module", model)
        if self.cfg.model.name == "isolation_forest":
            if not core.fitted:
                ds = self.build_dataset("train")
                core.fit(np.stack([ds[i].numpy() for i in range(len(ds))]))
            return {"fitted": 1.0}
        with ctx.autocast():
            out = model(batch)
        series_loss, prior_loss, logs = minimax_losses(out, batch, self.cfg.score.k)
        # Two backward passes: the series phase and the prior phase each push their own side of
        # the discrepancy (stop-gradients inside the losses); the gradients add up before one step.
        ctx.backward(series_loss, retain_graph=True)
        ctx.backward(prior_loss)
        ctx.step()
        return {"loss": (series_loss + prior_loss).detach(), **logs}

    # ------------------------------------------------------------------ evaluation
    def scores(self, model, normalized: np.ndarray, ctx: EvalContext) -> np.ndarray:
        bs = self.cfg.train.eval_batch_size or self.cfg.train.batch_size
        return score_series(model, normalized, self.hop, lag=self.cfg.score.lag, batch_size=bs, device=ctx.device,
                            amp_dtype=ctx.amp_dtype, normalized=True)

    @torch.no_grad()
    def reconstruction_loss(self, model, normalized: np.ndarray, ctx: EvalContext) -> float:
        if self.cfg.model.name == "isolation_forest":
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
        if ctx.split != "test" and self.cfg.score.normalize and self.cfg.model.name != "isolation_forest":
            # Validation fixes the per-channel error scale before its scores set the threshold.
            bs = self.cfg.train.eval_batch_size or self.cfg.train.batch_size
            rec_scale, fc_scale = channel_error_scale(model, ds.normalized, self.hop, lag=self.cfg.score.lag,
                                                      batch_size=bs, device=ctx.device)
            getattr(model, "module", model).set_err_scale(rec_scale, fc_scale)
        scores = self.scores(model, ds.normalized, ctx)
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
            raise DataError("the model has no fitted threshold: evaluate the validation split first "
                            "(training does this) before the test split")
        out = M.evaluate_scores(scores, ds.labels, thr, vus_max_buffer=self.cfg.score.vus_max_buffer)
        if self.cfg.data.source in ("internal_bleeding16", "timeeval") and len(M.segments(ds.labels)) == 1:
            ucr = M.ucr_hit(scores, ds.labels, margin=self.cfg.score.ucr_margin)
            out["ucr_hit"] = float(ucr["hit"])
            out["ucr_argmax"] = float(ucr["argmax"])
        if ctx.run_dir is not None:
            self._write_scores(ctx.run_dir / f"scores_{ctx.split}.csv", scores, ds.labels, thr)
            if self.cfg.score.plots and ctx.plots_dir is not None:
                from ssmkit_apps.anomaly.report import plot_series

                plot_series(ds.raw, scores, ds.labels, thr, ctx.plots_dir / f"{ds.name}_{self.cfg.model.name}_{ctx.split}.png",
                            title=f"{self.cfg.model.name} on {ds.name} ({ctx.split})")
        return out

    @staticmethod
    def _write_scores(path: Path, scores: np.ndarray, labels: np.ndarray | None, thr: float) -> None:
        import pandas as pd

        frame = pd.DataFrame({"score": scores, "flag": (scores > thr).astype(int)})
        if labels is not None:
            frame["label"] = labels
        frame.to_csv(path, index_label="index", float_format="%.6g")

    def demo_summary(self, metrics: dict[str, float]) -> str:
        keys = ("f1", "pa_f1", "auc_pr", "vus_pr")
        return ", ".join(f"{k} = {metrics[k]:.3f}" for k in keys if k in metrics)

    @classmethod
    def run_demo(cls, root, overrides=None, verbose: bool = True):
        """The full demo: MAAT, Anomaly Transformer and IsolationForest side by side on the
        embedded data plus InternalBleeding16 (see compare.py). Returns the engine's DemoResult."""
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
        parser.add_argument("--out", help="write index,score,flag here (default: stdout)")
        parser.add_argument("--stream", action="store_true",
                            help="read rows from stdin and write each row's score as soon as its window is complete")
        parser.add_argument("--threshold", type=float, help="override the validation-fitted threshold")
        parser.add_argument("--label-column", default="is_anomaly", help="label column to ignore (default: is_anomaly)")
        parser.add_argument("--timestamp-column", default="timestamp", help="column to ignore (default: timestamp)")

    def infer(self, model, args: argparse.Namespace, ctx: EvalContext) -> int:
        hop = self.hop
        if args.stream:
            if args.file:
                raise DataError("--stream reads stdin; drop the FILE argument (or drop --stream to score FILE)")
            out = open(args.out, "w") if args.out else sys.stdout
            try:
                n = stream(model, sys.stdin, out, hop=hop, lag=self.cfg.score.lag, threshold=args.threshold,
                           device=ctx.device)
            finally:
                if args.out:
                    out.close()
            print(f"scored {n} rows", file=sys.stderr)
            return 0
        if not args.file:
            raise DataError("infer needs FILE.csv (or --stream to read stdin)")
        import pandas as pd

        frame = D._read_csv(args.file)
        drop = {c for c in (args.label_column, args.timestamp_column) if c in frame.columns}
        cols = D._feature_columns(frame, args.file, drop)
        if len(cols) != model.n_channels:
            raise DataError(f"{args.file}: {len(cols)} value columns {cols[:8]}; the checkpoint was trained on "
                            f"{model.n_channels} channels")
        values = D._numeric_columns(frame, args.file, cols, self.cfg.data.nan_policy)
        if len(values) < model.window:
            raise DataError(f"{args.file}: {len(values)} rows is fewer than one window of {model.window} rows")
        thr = float(model.threshold) if args.threshold is None else args.threshold
        if math.isnan(thr):
            raise DataError("the checkpoint has no fitted threshold; pass --threshold")
        scores = score_series(model, values, hop, lag=self.cfg.score.lag, device=ctx.device, amp_dtype=ctx.amp_dtype)
        res = pd.DataFrame({"score": scores, "flag": (scores > thr).astype(int)})
        if args.out:
            res.to_csv(args.out, index_label="index", float_format="%.6g")
            print(f"wrote {len(res)} scores ({int(res.flag.sum())} flagged) to {args.out}", file=sys.stderr)
        else:
            res.to_csv(sys.stdout, index_label="index", float_format="%.6g")
        return 0
