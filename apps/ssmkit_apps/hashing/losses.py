"""Hashing losses: pairwise likelihood, quantisation, code reconstruction, InfoNCE alignment.

All take relaxed codes ``h`` [B, K] in (-1, 1) and multi-hot labels [B, C]; ``S`` [B, B] is 1
where two items share a label. Computed in float32 whatever the autocast dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def similarity(labels_a: torch.Tensor, labels_b: torch.Tensor) -> torch.Tensor:
    """[B, C], [B', C] multi-hot -> [B, B'] float: 1 where the items share a label."""
    return ((labels_a.float() @ labels_b.float().T) > 0).float()


def pairwise_nll(u: torch.Tensor, v: torch.Tensor, S: torch.Tensor, alpha: float) -> torch.Tensor:
    """Negative log-likelihood of the pairwise similarities under p(S=1) = sigmoid(theta):
    mean of softplus(theta) - S * theta, with theta = alpha * cos(u, v).

    DCMH's likelihood uses theta = <u, v> / 2; with codes that start near zero (tanh of a fresh
    layer) its gradient, proportional to the other code, vanishes, and training idles at the
    label prior for hundreds of steps. The cosine keeps the gradient's scale (the quantisation
    term drives |h| to 1, where cosine and normalised inner product agree) and one ``alpha`` serves
    every code length."""
    theta = alpha * (F.normalize(u.float(), dim=-1) @ F.normalize(v.float(), dim=-1).T)
    return (F.softplus(theta) - S * theta).mean()


def quantization(h: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of the relaxed code from the nearest binary code: mean (|h| - 1)^2."""
    return (h.float().abs() - 1.0).pow(2).mean()


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between paired rows of a [B, d] and b [B, d] (cosine / temperature)."""
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    logits = a @ b.T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def local_info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE per token position of paired token sets a, b [B, M, d], averaged over the M positions
    (prompt token m of an image against prompt token m of every caption in the batch)."""
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    logits = torch.einsum("imd,jmd->mij", a, b) / temperature  # [M, B, B]
    M, B, _ = logits.shape
    target = torch.arange(B, device=a.device).repeat(M)
    flat = logits.reshape(M * B, B)
    flat_t = logits.transpose(1, 2).reshape(M * B, B)
    return 0.5 * (F.cross_entropy(flat, target) + F.cross_entropy(flat_t, target))


def prompthash_loss(out: dict, labels: torch.Tensor, bits: tuple[int, ...], aux_bits: int, alpha: float,
                    intra: float, quant: float, recon: float, nce_global: float, nce_local: float,
                    temperature: float, prompt: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PromptHash's objective: for every code length (the auxiliary one included) the inter-modal
    (image-text) and intra-modal (image-image, text-text) pairwise likelihood plus quantisation;
    with label prompts (``out["prompt"]``), ``prompt`` x the likelihood of image and text codes
    against the label prompts' codes; the short codes' reconstruction of the long code; global and
    local InfoNCE."""
    S = similarity(labels, labels)
    lengths = (*bits, aux_bits) if aux_bits else bits
    pair = torch.zeros((), device=labels.device)
    q = torch.zeros((), device=labels.device)
    for b in lengths:
        hi, ht = out["img"][b], out["txt"][b]
        pair = pair + pairwise_nll(hi, ht, S, alpha)
        if intra:
            pair = pair + intra * (pairwise_nll(hi, hi, S, alpha) + pairwise_nll(ht, ht, S, alpha))
        if prompt and "prompt" in out:
            hp = out["prompt"][b]
            pair = pair + prompt * (pairwise_nll(hi, hp, S, alpha) + pairwise_nll(ht, hp, S, alpha))
        q = q + 0.5 * (quantization(hi) + quantization(ht))
    pair, q = pair / len(lengths), q / len(lengths)
    rec = torch.zeros((), device=labels.device)
    if aux_bits and recon:
        target_i, target_t = out["img"][aux_bits].detach().float(), out["txt"][aux_bits].detach().float()
        for b in bits:
            rec = rec + F.mse_loss(out["img_recon"][b].float(), target_i)
            rec = rec + F.mse_loss(out["txt_recon"][b].float(), target_t)
        rec = rec / (2 * len(bits))
    zero = torch.zeros((), device=labels.device)
    g = info_nce(out["img_feat"], out["txt_feat"], temperature) if nce_global else zero
    loc = local_info_nce(out["img_local"], out["txt_local"], temperature) if nce_local else zero
    total = pair + quant * q + recon * rec + nce_global * g + nce_local * loc
    return total, {"pair": pair.detach(), "quant": q.detach(), "recon": rec.detach(), "nce_global": g.detach(),
                   "nce_local": loc.detach()}


def dcmh_loss(out: dict, labels: torch.Tensor, bits: tuple[int, ...], alpha: float, gamma: float,
              eta: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DCMH's objective per code length, on the batch: the inter-modal pairwise likelihood,
    gamma * ||B - F||^2 + ||B - G||^2 with B = sign(F + G) held fixed (DCMH's discrete step), and
    eta * the bit-balance term ||F^T 1||^2 + ||G^T 1||^2 (per bit, batch-normalised)."""
    S = similarity(labels, labels)
    pair = torch.zeros((), device=labels.device)
    q = torch.zeros((), device=labels.device)
    bal = torch.zeros((), device=labels.device)
    for b in bits:
        f, g = out["img"][b].float(), out["txt"][b].float()
        pair = pair + pairwise_nll(f, g, S, alpha)
        B = torch.sign(f + g).detach()
        q = q + 0.5 * ((B - f).pow(2).mean() + (B - g).pow(2).mean())
        bal = bal + 0.5 * (f.mean(0).pow(2).mean() + g.mean(0).pow(2).mean())
    n = len(bits)
    total = (pair + gamma * q + eta * bal) / n
    return total, {"pair": (pair / n).detach(), "quant": (q / n).detach(), "balance": (bal / n).detach()}


__all__ = ["dcmh_loss", "info_nce", "local_info_nce", "pairwise_nll", "prompthash_loss", "quantization", "similarity"]
