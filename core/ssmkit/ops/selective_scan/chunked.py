"""Chunked selective scan: the fast pure-PyTorch path (CPU default, GPU fallback).

The recurrence ``h[t] = exp(dt[t] A) h[t-1] + dt[t] B[t] u[t]`` is evaluated exactly as the
reference does, one multiply-add per step, but arranged so that Python touches each time step
once with a single fused in-place op on all B·N·D state entries, and everything else
(discretisation, input projection, readout, every gradient reduction) runs as large vectorised
ops over a chunk of T steps, written into preallocated buffers:

    per chunk [t0, t0+T), time-major layout [T, B, N, D] (D innermost: long, vectorisable rows)
        dA  = exp(dt ⊗ A)               values in (0, 1]; no exp(-cumsum) anywhere
        hs  = dt·u ⊗ B                  then hs[j+1] += dA[j] * hs[j] in place, j = 0..T-1
        y   = Σ_n C ⊙ hs                one batched [1, N] x [N, D] product per (t, b)

Why not a log-space segment-sum formulation: the decay is per state entry (A is [D, N], not one
scalar per head as in Mamba-2), so the T×T decay matrix cannot be factored out of the state and
costs T times the arithmetic of the recurrence; a Blelloch or Hillis-Steele scan costs log2(T)
full passes instead of one. The in-place recurrence is the cheapest on CPU and exactly as stable
as the reference: every factor lies in [0, 1], so it is finite at every chunk size and length.

Memory is O(B·D·T·N) for four chunk buffers, plus the chunk-boundary states ([L/T, B, N, D])
kept for the backward pass, plus a few [L, B, D] time-major copies. The backward pass recomputes
each chunk's states from its boundary state and runs the adjoint recurrence
``g[t-1] += dA[t] g[t]`` (seeded with C[t] dy[t]) right to left through the chunk.

``reverse=True`` runs the same loops with the step order flipped (no flipped copies);
``cu_seqlens`` cuts chunks at sequence boundaries and restarts the state there.

On CPU the op caps PyTorch's intra-op threads (process-wide, restored on exit) while it runs,
so that each thread gets at least 2^20 entries per op: its chunk ops are cache-sized and
number in the thousands, and below that size fork-join costs more than it saves.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from ssmkit._checks import positive_int
from ssmkit.ops.utils import compute_dtype, sequence_spans

# A [T, B, N, D] buffer of about this many entries (2 MB in float32) stays in cache.
_TARGET_CHUNK_ELEMS = 1 << 19
_MIN_CHUNK, _MAX_CHUNK = 16, 256


def default_chunk_size(batch: int, dim: int, nstate: int) -> int:
    """Chunk length T so that one [T, B, N, D] buffer holds about 2^19 entries."""
    per_step = max(1, batch * dim * nstate)
    return int(min(_MAX_CHUNK, max(_MIN_CHUNK, _TARGET_CHUNK_ELEMS // per_step)))


def _plan(L: int, cu_seqlens: torch.Tensor | None, chunk: int, reverse: bool) -> list[list[tuple[int, int]]]:
    """Per segment (one, or one per packed sequence), its chunks (t0, t1) in scan order."""
    plan = []
    for start, end in sequence_spans(L, cu_seqlens):
        if reverse:
            plan.append([(max(start, t1 - chunk), t1) for t1 in range(end, start, -chunk)])
        else:
            plan.append([(t0, min(end, t0 + chunk)) for t0 in range(start, end, chunk)])
    return plan


class _Workspace:
    """Time-major inputs and reusable chunk buffers shared by the forward and backward loops.

    dtT, dtuT: [L, B, D]; BT, CT: [L, B, G, N]; A_T: [N, D]. Buffers are [T(+1), B, N, D]; their
    rows are unbound once so the per-step loop costs one view lookup and one op.
    """

    def __init__(self, dtT, dtuT, A_T, BT, CT, chunk: int, reverse: bool):
        self.dtT, self.dtuT, self.A_T, self.BT, self.CT = dtT, dtuT, A_T, BT, CT
        # exp(x) = exp2(x log2 e): PyTorch's CPU exp2 is 2-3x faster than its exp here, and exp
        # goes through MKL's threaded VML, which stalls tiny calls on a busy machine.
        self.A2_T = A_T * math.log2(math.e)
        self.reverse = reverse
        _, batch, dim = dtT.shape
        groups, nstate = BT.shape[2], BT.shape[3]
        self.batch, self.dim, self.nstate, self.groups = batch, dim, nstate, groups
        self.state_shape = (batch, nstate, dim)
        new = dtT.new_empty
        self.dA = new(chunk, batch, nstate, dim)
        self.hs = new(chunk + 1, batch, nstate, dim)
        self.dA_rows, self.hs_rows = self.dA.unbind(0), self.hs.unbind(0)
        self.gH = self.q = None

    def backward_buffers(self) -> None:
        self.gH = torch.empty_like(self.hs)
        self.q = torch.empty_like(self.dA)
        self.gH_rows = self.gH.unbind(0)

    def split(self, buf: torch.Tensor, T: int):
        """(index of the incoming state, per-step output rows, per-step previous rows) of a [T+1] buffer."""
        if self.reverse:
            return T, buf[:T], buf[1 : T + 1]
        return 0, buf[1 : T + 1], buf[:T]

    def outer(self, v: torch.Tensor, W: torch.Tensor, out: torch.Tensor) -> None:
        """out[t, b, n, d] = v[t, b, d] * W[t, b, g(d), n]  (v: [T, B, D], W: [T, B, G, N])."""
        T, G = v.shape[0], self.groups
        torch.mul(v.view(T, self.batch, 1, G, self.dim // G), W.transpose(2, 3).unsqueeze(-1),
                  out=out.view(T, self.batch, self.nstate, G, self.dim // G))

    def contract_n(self, X: torch.Tensor, W: torch.Tensor, out: torch.Tensor) -> None:
        """out[t, b, d] = Σ_n X[t, b, n, d] W[t, b, g(d), n]  (X: [T, B, N, D], W: [T, B, G, N]).

        One batched [1, N] x [N, D/G] product per (t, b, g): the N-reduction runs in BLAS.
        """
        rows, G, dg = X.shape[0] * self.batch, self.groups, self.dim // self.groups
        X3, W3, out3 = X.view(rows, self.nstate, self.dim), W.reshape(rows, G, self.nstate), out.view(rows, 1, self.dim)
        for g in range(G):
            sl = slice(g * dg, (g + 1) * dg)
            torch.bmm(W3[:, g : g + 1], X3[:, :, sl], out=out3[:, :, sl])

    def contract_d(self, X: torch.Tensor, v: torch.Tensor, out: torch.Tensor) -> None:
        """out[t, b, g, n] = Σ_{d in group g} X[t, b, n, d] v[t, b, d]  (out: [T, B, G, N])."""
        rows, G, dg = X.shape[0] * self.batch, self.groups, self.dim // self.groups
        X3, v3, out3 = X.view(rows, self.nstate, self.dim), v.reshape(rows, 1, self.dim), out.view(rows, G, self.nstate)
        for g in range(G):
            sl = slice(g * dg, (g + 1) * dg)
            torch.bmm(v3[:, :, sl], X3[:, :, sl].transpose(1, 2), out=out3[:, g : g + 1])

    def recompute(self, h_in: torch.Tensor, t0: int, t1: int) -> None:
        """Fill dA[:T] and hs[:T+1] for chunk [t0, t1) starting from state h_in [B, N, D]."""
        T = t1 - t0
        dA = self.dA[:T]
        torch.mul(self.dtT[t0:t1].unsqueeze(2), self.A2_T, out=dA)
        torch.exp2(dA, out=dA)
        first, out_rows, _ = self.split(self.hs[: T + 1], T)
        self.hs[first].copy_(h_in)
        self.outer(self.dtuT[t0:t1], self.BT[t0:t1], out_rows)
        rows, decays = self.hs_rows, self.dA_rows
        if self.reverse:
            for j in range(T - 1, -1, -1):
                rows[j].addcmul_(decays[j], rows[j + 1])
        else:
            for j in range(T):
                rows[j + 1].addcmul_(decays[j], rows[j])


def _forward_core(ws: _Workspace, plan, inits: list[torch.Tensor], yT: torch.Tensor):
    """Fill yT [L, B, D] with Σ_n C h; return (chunk-start states [K, B, N, D], final state per segment)."""
    states = yT.new_empty((sum(len(p) for p in plan),) + ws.state_shape)
    finals, k = [], 0
    for seg, pieces in enumerate(plan):
        h = inits[seg]
        for t0, t1 in pieces:
            T = t1 - t0
            states[k].copy_(h)
            k += 1
            ws.recompute(h, t0, t1)
            _, out_rows, _ = ws.split(ws.hs[: T + 1], T)
            ws.contract_n(out_rows, ws.CT[t0:t1], yT[t0:t1])
            h = ws.hs[0 if ws.reverse else T]
        finals.append(h.clone())
    return states, finals


def _backward_core(ws: _Workspace, plan, states, g_finals, gyT: torch.Tensor, needs: dict[str, bool]):
    """Adjoint pass; gyT [L, B, D] is the gradient of Σ_n C h.

    Returns time-major gradients of (dt·u [L, B, D], dt through the decay [L, B, D],
    A [N, D], B [L, B, G, N], C [L, B, G, N]) and the gradient of each segment's initial state.
    """
    ws.backward_buffers()
    g_dtuT = torch.empty_like(gyT)
    g_dtT = torch.empty_like(gyT)
    g_A = torch.zeros_like(ws.A_T) if needs["A"] else None
    g_BT = torch.empty_like(ws.BT) if needs["B"] else None
    g_CT = torch.empty_like(ws.CT) if needs["C"] else None
    g_inits, k0 = [], 0
    for seg, pieces in enumerate(plan):
        g = g_finals[seg]
        for idx in range(len(pieces) - 1, -1, -1):
            t0, t1 = pieces[idx]
            T = t1 - t0
            ws.recompute(states[k0 + idx], t0, t1)
            dA = ws.dA[:T]
            _, out_rows, prev_rows = ws.split(ws.hs[: T + 1], T)
            first, g_out, _ = ws.split(ws.gH[: T + 1], T)
            # Each step's output state is read out by C, then carries the later steps' gradient.
            ws.outer(gyT[t0:t1], ws.CT[t0:t1], g_out)
            ws.gH[first].zero_()
            if g is not None:
                ws.gH[0 if ws.reverse else T].add_(g)
            rows, decays = ws.gH_rows, ws.dA_rows
            if ws.reverse:
                for j in range(T):
                    rows[j + 1].addcmul_(decays[j], rows[j])
            else:
                for j in range(T - 1, -1, -1):
                    rows[j].addcmul_(decays[j], rows[j + 1])
            g = ws.gH[first].clone()  # the buffer row is reused by the next chunk
            # d/d(dt A) of exp(dt A) h_prev is g_out * dA * h_prev.
            q = ws.q[:T]
            torch.mul(g_out, prev_rows, out=q)
            q.mul_(dA)
            ws.contract_n(g_out, ws.BT[t0:t1], g_dtuT[t0:t1])
            if g_BT is not None:
                ws.contract_d(g_out, ws.dtuT[t0:t1], g_BT[t0:t1])
            if g_CT is not None:
                ws.contract_d(out_rows, gyT[t0:t1], g_CT[t0:t1])
            tmp = g_out  # no longer needed: its storage takes the products below
            torch.mul(q, ws.A_T, out=tmp)
            torch.sum(tmp, 2, out=g_dtT[t0:t1])
            if g_A is not None:
                q.mul_(ws.dtT[t0:t1].unsqueeze(2))
                g_A.add_(q.sum((0, 1)))
        g_inits.append(g if needs["init"] else None)
        k0 += len(pieces)
    return g_dtuT, g_dtT, g_A, g_BT, g_CT, g_inits


def _time_major(x: torch.Tensor, cd: torch.dtype) -> torch.Tensor:
    """[B, D, L] -> [L, B, D] or [B, G, N, L] -> [L, B, G, N], contiguous, in dtype ``cd``."""
    L = x.shape[-1]
    rows = x.numel() // max(L, 1)
    out = torch.empty((L,) + tuple(x.shape[:-1]), dtype=cd, device=x.device)
    # As a 2-D transpose the copy takes PyTorch's cache-blocked path.
    out.view(L, rows).copy_(x.reshape(rows, L).t())
    return out


def _batch_major(xT: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_time_major` (same dtype): [L, *S] -> [*S, L] contiguous."""
    L = xT.shape[0]
    rows = xT.numel() // max(L, 1)
    out = xT.new_empty(tuple(xT.shape[1:]) + (L,))
    out.view(rows, L).copy_(xT.reshape(L, rows).t())
    return out


