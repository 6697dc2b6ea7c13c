"""Gated linear attention, chunked pure-PyTorch form (CPU default, GPU fallback).

The sequence is cut into chunks of ``chunk_size``. Inside a chunk the output is an
attention-like product ``A @ v`` with ``A[i, j] = scale * sum_k q_ik k_jk exp(b_ik - b_jk)``
(``b`` the in-chunk cumulative log gate, ``j <= i``); across chunks a [K, V] state is carried
by a short loop over chunks. Everything is differentiated by autograd.

Two intra-chunk forms, picked per call (``intra="auto"``):
- factorised: ``A = tril((q * exp(b)) @ (k * exp(-b))^T)``, one matmul. ``exp(-b)`` grows with
  the decay accumulated inside a chunk, so this is used only while every chunk's decay span
  ``-b_last`` stays below ``FACTORISED_MAX_SPAN`` (exp(60) ~ 1e26 keeps float32 products normal
  and exact to rounding); with GLA's gate normaliser (tau = 16) that is the usual case;
- secondary chunking (the GLA paper's), used otherwise: every exponent is taken relative to a
  reference point between ``j`` and ``i`` and is therefore <= 0, so it never overflows:
- sub-chunk pairs (query sub-chunk p, key positions before it) use the last position before
  sub-chunk p as the reference, which turns the block into one matmul;
- inside a sub-chunk (size ``subchunk_size``) the exponent ``b_i - b_j`` is formed exactly per
  element, a [c, c, K] tensor per sub-chunk;
- the state update uses ``exp(b_last - b_j)`` and the inter-chunk read ``exp(b_i)``, both <= 1.
"""

from __future__ import annotations

import torch

from ssmkit._checks import one_of
from ssmkit.ops.gla.reference import per_sequence

INTRA_MODES = ("auto", "factorised", "secondary")
# largest in-chunk log-decay span for which exp(span) is safe to factor out, per compute dtype
FACTORISED_MAX_SPAN = {torch.float32: 60.0, torch.float64: 600.0}


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _chunked_one(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float,
    h0: torch.Tensor,
    chunk_size: int,
    subchunk_size: int,
    intra: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k, g: [B, H, T, K]; v: [B, H, T, V]; h0: [B, H, K, V] (compute dtype)."""
    B, H, T, K = q.shape
    V = v.shape[-1]
    if T == 0:
        return v.new_zeros(B, H, 0, V), h0
    c = min(subchunk_size, chunk_size)
    # short sequences should not pay for a full chunk of padding
    C = min(_round_up(chunk_size, c), _round_up(T, c))
    Tp = _round_up(T, C)
    if Tp != T:
        # zero keys with zero log-gates leave the state untouched, so padding is exact
        pad = (0, 0, 0, Tp - T)
        q, k, v, g = (torch.nn.functional.pad(t, pad) for t in (q, k, v, g))
    N = Tp // C
    q, k, g = (t.reshape(B, H, N, C, K) for t in (q, k, g))
    v = v.reshape(B, H, N, C, V)
    b = g.cumsum(dim=3)  # [B, H, N, C, K], non-increasing along C

    qe = q * b.exp()  # the query read against the state entering the chunk, also used below
    if intra == "auto":
        # one host sync per call; this form is the CPU path (on CUDA fla is preferred)
        limit = FACTORISED_MAX_SPAN.get(b.dtype, 60.0)
        intra = "factorised" if float((-b[:, :, :, -1]).detach().max()) <= limit else "secondary"
    if intra == "factorised":
        causal_c = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
        A = torch.matmul(qe, (k * (-b).exp()).transpose(-1, -2)).masked_fill(~causal_c, 0.0)
    else:
        A = _intra_secondary(q, k, b, c)
    o = torch.matmul(A, v)

    # --- inter-chunk state: a short loop over chunks ------------------------------------------
    b_last = b[:, :, :, -1]  # [B, H, N, K]
    kv = torch.matmul((k * (b_last[:, :, :, None] - b).exp()).transpose(-1, -2), v)  # [B, H, N, K, V]
    decay = b_last.exp()[..., None]
    states = []
    state = h0
    for n in range(N):
        states.append(state)
        state = decay[:, :, n] * state + kv[:, :, n]
    S = torch.stack(states, dim=2)  # state entering each chunk, [B, H, N, K, V]
    o = o + torch.matmul(qe, S)
    o = (o * scale).reshape(B, H, Tp, V)[:, :, :T]
    return o, state


def _intra_secondary(q: torch.Tensor, k: torch.Tensor, b: torch.Tensor, c: int) -> torch.Tensor:
    """In-chunk scores by secondary chunking. q, k, b: [B, H, N, C, K] -> A [B, H, N, C, C]."""
    B, H, N, C, K = q.shape
    P = C // c
    # --- off-diagonal sub-chunk blocks ----------------------------------------------------------
    pos = torch.arange(C, device=q.device)
    ref_idx = (torch.arange(P, device=q.device) * c - 1).clamp_min(0)  # [P]
    b_ref = b[:, :, :, ref_idx]  # [B, H, N, P, K]
    bs = b.reshape(B, H, N, P, c, K)
    qg = q.reshape(B, H, N, P, c, K) * (bs - b_ref[:, :, :, :, None]).exp()
    # key j feeds query sub-chunk p only when j < p * c (strictly earlier sub-chunks)
    before = pos[None, :] < (torch.arange(P, device=q.device) * c)[:, None]  # [P, C]
    expo = (b_ref[:, :, :, :, None, :] - b[:, :, :, None, :, :]).masked_fill(~before[:, :, None], float("-inf"))
    kg = k[:, :, :, None] * expo.exp()  # [B, H, N, P, C, K]
    A = torch.einsum("bhnpik,bhnpjk->bhnpij", qg, kg).reshape(B, H, N, C, C)

    # --- diagonal sub-chunk blocks (exact per-element exponent) ----------------------------------
    ks = k.reshape(B, H, N, P, c, K)
    causal = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    expo_d = (bs[:, :, :, :, :, None] - bs[:, :, :, :, None, :]).masked_fill(~causal[:, :, None], float("-inf"))
    A_d = (q.reshape(B, H, N, P, c, K)[:, :, :, :, :, None] * ks[:, :, :, :, None] * expo_d.exp()).sum(-1)
    eye = torch.eye(P, dtype=A.dtype, device=q.device)
    return A + (A_d[:, :, :, :, :, None, :] * eye[:, None, :, None]).reshape(B, H, N, C, C)


def gla_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    chunk_size: int = 64,
    subchunk_size: int = 16,
    intra: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked GLA on head-first inputs; same contract as :func:`gla_reference`.

    Args:
        q, k, gk: [B, H, T, K]; v: [B, H, T, V].
        initial_state: [N, H, K, V]; cu_seqlens: [N+1] (B == 1), each sequence runs separately.
        chunk_size: tokens per chunk (the inter-chunk loop has ceil(T / chunk_size) steps).
        subchunk_size: size of the exact diagonal blocks of the secondary form; its memory
            grows as T * subchunk_size * K.
        intra: "auto" (factorised when the decay span allows, else secondary), "factorised"
            (may overflow on strong decay; for tests and benchmarks) or "secondary".

    Returns:
        (o [B, H, T, V] in v's dtype, final state [N, H, K, V] in the compute dtype or None).
    """
    one_of(intra, INTRA_MODES, "intra", "gla_chunked")
    return per_sequence(lambda q, k, v, g, h0: _chunked_one(q, k, v, g, scale, h0, chunk_size, subchunk_size, intra),
                        q, k, v, gk, initial_state, output_final_state, cu_seqlens)
