"""MAAT and its baselines: every detector maps windows [B, L, C] to per-step scores [B, L].

- ``maat``: Anomaly-Transformer association discrepancy (learned Gaussian prior per head vs the
  series association), optional block-sparse attention, and a Mamba reconstruction path with a
  skip connection fused into the attention branch by a sigmoid gate and core GatedAttention;
  optionally (``forecast=True``, the default config) the Mamba path reads a causal embedding and
  a head predicts the next row from its state.
- ``anomaly_transformer``: the same network without the Mamba path (so without the head).
- ``mamba_recon``: Mamba-only reconstruction; the score is the reconstruction error.
- ``isolation_forest``: scikit-learn IsolationForest on flattened windows, exported to tensors
  (:mod:`ssmkit_apps.anomaly.forest`) so it saves to safetensors like the others.

The per-step score of the torch models is :func:`combine_scores` of their outputs (association
weighting, per-channel normalisation, channel reduction, smoothing, forecast error: each a
setting). Every torch model holds its input standardisation (``scale_mean``/``scale_std`` [C]),
its validation error scales (``err_scale``, and ``fc_scale`` with a forecasting head) and its
fitted threshold as buffers, so a checkpoint alone can score a new file.

Non-stationary series (trend, level shifts): with ``instance_norm="mean"`` (the default config)
or ``"meanstd"``, the deep models see each window minus its own per-channel mean (and divided
by its standard deviation) and their outputs are mapped back before the errors are taken
(reversible instance normalisation), so a level the training data never reached does not
become a reconstruction error on every row.

The simple detectors (``ssmkit_apps.anomaly.detectors``) share :class:`DetectorBase`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.layers.mamba import MambaBlock
from ssmkit.registry import register_model, select_kwargs

KL_EPS = 1e-4  # keeps log() finite where an association is exactly zero (masked blocks)


class DetectorBase(nn.Module):
    """Buffers shared by every detector: standardisation and the validation-fitted threshold."""

    score_kind = "reconstruction"
    #: False for detectors fitted from the training series in one step (no gradients): the app
    #: then calls ``fit_series(normalized train [T, C])`` once instead of optimising.
    trainable = True

    def __init__(self, n_channels: int, window: int) -> None:
        super().__init__()
        if n_channels < 1:
            raise ValueError(f"n_channels must be >= 1, got {n_channels}")
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        self.n_channels, self.window = int(n_channels), int(window)
        self.register_buffer("scale_mean", torch.zeros(n_channels))
        self.register_buffer("scale_std", torch.ones(n_channels))
        # NaN until a validation pass fits it; scoring a file without one raises, never guesses.
        self.register_buffer("threshold", torch.tensor(float("nan")))
        # Typical squared reconstruction error per channel on validation, for normalised scores.
        self.register_buffer("err_scale", torch.ones(n_channels))

    def example_input(self, batch: int = 2) -> torch.Tensor:
        """Random standardised windows [batch, window, n_channels] (for registry-wide tests)."""
        return torch.randn(batch, self.window, self.n_channels, device=self.scale_mean.device)

    def set_scaler(self, mean, std) -> None:
        self.scale_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.scale_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def set_err_scale(self, scale, fc_scale=None) -> None:
        """Store the per-channel validation error scales [C] (reconstruction, and forecast for
        models with a forecasting head)."""
        for name, value in (("err_scale", scale), ("fc_scale", fc_scale)):
            if value is None:
                continue
            if not hasattr(self, name):
                raise ValueError(f"{type(self).__name__} has no {name} (no forecasting head) to set")
            v = torch.as_tensor(value, dtype=torch.float32)
            if v.shape != (self.n_channels,) or not bool(torch.isfinite(v).all()) or bool((v <= 0).any()):
                raise ValueError(f"{name} must be {self.n_channels} positive finite values, got {v.tolist()}")
            getattr(self, name).copy_(v)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.scale_mean.to(x.dtype)) / self.scale_std.to(x.dtype)

    def check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 3:
            raise ValueError(f"expected windows [B, L, C], got {getattr(x, 'shape', type(x))}")
        if x.shape[-1] != self.n_channels:
            raise ValueError(f"input has {x.shape[-1]} channels, the model was built for {self.n_channels}")

    def check_buffers(self, source: str) -> None:
        """Refuse weights whose standardisation would turn every score into NaN or inf (a zero
        or non-finite ``scale_std``, a non-finite ``scale_mean``); ``source`` names the file."""
        from ssmkit.errors import DataError

        std, mean = self.scale_std.detach().cpu(), self.scale_mean.detach().cpu()
        bad = ~torch.isfinite(std) | (std <= 0)
        if bool(bad.any()) or not bool(torch.isfinite(mean).all()):
            chans = torch.nonzero(bad).flatten().tolist()[:5]
            raise DataError(
                f"{source}: the weights' scale_std must be positive and finite (channels {chans} hold "
                f"{std[bad][:5].tolist()}) and scale_mean finite; the file is damaged or was not "
                "written by training"
            )


INSTANCE_NORMS = ("none", "mean", "meanstd")


class InstanceNorm:
    """Reversible per-window normalisation of [B, L, C] windows over time (RevIN without the
    affine part): ``x`` minus its window mean (and over its window std), and back again."""

    def __init__(self, mode: str) -> None:
        if mode not in INSTANCE_NORMS:
            raise ValueError(f"instance_norm={mode!r}; expected one of {INSTANCE_NORMS}")
        self.mode = mode

    def stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "none":
            return torch.zeros_like(x[:, :1]), torch.ones_like(x[:, :1])
        mu = x.mean(1, keepdim=True).detach()
        sd = x.std(1, keepdim=True).detach().clamp_min(1e-3) if self.mode == "meanstd" else torch.ones_like(mu)
        return mu, sd


class DataEmbedding(nn.Module):
    """Token embedding (circular conv over time, as in Anomaly Transformer) + fixed sinusoids."""

    def __init__(self, c_in: int, d_model: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, d_model, 3, padding=1, padding_mode="circular", bias=False)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_in", nonlinearity="leaky_relu")
        self.d_model = d_model
        self.drop = nn.Dropout(dropout)

    def positional(self, L: int, device, dtype) -> torch.Tensor:
        pos = torch.arange(L, device=device, dtype=torch.float32)[:, None]
        div = torch.exp(
            torch.arange(0, self.d_model, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / self.d_model)
        )
        pe = torch.zeros(L, self.d_model, device=device)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div[: self.d_model // 2])
        return pe.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, C] -> [B, L, d_model]."""
        h = self.conv(x.transpose(1, 2)).transpose(1, 2)
        return self.drop(h + self.positional(x.shape[1], x.device, h.dtype))


