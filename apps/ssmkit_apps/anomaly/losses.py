"""Training objectives: the minimax association-discrepancy losses and plain reconstruction."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssmkit_apps.anomaly.model import association_kl


def minimax_losses(out: dict, x: torch.Tensor, k: float) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """The two objectives of association-discrepancy training.

    Prior phase: the prior moves towards the (frozen) series association, minimising the
    discrepancy. Series phase: the series association moves away from the (frozen) prior,
    maximising it, which sharpens attention to non-adjacent normal patterns that anomalies
    lack. The stop-gradients make each phase move only its own side. Returns
    (series_phase_loss, prior_phase_loss, logs); models without associations get two copies
    of the reconstruction loss halves.
    """
    rec = F.mse_loss(out["recon"].float(), x.float())
    if "forecast" in out:
        # MAAT's optional forecasting head: row t predicts row t + 1, trained beside the reconstruction.
        rec = rec + F.mse_loss(out["forecast"][:, :-1].float(), x[:, 1:].float())
    if not out["series"]:
        return rec / 2, rec / 2, {"rec_loss": rec.detach()}
    n = len(out["series"])
    series_term = (
        sum(
            (association_kl(s, p.detach()) + association_kl(p.detach(), s)).mean()
            for s, p in zip(out["series"], out["prior"])
        )
        / n
    )
    prior_term = (
        sum(
            (association_kl(p, s.detach()) + association_kl(s.detach(), p)).mean()
            for s, p in zip(out["series"], out["prior"])
        )
        / n
    )
    logs = {"rec_loss": rec.detach(), "discrepancy": series_term.detach()}
    return rec - k * series_term, rec + k * prior_term, logs