def _discretise(u, delta, delta_bias, delta_softplus: bool, cd: torch.dtype):
    """Time-major (dt, dt*u), each [L, B, D] in the compute dtype."""
    dtT = _time_major(delta, cd)
    if delta_bias is not None:
        dtT.add_(delta_bias.to(cd))
    if delta_softplus:
        dtT = F.softplus(dtT)
    dtuT = _time_major(u, cd)
    dtuT.mul_(dtT)
    return dtT, dtuT


def _to_internal_state(h: torch.Tensor, cd: torch.dtype) -> torch.Tensor:
    """[*, D, N] -> [*, N, D] contiguous in the compute dtype."""
    return h.to(cd).transpose(-1, -2).contiguous()


def _initial_states(initial_state, nseg: int, packed: bool, batch: int, dim: int, nstate: int, like):
    if initial_state is None:
        rows = 1 if packed else batch
        return [like.new_zeros(rows, nstate, dim) for _ in range(nseg)]
    h0 = _to_internal_state(initial_state, like.dtype)
    return list(h0.split(1, dim=0)) if packed else [h0]


# Below about this many entries per op, PyTorch's fork-join across intra-op threads costs more
# than it saves, and on a shared machine every join waits for a descheduled worker: at B=2,
# D=256, L=2048, N=16 with 2 threads on a busy 2-core box, fwd+bwd took 4.2 s instead of 0.13 s.
_ELEMS_PER_THREAD = 1 << 20