def block_sparse_mask(L: int, block: int, reach: int = 1, n_global: int = 0, device=None) -> torch.Tensor:
    """Boolean [L, L] mask of allowed query->key pairs: keys within ``reach`` blocks of the
    query's block of size ``block``, plus ``n_global`` leading tokens that see and are seen by all."""
    if block < 1:
        raise ValueError(f"block size must be >= 1, got {block}")
    if reach < 0 or n_global < 0:
        raise ValueError(f"reach and n_global must be >= 0, got reach={reach}, n_global={n_global}")
    b = torch.arange(L, device=device) // block
    mask = (b[:, None] - b[None, :]).abs() <= reach
    if n_global:
        g = torch.arange(L, device=device) < n_global
        mask = mask | g[:, None] | g[None, :]
    return mask


class AnomalyAttention(nn.Module):
    """Multi-head attention that also returns the series association, a learned Gaussian prior
    association and its per-head scale.

    forward(x [B, L, d]) -> (out [B, L, d], series [B, H, L, L], prior [B, H, L, L]).
    Rows of ``series`` and ``prior`` sum to one. With ``sparse_block > 0`` both are restricted
    to the block-sparse pattern, so masked pairs carry exactly zero weight in either and the
    discrepancy compares like with like.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float = 0.0,
        sparse_block: int = 0,
        sparse_reach: int = 1,
        n_global: int = 0,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.h, self.dh = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.sigma = nn.Linear(d_model, n_heads)
        self.out = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)
        self.sparse_block, self.sparse_reach, self.n_global = sparse_block, sparse_reach, n_global

    def mask(self, L: int, device) -> torch.Tensor | None:
        if self.sparse_block <= 0:
            return None
        return block_sparse_mask(L, self.sparse_block, self.sparse_reach, self.n_global, device)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, L, _ = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.h, self.dh).permute(2, 0, 3, 1, 4)
        logits = (q @ k.transpose(-1, -2)).float() / math.sqrt(self.dh)  # [B, H, L, L]
        mask = self.mask(L, x.device)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        series = logits.softmax(dim=-1)
        # sigma in (0, 2]: the sigmoid keeps the scale bounded, the 3**s - 1 map lets it spread
        # from very narrow to a few steps (the Anomaly Transformer parameterisation).
        s = torch.sigmoid(5.0 * self.sigma(x).float()) + 1e-5
        sigma = (torch.pow(3.0, s) - 1.0).transpose(1, 2)  # [B, H, L]
        idx = torch.arange(L, device=x.device, dtype=torch.float32)
        dist2 = (idx[:, None] - idx[None, :]) ** 2
        prior = torch.exp(-dist2 / (2 * sigma[..., None] ** 2)) / (math.sqrt(2 * math.pi) * sigma[..., None])
        if mask is not None:
            prior = prior * mask
        prior = prior / prior.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        ctx = (self.drop(series).to(v.dtype) @ v).transpose(1, 2).reshape(B, L, self.h * self.dh)
        return self.out(ctx), series, prior


class EncoderLayer(nn.Module):
    """Post-norm Transformer layer around :class:`AnomalyAttention` (as the original model)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, **attn_kw) -> None:
        super().__init__()
        self.attn = AnomalyAttention(d_model, n_heads, dropout, **attn_kw)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        a, series, prior = self.attn(x)
        x = self.norm1(x + self.drop(a))
        return self.norm2(x + self.drop(self.ff(x))), series, prior


