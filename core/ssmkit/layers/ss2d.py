"""SS2D / SS3D: the selective-scan mixer for images and volumes, and the VSS block around it.

Data flow of :class:`SS2D` for a channels-first input [B, C, *S] (S = (H, W) or (D, H, W)),
with Di = expand * C channels inside and K scan paths from the chosen strategy:

    in_proj -> x, z                              [B, *S, Di] each
    x -> depthwise conv (2-D or 3-D) -> silu     [B, Di, *S]
    core(x):                                     [B, Di, *S] -> [B, Di, *S]
        x_proj per path -> dt (rank R), B, C     [B, K, R + 2N, L]   (raster order, then gathered)
        dt_proj per path -> delta                [B, K*Di, L]        (visit order)
        selective scan of x along the K paths, merged back (sum or mean over paths)
    norm -> * silu(z) -> out_proj                [B, *S, C] -> back to [B, C, *S]

Two implementations of the core compute the same function:

- ``impl="fused"`` (default): the shared map never gets K permuted copies at this level.
  The low-rank projection (R + 2N channels) runs in raster order and only it is gathered;
  :func:`ssmkit.ops.path_scan.fused_path_scan` then scans the K paths: by default ONE
  selective-scan call over K*Di channels (the paths are its groups; Triton on CUDA) and an
  exact merge by inverse permutations. With ``backend="triton"`` the Triton selective scan
  instead reads the map through the path index inside its kernels (its ``path_index`` mode: no
  permuted copies of the map are written or kept for the backward; each path's output lands
  at its raster positions and the K are summed). GPU timings: docs/benchmarks.md, "SS2D scan core".
- ``impl="materialized"``: the VMamba pipeline, the reference the fused core is tested and
  benchmarked against: ``strategy.scan`` writes K copies, projections run on the copies, one
  scan call, ``strategy.merge``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit._checks import positive_int
from ssmkit.layers.norm import RMSNorm
from ssmkit.layers.weight_decay import NoWeightDecay
from ssmkit.ops.path_scan import fused_path_scan
from ssmkit.ops.selective_scan import BACKENDS, selective_scan
from ssmkit.registry import get, register_block
from ssmkit.scans.base import ScanStrategy

IMPLS = ("fused", "materialized")
_INPUT_KIND = {2: "image2d", 3: "volume3d"}
_EXAMPLE_SHAPE = {2: (5, 7), 3: (3, 5, 4)}


def _resolve_strategy(strategy: str | ScanStrategy, spatial_dims: int) -> ScanStrategy:
    if isinstance(strategy, str):
        strategy = get("scan", strategy)()
    if not isinstance(strategy, ScanStrategy):
        raise TypeError(f"strategy must be a registered scan name or a ScanStrategy; got {type(strategy).__name__}")
    if not strategy.supports(spatial_dims):
        raise ValueError(
            f"scan strategy {strategy.name!r} supports spatial_dims {list(strategy.spatial_dims)}; got {spatial_dims}"
        )
    return strategy


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples with probability ``p`` and rescale the rest."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)


@register_block("ss2d")
class SS2D(NoWeightDecay, nn.Module):
    """2-D/3-D selective-scan mixer: [B, C, *S] -> [B, C, *S] (or channels-last [B, *S, C]).

    Args:
        d_model: C, the input/output channels.
        d_state: N, the SSM state size. expand: Di = int(expand * d_model).
        dt_rank: R of the low-rank step projection, "auto" = ceil(d_model / 16).
        d_conv: odd kernel size of the depthwise conv.
        strategy: a registered scan strategy name (``ssmkit.registry.list_scans()``) or an
            instance; its K paths each get their own A, D (and projections unless shared).
        spatial_dims: 2 (images [B, C, H, W]) or 3 (volumes [B, C, D, H, W]).
        share_proj: one x_proj / dt_proj for all paths instead of one per path.
        norm: "layer" (LayerNorm, as VMamba) or "rms" on the Di channels before the gate.
        reduce: "sum" or "mean" to merge the K paths.
        channels_last: take and return [B, *S, C] instead of [B, C, *S].
        impl: "fused" (default) or "materialized" (the copy-based reference pipeline).
        backend: selective-scan backend ("auto" | "reference" | "chunked" | "triton").
        dropout: on the output. dt_min, dt_max, dt_init_floor: the step-size initialisation.
        bias, conv_bias: biases of the in/out projections and of the conv.

    Examples:
        >>> import torch
        >>> from ssmkit.layers.ss2d import SS2D
        >>> _ = torch.manual_seed(0)
        >>> SS2D(d_model=8, strategy="cross")(torch.randn(2, 8, 6, 5)).shape
        torch.Size([2, 8, 6, 5])
        >>> SS2D(d_model=8, strategy="tri_orient", spatial_dims=3)(torch.randn(1, 8, 3, 4, 5)).shape
        torch.Size([1, 8, 3, 4, 5])
    """

    input_kind = "image2d"  # the class default; an instance built with spatial_dims=3 says "volume3d"

    def __init__(
        self,
        d_model: int = 16,
        d_state: int = 8,
        expand: float = 2.0,
        dt_rank: int | str = "auto",
        d_conv: int = 3,
        strategy: str | ScanStrategy = "cross",
        spatial_dims: int = 2,
        share_proj: bool = False,
        norm: str = "layer",
        reduce: str = "sum",
        channels_last: bool = False,
        impl: str = "fused",
        backend: str = "auto",
        dropout: float = 0.0,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        bias: bool = False,
        conv_bias: bool = True,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        owner = type(self).__name__
        self.d_model = positive_int(d_model, "d_model", owner)
        self.d_state = positive_int(d_state, "d_state", owner)
        if spatial_dims not in (2, 3):
            raise ValueError(f"{owner} spatial_dims must be 2 or 3; got {spatial_dims!r}")
        if not (isinstance(expand, (int, float)) and expand > 0):
            raise ValueError(f"{owner} expand must be a positive number; got {expand!r}")
        self.d_inner = positive_int(int(expand * d_model), "d_inner (expand * d_model)", owner)
        if dt_rank == "auto":
            dt_rank = math.ceil(d_model / 16)
        self.dt_rank = positive_int(dt_rank, "dt_rank", owner)
        d_conv = positive_int(d_conv, "d_conv", owner)
        if d_conv % 2 == 0:
            raise ValueError(f"{owner} d_conv must be odd so the conv keeps the spatial size; got {d_conv}")
        if norm not in ("layer", "rms"):
            raise ValueError(f"{owner} norm must be 'layer' or 'rms'; got {norm!r}")
        if reduce not in ("sum", "mean"):
            raise ValueError(f"{owner} reduce must be 'sum' or 'mean'; got {reduce!r}")
        if impl not in IMPLS:
            raise ValueError(f"{owner} impl must be one of {list(IMPLS)}; got {impl!r}")
        if backend not in BACKENDS:
            raise ValueError(f"{owner} backend must be one of {list(BACKENDS)}; got {backend!r}")
        if not 0.0 < dt_min <= dt_max:
            raise ValueError(f"{owner} needs 0 < dt_min <= dt_max; got dt_min={dt_min}, dt_max={dt_max}")

        self.spatial_dims = spatial_dims
        self.input_kind = _INPUT_KIND[spatial_dims]
        self.strategy = _resolve_strategy(strategy, spatial_dims)
        self.num_paths = K = self.strategy.num_paths(spatial_dims)
        self.share_proj = bool(share_proj)
        self.reduce = reduce
        self.channels_last = bool(channels_last)
        self.impl = impl
        self.backend = backend
        kw = {"device": device, "dtype": dtype}
        Di, N, R = self.d_inner, self.d_state, self.dt_rank
        Kp = 1 if self.share_proj else K

        self.in_proj = nn.Linear(d_model, 2 * Di, bias=bias, **kw)
        conv_cls = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.conv = conv_cls(Di, Di, d_conv, padding=d_conv // 2, groups=Di, bias=conv_bias, **kw)
        # Per-path projections are stored stacked [Kp, out, in] so one einsum applies all of them.
        self.x_proj_weight = nn.Parameter(torch.empty(Kp, R + 2 * N, Di, **kw))
        self.dt_proj_weight = nn.Parameter(torch.empty(Kp, Di, R, **kw))
        self.dt_proj_bias = nn.Parameter(torch.empty(Kp, Di, **kw))
        self.A_log = nn.Parameter(torch.empty(K * Di, N, device=device, dtype=torch.float32))
        self.D = nn.Parameter(torch.empty(K * Di, device=device, dtype=torch.float32))
        # The step-size bias sets each channel's initial memory length (softplus^-1 of dt):
        # decaying it towards 0 would move every step to softplus(0), like decaying A_log or D.
        for p in (self.A_log, self.D, self.dt_proj_bias):
            p._no_weight_decay = True
        self.out_norm = nn.LayerNorm(Di, **kw) if norm == "layer" else RMSNorm(Di, **kw)
        self.out_proj = nn.Linear(Di, d_model, bias=bias, **kw)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._dt_init = (dt_min, dt_max, dt_init_floor)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """Mamba's initialisation: S4D-real A, unit D, dt log-uniform in [dt_min, dt_max]."""
        dt_min, dt_max, floor = self._dt_init
        Di, R, N = self.d_inner, self.dt_rank, self.d_state
        nn.init.uniform_(self.x_proj_weight, -(Di**-0.5), Di**-0.5)
        nn.init.uniform_(self.dt_proj_weight, -(R**-0.5), R**-0.5)
        dt = torch.exp(torch.rand(self.dt_proj_bias.shape, device=self.D.device)
                       * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp_min(floor)
        self.dt_proj_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        A = torch.arange(1, N + 1, dtype=torch.float32, device=self.A_log.device)
        self.A_log.copy_(torch.log(A).expand_as(self.A_log))
        self.D.fill_(1.0)

    # ------------------------------------------------------------------------------ helpers
    def example_input(self, batch: int = 2) -> torch.Tensor:
        """A small input in this layer's layout, for registry tests and smoke checks."""
        p = self.in_proj.weight
        spatial = _EXAMPLE_SHAPE[self.spatial_dims]
        shape = (batch, *spatial, self.d_model) if self.channels_last else (batch, self.d_model, *spatial)
        return torch.randn(shape, device=p.device, dtype=p.dtype)

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__} expects a torch.Tensor; got {type(x).__name__}")
        axes = "H, W" if self.spatial_dims == 2 else "D, H, W"
        form = f"[B, {axes}, {self.d_model}]" if self.channels_last else f"[B, {self.d_model}, {axes}]"
        chans = x.shape[-1] if self.channels_last else (x.shape[1] if x.dim() > 1 else None)
        if x.dim() != self.spatial_dims + 2 or chans != self.d_model:
            raise ValueError(f"{type(self).__name__} expects input {form}; got {list(x.shape)}")

    def _per_path(self, t: torch.Tensor) -> torch.Tensor:
        """[Kp, ...] -> [K, ...] (a broadcast view when the projections are shared)."""
        return t.expand(self.num_paths, *t.shape[1:])

    # ---------------------------------------------------------------------------------- core
    def core(self, x: torch.Tensor, impl: str | None = None) -> torch.Tensor:
        """The scan core, [B, Di, *S] -> [B, Di, *S]: projections, K-path scan, merge."""
        impl = self.impl if impl is None else impl
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {list(IMPLS)}; got {impl!r}")
        batch, Di, *spatial = x.shape
        shape = tuple(spatial)
        L = math.prod(shape)
        K, N, R = self.num_paths, self.d_state, self.dt_rank
        A = -torch.exp(self.A_log.float())
        dt_bias = self._per_path(self.dt_proj_bias).reshape(K * Di).float()
        dt_w = self._per_path(self.dt_proj_weight)
        if impl == "fused":
            flat = x.reshape(batch, Di, L)
            index = self.strategy.index(shape, x.device)
            # Project in raster order (the projection is per position), then gather only the
            # R + 2N projected channels into each path's visit order.
            Kp, c = self.x_proj_weight.shape[:2]
            x_dbl = torch.matmul(self.x_proj_weight.reshape(Kp * c, Di), flat).view(batch, Kp, c, L)
            x_dbl = x_dbl.expand(batch, K, c, L).gather(-1, index.view(1, K, 1, L).expand(batch, K, c, L))
            dt_r, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=2)
            delta = torch.einsum("bkrl,kdr->bkdl", dt_r, dt_w).reshape(batch, K * Di, L)
            y = fused_path_scan(flat, delta, A, Bs.contiguous(), Cs.contiguous(), index, D=self.D,
                                delta_bias=dt_bias, reduce=self.reduce,
                                path_inverse=self.strategy.inverse(shape, x.device), backend=self.backend)
            return y.view(batch, Di, *shape)
        xs = self.strategy.scan(x)  # [B, K, Di, L]: the K materialised copies
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self._per_path(self.x_proj_weight))
        dt_r, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=2)
        delta = torch.einsum("bkrl,kdr->bkdl", dt_r, dt_w).reshape(batch, K * Di, L)
        y = selective_scan(xs.view(batch, K * Di, L), delta, A, Bs.contiguous(), Cs.contiguous(), D=self.D,
                           delta_bias=dt_bias, backend=self.backend)
        return self.strategy.merge(y.view(batch, K, Di, L), shape, reduce=self.reduce)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, *S] -> [B, C, *S] (channels-last: [B, *S, C] -> [B, *S, C])."""
        self._check_input(x)
        x_cl = x if self.channels_last else x.movedim(1, -1)
        xin, z = self.in_proj(x_cl).chunk(2, dim=-1)  # [B, *S, Di] each
        xin = xin.movedim(-1, 1)  # [B, Di, *S], channels-last storage
        # On CUDA the fused core reads a channels-last map in place (each step's channels are one
        # contiguous run, so gathers along any path coalesce); the CPU paths want channels-first
        # rows. cuDNN's channels-last depthwise Conv3d was 5x slower in fwd+bwd on the H100
        # (docs/benchmarks.md), so 3-D convolves channels-first and makes one channels-last copy.
        to_cl = self.impl == "fused" and xin.is_cuda
        if not to_cl or self.spatial_dims == 3:
            xin = xin.contiguous()
        xin = F.silu(self.conv(xin))
        if to_cl and self.spatial_dims == 3:
            xin = xin.contiguous(memory_format=torch.channels_last_3d)
        y = self.core(xin)
        y = self.out_norm(y.movedim(1, -1)) * F.silu(z)  # [B, *S, Di]
        out = self.dropout(self.out_proj(y))
        return out if self.channels_last else out.movedim(-1, 1).contiguous()

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_inner={self.d_inner}, d_state={self.d_state}, "
                f"strategy={self.strategy.name!r}, K={self.num_paths}, spatial_dims={self.spatial_dims}, "
                f"share_proj={self.share_proj}, impl={self.impl!r}")


@register_block("ss3d")
class SS3D(SS2D):
    """:class:`SS2D` for volumes: ``spatial_dims=3`` and the ``tri_orient`` scan by default."""

    input_kind = "volume3d"

    def __init__(self, d_model: int = 16, strategy: str | ScanStrategy = "tri_orient",
                 spatial_dims: int = 3, **kwargs):
        super().__init__(d_model=d_model, strategy=strategy, spatial_dims=spatial_dims, **kwargs)


@register_block("vss_block")
class VSSBlock(NoWeightDecay, nn.Module):
    """Visual state-space block: ``x + SS2D(LN(x))`` then ``x + MLP(LN(x))``.

    Input and output [B, C, *S] (or [B, *S, C] with ``channels_last``); the block works
    channels-last inside so the norms and the MLP are plain Linear/LayerNorm.

    Args:
        d_model: C. spatial_dims: 2 or 3. strategy: scan strategy of the mixer.
        mlp_ratio: hidden width of the MLP as a multiple of C (0 drops the MLP).
        drop_path: stochastic-depth rate of both residual branches.
        norm_eps: LayerNorm epsilon. Other keyword arguments go to :class:`SS2D`.
    """

    input_kind = "image2d"

    def __init__(self, d_model: int = 16, spatial_dims: int = 2, strategy: str | ScanStrategy | None = None,
                 mlp_ratio: float = 4.0, drop_path: float = 0.0, norm_eps: float = 1e-6,
                 channels_last: bool = False, **ss_kwargs):
        super().__init__()
        positive_int(d_model, "d_model", "VSSBlock")
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(f"VSSBlock drop_path must be in [0, 1); got {drop_path!r}")
        if not mlp_ratio >= 0:
            raise ValueError(f"VSSBlock mlp_ratio must be >= 0; got {mlp_ratio!r}")
        if strategy is None:
            strategy = "cross" if spatial_dims == 2 else "tri_orient"
        kw = {"device": ss_kwargs.get("device"), "dtype": ss_kwargs.get("dtype")}
        self.d_model = d_model
        self.channels_last = bool(channels_last)
        self.drop_path = float(drop_path)
        self.norm1 = nn.LayerNorm(d_model, eps=norm_eps, **kw)
        self.mixer = SS2D(d_model, strategy=strategy, spatial_dims=spatial_dims, channels_last=True, **ss_kwargs)
        self.spatial_dims = self.mixer.spatial_dims
        self.input_kind = self.mixer.input_kind
        hidden = int(d_model * mlp_ratio)
        self.norm2 = nn.LayerNorm(d_model, eps=norm_eps, **kw) if hidden > 0 else None
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden, **kw), nn.GELU(),
                                 nn.Linear(hidden, d_model, **kw)) if hidden > 0 else None

    def example_input(self, batch: int = 2) -> torch.Tensor:
        x = self.mixer.example_input(batch)  # channels-last
        return x if self.channels_last else x.movedim(-1, 1).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, *S] -> [B, C, *S] (channels-last: [B, *S, C] -> [B, *S, C])."""
        if not isinstance(x, torch.Tensor) or x.dim() != self.spatial_dims + 2:
            got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"VSSBlock expects a {self.spatial_dims}-D map with {self.d_model} channels; got {got}")
        h = x if self.channels_last else x.movedim(1, -1)
        h = h + drop_path(self.mixer(self.norm1(h)), self.drop_path, self.training)
        if self.mlp is not None:
            h = h + drop_path(self.mlp(self.norm2(h)), self.drop_path, self.training)
        return h if self.channels_last else h.movedim(-1, 1).contiguous()



__all__ = ["IMPLS", "SS2D", "SS3D", "VSSBlock", "drop_path"]