@contextlib.contextmanager
def _op_threads(u: torch.Tensor, chunk: int, nstate: int):
    """Cap PyTorch's intra-op threads (process-wide) for this op's many cache-sized CPU ops."""
    before = torch.get_num_threads()
    batch, dim, _ = u.shape
    want = max(1, min(before, chunk * batch * dim * nstate // _ELEMS_PER_THREAD))
    if u.device.type != "cpu" or want == before:
        yield
        return
    torch.set_num_threads(want)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _ChunkedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, reverse, plan, chunk,
                packed):
        with _op_threads(u, chunk, A.shape[1]):
            return _ChunkedScan._forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus,
                                         reverse, plan, chunk, packed)

    @staticmethod
    def backward(ctx, g_out, g_final):
        u, A = ctx.saved_tensors[0], ctx.saved_tensors[2]
        with _op_threads(u, ctx.chunk, A.shape[1]):
            return _ChunkedScan._backward(ctx, g_out, g_final)

    @staticmethod
    def _forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, reverse, plan, chunk,
                 packed):
        cd = compute_dtype(u)
        batch, dim, L = u.shape
        nstate = A.shape[1]
        dtT, dtuT = _discretise(u, delta, delta_bias, delta_softplus, cd)
        A_T = A.to(cd).t().contiguous()
        ws = _Workspace(dtT, dtuT, A_T, _time_major(B, cd), _time_major(C, cd), chunk, reverse)
        inits = _initial_states(initial_state, len(plan), packed, batch, dim, nstate, dtT)
        yT = dtT.new_empty(L, batch, dim)
        states, finals = _forward_core(ws, plan, inits, yT)
        del ws, dtT, dtuT
        final = (torch.cat(finals, dim=0) if packed else finals[0]).transpose(1, 2).contiguous()
        y = _batch_major(yT)
        del yT
        if D is not None:
            y.addcmul_(u, D.to(cd)[:, None])
        pre = None
        if z is not None:
            pre = y
            y = y * F.silu(z.to(cd))
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, initial_state, states, pre)
        ctx.delta_softplus, ctx.reverse, ctx.plan, ctx.chunk, ctx.packed = delta_softplus, reverse, plan, chunk, packed
        ctx.set_materialize_grads(False)
        return y.to(u.dtype), final

    @staticmethod
    def _backward(ctx, g_out, g_final):
        u, delta, A, B, C, D, z, delta_bias, initial_state, states, pre = ctx.saved_tensors
        cd = compute_dtype(u)
        batch, dim, L = u.shape
        dtT, dtuT = _discretise(u, delta, delta_bias, ctx.delta_softplus, cd)
        g_z = g_D = None
        if g_out is None:
            gy = u.new_zeros(batch, dim, L, dtype=cd)
        else:
            gy = g_out.to(cd)
            if z is not None:
                z_c = z.to(cd)
                sig = torch.sigmoid(z_c)
                # d silu(z)/dz = s (1 + z (1 - s))
                g_z = gy * pre * sig * (1 + z_c * (1 - sig))
                gy = gy * z_c * sig
        if D is not None:
            g_D = (gy * u).sum((0, 2), dtype=cd)
        plan = ctx.plan
        if g_final is None:
            g_finals = [None] * len(plan)
        else:
            gf = _to_internal_state(g_final, cd)
            g_finals = list(gf.split(1, dim=0)) if ctx.packed else [gf]
        needs = {"A": ctx.needs_input_grad[2], "B": ctx.needs_input_grad[3], "C": ctx.needs_input_grad[4],
                 "init": initial_state is not None and ctx.needs_input_grad[8]}
        ws = _Workspace(dtT, dtuT, A.to(cd).t().contiguous(), _time_major(B, cd), _time_major(C, cd),
                        ctx.chunk, ctx.reverse)
        gyT = _time_major(gy, cd)
        g_dtuT, g_dtT, g_A, g_BT, g_CT, g_inits = _backward_core(ws, plan, states, g_finals, gyT, needs)
        del ws, gyT, dtuT
        # Chain rule in time-major layout, then one transposing copy back to [B, D, L].
        g_uT = g_dtuT * dtT
        if ctx.delta_softplus:
            # softplus'(x) = sigmoid(x) = 1 - exp(-softplus(x)): from dt, without keeping x.
            g_dtT.mul_(dtT.neg_().expm1_().neg_())
            g_dtuT.mul_(dtT)
        del dtT
        g_dtT.addcmul_(g_dtuT, _time_major(u, cd))
        del g_dtuT
        g_u = _batch_major(g_uT)
        del g_uT
        if D is not None:
            g_u.addcmul_(gy, D.to(cd)[:, None])
        g_bias = g_dtT.sum((0, 1)) if delta_bias is not None else None
        g_delta = _batch_major(g_dtT)
        g_init = None
        if needs["init"]:
            parts = [g if g is not None else states.new_zeros((1 if ctx.packed else batch, A.shape[1], dim))
                     for g in g_inits]
            g_init = (torch.cat(parts, dim=0) if ctx.packed else parts[0]).transpose(1, 2)

        def cast(g, like):
            return None if g is None or like is None else g.to(like.dtype).contiguous()

        g_B = None if g_BT is None else _batch_major(g_BT)
        g_C = None if g_CT is None else _batch_major(g_CT)
        g_A = None if g_A is None else g_A.t()
        return (
            cast(g_u, u), cast(g_delta, delta), cast(g_A, A), cast(g_B, B), cast(g_C, C), cast(g_D, D),
            cast(g_z, z), cast(g_bias, delta_bias), cast(g_init, initial_state),
            None, None, None, None, None,
        )


