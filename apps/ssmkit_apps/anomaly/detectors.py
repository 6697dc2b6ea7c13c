"""Strong simple detectors, run through the same commands as the deep models.

On real univariate series, residuals of simple predictors and the matrix profile often beat
deep detectors (the finding of the TSB-AD benchmark), so they are the baselines a deep model
has to clear. Each maps standardised windows [B, L, C] to per-step scores [B, L] like every
other detector, so ``ssmkit anomaly train --set model.name=rolling_median`` (or
``--config rolling_median``), ``evaluate``, ``infer`` and ``--stream`` work unchanged:

- ``rolling_median``: |x_t - median of the L - 1 previous steps| (a robust local level).
- ``first_difference``: |x_t - x_{t-1}|.
- ``zscore``: |x_t| after the training standardisation (distance from the training mean in
  training standard deviations); it has no notion of time and fails under drift on purpose.
- ``poly``: a polynomial of degree ``poly_degree`` fitted by least squares to the L - 1
  previous steps and extrapolated one step; the score is the error (TSB-AD's POLY).
- ``matrix_profile``: the z-normalised Euclidean distance of each window to its nearest
  length-L subsequence of the training data (an AB-join matrix profile, as
  ``stumpy.stump(test, L, train, ignore_trivial=False)`` defines it; the tests compare the two).
- ``sub_pca``: PCA of the flattened training windows; the score is a window's squared
  distance from the principal subspace that holds ``pca_variance`` of the variance (TSB-AD's
  sub-sequence PCA).

"Fitting" is one pass over the standardised training series (``fit_series``), no gradients:
each detector stores what it needs as buffers (the per-channel residual scale on training, the
reference subsequences, the principal axes), so a checkpoint alone scores a new file. Per-step
residuals are squared, divided by their training mean per channel (so channels compare), and
reduced over channels like the deep models' scores (``score_channels``: mean | max | top4).
The residual detectors score step t from the steps before it inside its window; run them with
``score.hop=1`` and ``score.lag=0`` (their configs do), so each step is scored from a full past.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ssmkit.registry import register_model
from ssmkit_apps.anomaly.model import SCORE_CHANNELS, DetectorBase


def reduce_channels(err: torch.Tensor, channels: str) -> torch.Tensor:
    """[B, L, C] -> [B, L]: mean, max, or the mean of the four largest."""
    if channels == "mean":
        return err.mean(-1)
    if channels == "max":
        return err.amax(-1)
    return err.topk(min(4, err.shape[-1]), dim=-1).values.mean(-1)


class SimpleDetector(DetectorBase):
    """Base of the one-pass detectors: ``fit_series`` once, then ``score`` windows."""

    trainable = False
    score_kind = "residual"

    def __init__(self, n_channels: int, window: int, score_channels: str = "max", score_smooth: int = 1) -> None:
        super().__init__(n_channels, window)
        if score_channels not in SCORE_CHANNELS:
            raise ValueError(f"score channels={score_channels!r}; expected one of {SCORE_CHANNELS}")
        if int(score_smooth) != score_smooth or score_smooth < 1 or score_smooth % 2 == 0:
            raise ValueError(f"score smooth={score_smooth} must be an odd width >= 1")
        self.channels, self.smooth = score_channels, int(score_smooth)
        self.register_buffer("fitted_flag", torch.tensor(0.0))
        # An optimizer needs a parameter to hold; nothing here is trained by gradients.
        self.unused = torch.nn.Parameter(torch.zeros(()), requires_grad=False)

    @property
    def fitted(self) -> bool:
        return bool(self.fitted_flag > 0)

    def residuals(self, x: torch.Tensor) -> torch.Tensor:
        """Squared per-step, per-channel residuals [B, L, C] of windows [B, L, C]."""
        raise NotImplementedError

    def fit_series(self, series: np.ndarray, stride: int = 1) -> SimpleDetector:
        """Fit on a standardised training series [T, C]: the per-channel scale of the residuals."""
        x = torch.from_numpy(np.ascontiguousarray(series, dtype=np.float32))
        self._fit(x)
        wins = _windows(x, self.window, stride)
        err = (
            torch.cat([self.residuals(wins[i : i + 256]) for i in range(0, len(wins), 256)])
            if self.scale_residuals
            else None
        )
        if self.scale_residuals:
            scale = err[:, self.first_scored :].reshape(-1, self.n_channels).mean(0)
            self.err_scale.copy_(scale.clamp_min(1e-8))
        self.fitted_flag.fill_(1.0)
        return self

    #: Window positions before this one lack the past their residual needs (not used to fit scales).
    first_scored = 1
    #: Divide each channel's squared residual by its training mean (False where training data
    #: scores itself: the matrix profile's nearest training neighbour of a training window is itself).
    scale_residuals = True

    def _fit(self, series: torch.Tensor) -> None:
        """Detector-specific fitting on the standardised training series [T, C]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised windows [B, L, C] -> scores [B, L]."""
        self.check_input(x)
        if not self.fitted:
            raise ValueError(
                f"the {type(self).__name__} detector is not fitted; train it first "
                "(ssmkit anomaly train --set model.name=...)"
            )
        err = self.residuals(x.float()) / self.err_scale.clamp_min(1e-8)
        s = reduce_channels(err, self.channels)
        if self.smooth > 1:
            s = F.avg_pool1d(s[:, None], self.smooth, stride=1, padding=self.smooth // 2, count_include_pad=False)[:, 0]
        return s


def _windows(x: torch.Tensor, window: int, stride: int) -> torch.Tensor:
    """Every ``stride``-th window of a series [T, C] -> [N, window, C]."""
    if len(x) < window:
        raise ValueError(f"{len(x)} training rows is fewer than one window of {window} rows")
    return x.unfold(0, window, stride).transpose(1, 2).contiguous()


def _past(x: torch.Tensor, k: int) -> torch.Tensor:
    """For windows [B, L, C]: the k steps before each position, NaN where the window has none:
    [B, L, C, k]."""
    B, L, C = x.shape
    pad = torch.full((B, k, C), float("nan"), dtype=x.dtype, device=x.device)
    return torch.cat([pad, x], 1)[:, :-1].unfold(1, k, 1)


@register_model("rolling_median")
class RollingMedian(SimpleDetector):
    """|x_t - median(x_{t-L+1..t-1})|: the residual from a robust rolling level (the lower
    median when the count is even); steps with a shorter past use what the window holds."""

    def __init__(self, n_channels: int = 1, window: int = 51, score_channels: str = "max", score_smooth: int = 1):
        super().__init__(n_channels, window, score_channels, score_smooth)

    def residuals(self, x: torch.Tensor) -> torch.Tensor:
        med = torch.nanmedian(_past(x, self.window - 1), dim=-1).values
        return torch.nan_to_num(x - med, nan=0.0).pow(2)  # the first step has no past: residual 0


@register_model("first_difference")
class FirstDifference(SimpleDetector):
    """|x_t - x_{t-1}| (0 at a window's first step)."""

    def __init__(self, n_channels: int = 1, window: int = 16, score_channels: str = "max", score_smooth: int = 1):
        super().__init__(n_channels, window, score_channels, score_smooth)

    def residuals(self, x: torch.Tensor) -> torch.Tensor:
        d = torch.zeros_like(x)
        d[:, 1:] = x[:, 1:] - x[:, :-1]
        return d.pow(2)


@register_model("zscore")
class ZScore(SimpleDetector):
    """|x_t - training mean| / training std per channel (the input is already standardised)."""

    first_scored = 0

    def __init__(self, n_channels: int = 1, window: int = 16, score_channels: str = "max", score_smooth: int = 1):
        super().__init__(n_channels, window, score_channels, score_smooth)

    def residuals(self, x: torch.Tensor) -> torch.Tensor:
        return x.pow(2)


def poly_weights(past: int, degree: int) -> torch.Tensor:
    """Weights [past] that extrapolate a least-squares polynomial of ``degree`` through
    ``past`` evenly spaced values one step ahead: prediction = weights @ values."""
    if degree >= past:
        raise ValueError(f"poly_degree={degree} needs more than {degree} past steps; got window - 1 = {past}")
    t = np.arange(-past, 0, dtype=np.float64) / past  # scaled for a well-conditioned Vandermonde
    V = np.vander(t, degree + 1, increasing=True)
    return torch.from_numpy(np.linalg.pinv(V)[0]).float()  # the polynomial's value at t = 0


@register_model("poly")
class Poly(SimpleDetector):
    """The one-step extrapolation error of a degree-``poly_degree`` polynomial fitted to the
    L - 1 previous steps (steps with a shorter past get residual 0)."""

    def __init__(
        self,
        n_channels: int = 1,
        window: int = 21,
        poly_degree: int = 3,
        score_channels: str = "max",
        score_smooth: int = 1,
    ):
        super().__init__(n_channels, window, score_channels, score_smooth)
        self.register_buffer("weights", poly_weights(window - 1, poly_degree))
        self.first_scored = window - 1

    def residuals(self, x: torch.Tensor) -> torch.Tensor:
        pred = torch.einsum("blck,k->blc", _past(x, self.window - 1), self.weights)
        return torch.nan_to_num(x - pred, nan=0.0).pow(2)


def _znorm(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-normalise subsequences [..., m] along the last axis; returns (values, is_constant)."""
    mu = w.mean(-1, keepdim=True)
    sd = w.std(-1, unbiased=False, keepdim=True)
    const = sd[..., 0] < 1e-8 * (1.0 + mu[..., 0].abs())
    return (w - mu) / torch.where(sd > 0, sd, torch.ones_like(sd)), const


@register_model("matrix_profile")
class MatrixProfile(SimpleDetector):
    """Distance of each window to its nearest training subsequence of the same length.

    The reference holds the last ``reference_rows`` standardised training rows (a fixed-size
    buffer, so a checkpoint loads into a freshly built model). Distances are z-normalised
    Euclidean, computed per channel as ``sqrt(2 m (1 - correlation))``; a constant subsequence is
    at distance 0 from another constant one and sqrt(m) from any other, as stumpy defines it.
    The window's squared distance is its score at every step (centre it with ``score.lag``).
    """

    score_kind = "distance"
    first_scored = 0
    scale_residuals = False  # z-normalised distances already share one scale across channels

    def __init__(
        self,
        n_channels: int = 1,
        window: int = 32,
        reference_rows: int = 4096,
        score_channels: str = "max",
        score_smooth: int = 1,
    ):
        super().__init__(n_channels, window, score_channels, score_smooth)
        if reference_rows < window:
            raise ValueError(f"reference_rows={reference_rows} must be >= window={window}")
        self.register_buffer("reference", torch.zeros(reference_rows, n_channels))
        self.register_buffer("n_reference", torch.tensor(0))
        self._ref: tuple[torch.Tensor, torch.Tensor] | None = None

    def _fit(self, series: torch.Tensor) -> None:
        keep = series[-self.reference.shape[0] :]
        self.reference.zero_()
        self.reference[: len(keep)] = keep
        self.n_reference.fill_(len(keep))
        self._ref = None

    def _reference(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Z-normalised reference subsequences [C, N, m] and their constant flags [C, N] (cached)."""
        n = int(self.n_reference)
        if (
            self._ref is None
            or self._ref[0].device != self.reference.device
            or self._ref[0].shape[1] != n - self.window + 1
        ):
            subs = self.reference[:n].unfold(0, self.window, 1).permute(1, 0, 2).double()  # [C, N, m]
            z, const = _znorm(subs)
            self._ref = (z.float(), const)
        return self._ref

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """Windows [B, m, C] -> nearest-neighbour distance per channel [B, C]."""
        ref, ref_const = self._reference()
        m = self.window
        q, q_const = _znorm(x.transpose(1, 2).double())  # [B, C, m]
        corr = torch.einsum("bcm,cnm->bcn", q.float(), ref) / m
        corr = corr.clamp(-1.0, 1.0)
        # stumpy's rule for flat subsequences: two flat ones match exactly, a flat and a varying one
        # are sqrt(m) apart (correlation 1/2 in the formula below).
        qc, rc = q_const[:, :, None], ref_const[None]
        corr = torch.where(qc & rc, torch.ones_like(corr), torch.where(qc | rc, torch.full_like(corr, 0.5), corr))
        d2 = (2.0 * m * (1.0 - corr)).clamp_min(0.0)
        return d2.amin(-1).sqrt()

    def residuals(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.window:
            raise ValueError(f"matrix_profile compares whole windows of {self.window} steps; got {x.shape[1]}")
        if int(self.n_reference) < self.window:
            raise ValueError("matrix_profile has no reference subsequences; fit it on training data first")
        d = torch.cat([self.distances(x[i : i + 128]) for i in range(0, len(x), 128)])
        return d.pow(2)[:, None, :].expand(-1, x.shape[1], -1)


@register_model("sub_pca")
class SubPCA(SimpleDetector):
    """Squared distance of each flattened window [L * C] from the principal subspace of the
    training windows that holds ``pca_variance`` of their variance; the window's score at
    every step (centre it with ``score.lag``)."""

    score_kind = "distance"
    first_scored = 0

    def __init__(
        self,
        n_channels: int = 1,
        window: int = 32,
        pca_variance: float = 0.9,
        score_channels: str = "max",
        score_smooth: int = 1,
    ):
        super().__init__(n_channels, window, score_channels, score_smooth)
        if not 0.0 < pca_variance <= 1.0:
            raise ValueError(f"pca_variance must be in (0, 1], got {pca_variance}")
        self.pca_variance = float(pca_variance)
        F_ = window * n_channels
        self.register_buffer("mean", torch.zeros(F_))
        self.register_buffer("axes", torch.zeros(F_, F_))  # principal axes as columns, kept ones first
        self.register_buffer("n_axes", torch.tensor(0))

    def _fit(self, series: torch.Tensor) -> None:
        flat = _windows(series, self.window, 1).reshape(-1, self.window * self.n_channels).double()
        mu = flat.mean(0)
        centred = flat - mu
        var, vecs = torch.linalg.eigh(centred.T @ centred)  # ascending
        var, vecs = var.flip(0).clamp_min(0.0), vecs.flip(1)
        share = torch.cumsum(var, 0) / var.sum().clamp_min(1e-30)
        k = int(torch.searchsorted(share, torch.tensor(self.pca_variance, dtype=share.dtype)).item()) + 1
        self.mean.copy_(mu.float())
        self.axes.copy_(vecs.float())
        self.n_axes.fill_(min(k, vecs.shape[1]))

    def residuals(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        if L != self.window:
            raise ValueError(f"sub_pca projects whole windows of {self.window} steps; got {L}")
        flat = x.reshape(B, L * C) - self.mean
        P = self.axes[:, : int(self.n_axes)]
        res = flat - (flat @ P) @ P.T
        # Spread the window's squared distance over its channels, so the per-channel scale and
        # the channel reduction treat it like the residual detectors.
        per_channel = res.reshape(B, L, C).pow(2).sum(1)  # [B, C]
        return per_channel[:, None, :].expand(-1, L, -1)