def association_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the key axis, averaged over heads: [B, H, L, L] -> [B, L]."""
    return (p * (torch.log(p + KL_EPS) - torch.log(q + KL_EPS))).sum(-1).mean(1)


SCORE_CHANNELS = ("mean", "max", "top4")


def combine_scores(
    x: torch.Tensor,
    recon: torch.Tensor,
    dis: torch.Tensor | None,
    err_scale: torch.Tensor | None,
    *,
    temperature: float = 1.0,
    assoc: bool = True,
    channels: str = "mean",
    normalize: bool = False,
    smooth: int = 1,
    forecast: torch.Tensor | None = None,
    fc_scale: torch.Tensor | None = None,
    forecast_weight: float = 0.0,
) -> torch.Tensor:
    """Per-step anomaly scores of windows from a detector's raw outputs.

    Args:
        x, recon: standardised windows and their reconstruction [B, L, C].
        dis: association discrepancy per step [B, L] (required when ``assoc``).
        err_scale: per-channel typical squared error on validation [C] (required when ``normalize``).
        assoc: weight the error by softmax over the window of -temperature * discrepancy (the
            Anomaly Transformer criterion); False scores the reconstruction error alone.
        channels: how per-channel errors become one number per step: ``mean``, ``max`` or
            ``top4`` (the mean of the four largest; anomalies often hit only a few channels).
        normalize: divide each channel's error by ``err_scale`` first, so a channel that is
            always hard to reconstruct does not dominate.
        smooth: width of a centred moving average over the window (1 = none); segment anomalies
            raise the error over many steps, isolated noise spikes over one.
        forecast: one-step-ahead predictions [B, L, C] (row t predicts row t + 1 of ``x``);
            with ``forecast_weight`` > 0 each step's squared forecast error (normalised by
            ``fc_scale`` [C] when ``normalize``) is added, times the weight, to its
            reconstruction error before the channels are reduced. A window's first step has no
            forecast and gets none.

    Returns scores [B, L] (float32).
    """
    if channels not in SCORE_CHANNELS:
        raise ValueError(f"score channels={channels!r}; expected one of {SCORE_CHANNELS}")
    if smooth < 1 or smooth % 2 == 0:
        raise ValueError(f"score smooth={smooth} must be an odd width >= 1")
    err = (recon.float() - x.float()).pow(2)  # [B, L, C]
    if normalize:
        if err_scale is None:
            raise ValueError("normalize=True needs err_scale [C]")
        err = err / err_scale.float().clamp_min(1e-8)
    if forecast_weight < 0:
        raise ValueError(f"forecast_weight must be >= 0, got {forecast_weight}")
    if forecast_weight > 0:
        if forecast is None:
            raise ValueError("forecast_weight > 0 needs the forecasts [B, L, C] (a model built with forecast=True)")
        fe = torch.zeros_like(err)
        fe[:, 1:] = (forecast[:, :-1].float() - x[:, 1:].float()).pow(2)
        if normalize:
            if fc_scale is None:
                raise ValueError("normalize=True needs fc_scale [C] for the forecast errors")
            fe = fe / fc_scale.float().clamp_min(1e-8)
        err = err + forecast_weight * fe
    if channels == "mean":
        s = err.mean(-1)
    elif channels == "max":
        s = err.amax(-1)
    else:
        s = err.topk(min(4, err.shape[-1]), dim=-1).values.mean(-1)
    if assoc:
        if dis is None:
            raise ValueError("assoc=True needs the association discrepancy [B, L]")
        s = torch.softmax(-temperature * dis.float(), dim=-1) * s
    if smooth > 1:
        # count_include_pad=False: the window's edge steps average only the steps that exist.
        s = F.avg_pool1d(s[:, None], smooth, stride=1, padding=smooth // 2, count_include_pad=False)[:, 0]
    return s


def _score_kw(assoc: bool, channels: str, normalize: bool, smooth: int, forecast_weight: float = 0.0) -> dict:
    """Validated keyword arguments of :func:`combine_scores` (errors at construction, not at scoring)."""
    if forecast_weight < 0:
        raise ValueError(f"score forecast_weight must be >= 0, got {forecast_weight}")
    if channels not in SCORE_CHANNELS:
        raise ValueError(f"score channels={channels!r}; expected one of {SCORE_CHANNELS}")
    if int(smooth) != smooth or smooth < 1 or smooth % 2 == 0:
        raise ValueError(f"score smooth={smooth} must be an odd width >= 1")
    return dict(
        assoc=bool(assoc),
        channels=channels,
        normalize=bool(normalize),
        smooth=int(smooth),
        forecast_weight=float(forecast_weight),
    )


class GatedFusion(nn.Module):
    """Fuse the attention branch ``a`` and the Mamba branch ``m`` ([B, L, d] each).

    A per-feature sigmoid gate chooses between them, then core GatedAttention (attention with a
    head-wise sigmoid output gate) refines the mixture with a residual."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        from ssmkit.layers.gated_attention import GatedAttention

        self.gate = nn.Linear(2 * d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.attn = GatedAttention(d_model, num_heads=n_heads)

    def forward(self, a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.gate(torch.cat([a, m], dim=-1)))
        mixed = g * a + (1 - g) * m
        return mixed + self.attn(self.norm(mixed))


@register_model("maat")
class MAAT(DetectorBase):
    """Mamba Adaptive Anomaly Transformer: windows [B, L, C] -> reconstruction [B, L, C] plus
    per-layer series and prior associations [B, H, L, L].

    Args:
        n_channels: C. window: L used for training and scoring.
        d_model, n_heads, n_layers, d_ff, dropout: the association (Transformer) branch.
        sparse_block: block size of block-sparse attention (0 = dense); sparse_reach: how many
            neighbouring blocks a query sees; n_global: leading tokens that see everything.
        mamba_layers: depth of the Mamba reconstruction path (0 = plain Anomaly Transformer).
        d_state, backend, bidirectional: passed to the core Mamba blocks.
        temperature: scale of the discrepancy inside softmax(-discrepancy) of the score.
        forecast: give the Mamba path a causal input embedding and a head that predicts the next
            row from its state (trained with the reconstruction); the attention branch has no
            such causal state, so this is what the Mamba path adds beyond reconstruction.
        instance_norm: "none" | "mean" | "meanstd": reversible per-window normalisation (see the
            module docstring); reconstructions and forecasts come back in the input's scale.
        score_assoc, score_channels, score_normalize, score_smooth, score_forecast: the score
            definition, see :func:`combine_scores` (score_forecast is its forecast_weight).
    """

    score_kind = "association"

    def __init__(
        self,
        n_channels: int = 8,
        window: int = 64,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        d_ff: int = 128,
        dropout: float = 0.0,
        sparse_block: int = 0,
        sparse_reach: int = 1,
        n_global: int = 0,
        mamba_layers: int = 2,
        d_state: int = 16,
        backend: str = "auto",
        bidirectional: bool = False,
        temperature: float = 50.0,
        forecast: bool = False,
        instance_norm: str = "none",
        score_assoc: bool = True,
        score_channels: str = "mean",
        score_normalize: bool = False,
        score_smooth: int = 1,
        score_forecast: float = 0.0,
    ) -> None:
        super().__init__(n_channels, window)
        self.inorm = InstanceNorm(instance_norm)
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        if forecast and not mamba_layers:
            raise ValueError("forecast=True needs the Mamba path (mamba_layers >= 1)")
        if score_forecast > 0 and not forecast:
            raise ValueError(f"score_forecast={score_forecast} needs a model built with forecast=True")
        self.temperature = float(temperature)
        self.score_kw = _score_kw(score_assoc, score_channels, score_normalize, score_smooth, score_forecast)
        self.embed = DataEmbedding(n_channels, d_model, dropout)
        attn_kw = dict(sparse_block=sparse_block, sparse_reach=sparse_reach, n_global=n_global)
        self.layers = nn.ModuleList(EncoderLayer(d_model, n_heads, d_ff, dropout, **attn_kw) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.mamba = nn.ModuleList(
            MambaBlock(d_model, d_state=d_state, backend=backend, bidirectional=bidirectional)
            for _ in range(mamba_layers)
        )
        self.fusion = GatedFusion(d_model, n_heads) if mamba_layers else None
        self.proj = nn.Linear(d_model, n_channels)
        self.causal_embed: nn.Conv1d | None = None
        self.forecast_head: nn.Linear | None = None
        if forecast:
            # Left-padded conv (kernel 3): the Mamba state at step t has read rows <= t only, so
            # its prediction of row t + 1 cannot copy it. The shared embedding is centred.
            self.causal_embed = nn.Conv1d(n_channels, d_model, 3, bias=False)
            nn.init.kaiming_normal_(self.causal_embed.weight, mode="fan_in", nonlinearity="leaky_relu")
            self.forecast_head = nn.Linear(d_model, n_channels)
            self.register_buffer("fc_scale", torch.ones(n_channels))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """x: standardised windows [B, L, C]."""
        self.check_input(x)
        mu, sd = self.inorm.stats(x)
        x = (x - mu) / sd
        e = self.embed(x)
        h, series, prior = e, [], []
        for layer in self.layers:
            h, s, p = layer(h)
            series.append(s)
            prior.append(p)
        h = self.norm(h)
        out: dict[str, torch.Tensor | list[torch.Tensor]] = {"series": series, "prior": prior}
        if self.fusion is not None:
            if self.causal_embed is not None:
                c = self.causal_embed(F.pad(x.transpose(1, 2), (2, 0))).transpose(1, 2)
                m = c + self.embed.positional(x.shape[1], x.device, c.dtype)
            else:
                m = e
            for blk in self.mamba:
                m = blk(m)  # pre-norm residual blocks: the skip path keeps the raw embedding
            if self.forecast_head is not None:
                out["forecast"] = self.forecast_head(m) * sd + mu  # row t predicts row t + 1
            h = self.fusion(h, m + e)
        out["recon"] = self.proj(h) * sd + mu
        return out

    def discrepancy(self, series: list[torch.Tensor], prior: list[torch.Tensor]) -> torch.Tensor:
        """Symmetric KL between each layer's series and prior, summed over layers: [B, L]."""
        return sum(association_kl(s, p) + association_kl(p, s) for s, p in zip(series, prior))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Anomaly score per step of standardised windows [B, L, C] -> [B, L] as configured
        (:func:`combine_scores`); the default is softmax over the window of -discrepancy times
        the mean squared reconstruction error."""
        out = self.forward(x)
        dis = self.discrepancy(out["series"], out["prior"]) if self.score_kw["assoc"] else None
        return combine_scores(
            x,
            out["recon"],
            dis,
            self.err_scale,
            temperature=self.temperature,
            forecast=out.get("forecast"),
            fc_scale=getattr(self, "fc_scale", None),
            **self.score_kw,
        )


@register_model("anomaly_transformer")
def anomaly_transformer(**kw) -> MAAT:
    """Plain Anomaly Transformer: MAAT with the Mamba path (and so its forecasting head) switched
    off; the Mamba-path arguments of a shared config section are accepted and ignored."""
    kw.update(mamba_layers=0, forecast=False, score_forecast=0.0)
    return MAAT(**select_kwargs("model", "maat", kw))


@register_model("mamba_recon")
class MambaRecon(DetectorBase):
    """Mamba-only reconstruction baseline: [B, L, C] -> reconstruction [B, L, C]; score = MSE per step."""

    def __init__(
        self,
        n_channels: int = 8,
        window: int = 64,
        d_model: int = 64,
        mamba_layers: int = 2,
        d_state: int = 16,
        dropout: float = 0.0,
        backend: str = "auto",
        bidirectional: bool = False,
        instance_norm: str = "none",
        score_channels: str = "mean",
        score_normalize: bool = False,
        score_smooth: int = 1,
    ) -> None:
        super().__init__(n_channels, window)
        self.inorm = InstanceNorm(instance_norm)
        self.score_kw = _score_kw(False, score_channels, score_normalize, score_smooth)
        if mamba_layers < 1:
            raise ValueError(f"mamba_recon needs mamba_layers >= 1, got {mamba_layers}")
        self.embed = DataEmbedding(n_channels, d_model, dropout)
        self.blocks = nn.ModuleList(
            MambaBlock(d_model, d_state=d_state, backend=backend, bidirectional=bidirectional)
            for _ in range(mamba_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.proj = nn.Linear(d_model, n_channels)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        self.check_input(x)
        mu, sd = self.inorm.stats(x)
        h = self.embed((x - mu) / sd)
        for blk in self.blocks:
            h = blk(h)
        return {"recon": self.proj(self.norm(h)) * sd + mu, "series": [], "prior": []}

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction error per step [B, L] (channels, normalisation, smoothing as configured)."""
        return combine_scores(x, self.forward(x)["recon"], None, self.err_scale, **self.score_kw)