def selective_scan_chunked(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
    reverse: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    chunk_size: int | None = None,
):
    """Chunked selective scan with a hand-written backward; same contract as the reference.

    u, delta, z: [B, D, L]; A: [D, N]; B, C: [B, G, N, L]; D, delta_bias: [D];
    initial_state: [B, D, N] (or [S, D, N] with ``cu_seqlens`` of S+1 boundaries and batch 1).
    Returns y [B, D, L] in u's dtype and, with ``return_final_state``, the final state
    [B, D, N] (or [S, D, N]) in float32 (float64 for float64 inputs); both are differentiable.
    ``chunk_size`` (steps per chunk, default :func:`default_chunk_size`) trades memory for
    fewer, larger vectorised ops; results agree across chunk sizes up to rounding.
    Inputs are not validated here; call :func:`ssmkit.ops.selective_scan.selective_scan`.
    """
    batch, dim, L = u.shape
    if chunk_size is None:
        chunk_size = default_chunk_size(batch, dim, A.shape[1])
    positive_int(chunk_size, "chunk_size")
    if cu_seqlens is not None and batch != 1:
        raise ValueError(f"cu_seqlens packs sequences along L and needs batch 1; got u of shape {list(u.shape)}")
    chunk = max(1, min(chunk_size, L))
    plan = _plan(L, cu_seqlens, chunk, reverse)
    y, final = _ChunkedScan.apply(
        u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, reverse, plan, chunk,
        cu_seqlens is not None,
    )
    return (y, final) if return_final_state else y
