"""The SGLD updates, on the stacked state of all chains at once.

The state is one float tensor ``w`` of shape ``(C, D)``: C chains, D sampled numbers (every sampled
parameter flattened and concatenated). With the minibatch loss gradient ``g = ∇L_m(w)`` (raw, not
scaled by nβ), the localization centre ``w*`` and the drift ``∇U = nβ·g + γ(w − w*)``:

``sgld`` (Welling & Teh 2011, localized as in Lau et al. 2023)::

    w ← w − (ε/2)·∇U + √ε·N(0, I)

``rmsprop_sgld`` (Li et al. 2016, "Preconditioned SGLD"; as devinterp's RMSProp preconditioner),
α = ``alpha``, δ = ``eps``; the running average is of the *raw minibatch gradient* g, so the
preconditioner follows the loss surface and not the nβ-scaled drift::

    V ← α·V + (1−α)·g⊙g            (V = 0 before the first step, or V₀ given: ``rmsprop_warm_start``)
    G = 1 / (√V + δ)
    w ← w − (ε/2)·G⊙∇U + √(ε·G)⊙N(0, I)

:func:`log_acceptance` gives the Metropolis–Hastings log acceptance ratio of a step as if it were a
MALA proposal (Furman & Lau 2024): a well-tuned step size keeps it near 1.

>>> import torch
>>> w, a = torch.zeros(2, 3), torch.zeros(2, 3)
>>> step = sgld_step(w, torch.ones(2, 3), a, None, lr=0.1, localization=1.0, nbeta=2.0,
...                  noise=torch.zeros(2, 3), sampler="sgld")
>>> step.w.tolist()[0], step.precond
([-0.10000000149011612, -0.10000000149011612, -0.10000000149011612], None)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SAMPLERS", "Step", "drift", "sgld_step", "log_acceptance"]

#: Sampler names accepted by :func:`~devvis.slt.estimate_llc`.
SAMPLERS: tuple[str, ...] = ("sgld", "rmsprop_sgld")


@dataclass
class Step:
    """One update: the new state ``w`` ``(C, D)``, the preconditioner ``G`` used (None for plain SGLD), and
    the running average ``V`` to carry to the next step (None for plain SGLD)."""

    w: torch.Tensor
    precond: torch.Tensor | None
    sq_avg: torch.Tensor | None


def drift(w: torch.Tensor, grad: torch.Tensor, anchor: torch.Tensor, *, localization: float,
          nbeta: float) -> torch.Tensor:
    """``∇U = nβ·g + γ(w − w*)``, all ``(C, D)`` (``anchor`` broadcasts)."""
    d = grad * nbeta
    if localization:
        d = d + localization * (w - anchor)
    return d


def sgld_step(w: torch.Tensor, grad: torch.Tensor, anchor: torch.Tensor, sq_avg: torch.Tensor | None, *,
              lr: float, localization: float, nbeta: float, noise: torch.Tensor, sampler: str,
              alpha: float = 0.99, eps: float = 0.1) -> Step:
    """One ``sampler`` step from ``w`` with raw loss gradient ``grad`` and standard normal ``noise`` (all ``(C, D)``)."""
    d = drift(w, grad, anchor, localization=localization, nbeta=nbeta)
    if sampler == "sgld":
        return Step(w - (lr / 2) * d + (lr ** 0.5) * noise, None, None)
    sq = grad * grad * (1 - alpha) if sq_avg is None else sq_avg * alpha + (1 - alpha) * grad * grad
    precond = 1.0 / (sq.sqrt() + eps)
    return Step(w - (lr / 2) * precond * d + (precond * lr).sqrt() * noise, precond, sq)


def log_acceptance(w: torch.Tensor, w_new: torch.Tensor, *, loss: torch.Tensor, loss_new: torch.Tensor,
                   grad: torch.Tensor, grad_new: torch.Tensor, anchor: torch.Tensor, precond: torch.Tensor | None,
                   lr: float, localization: float, nbeta: float) -> torch.Tensor:
    """Log MH acceptance ratio ``(C,)`` of the move ``w → w_new`` as a MALA proposal on one minibatch.

    ``loss``/``grad`` and ``loss_new``/``grad_new`` are the minibatch loss ``(C,)`` and its raw gradient
    ``(C, D)`` at ``w`` and ``w_new`` on the *same* batch; ``U = nβ·L + γ/2·|w − w*|²``; the proposal is
    Gaussian with mean ``w − (ε/2)·G∇U(w)`` and covariance ``ε·G`` (G = ``precond`` or 1), whose
    normalizers cancel because G is held fixed for the pair.
    """
    w, w_new, anchor = w.double(), w_new.double(), anchor.double()
    g = 1.0 if precond is None else precond.double()

    def potential(x: torch.Tensor, lss: torch.Tensor) -> torch.Tensor:
        return nbeta * lss.double().to(x.device) + localization / 2 * ((x - anchor) ** 2).sum(1)

    d_old = drift(w, grad.double(), anchor, localization=localization, nbeta=nbeta)
    d_new = drift(w_new, grad_new.double(), anchor, localization=localization, nbeta=nbeta)
    fwd = (((w_new - w + lr / 2 * g * d_old) ** 2) / (2 * lr * g)).sum(1)
    back = (((w - w_new + lr / 2 * g * d_new) ** 2) / (2 * lr * g)).sum(1)
    return potential(w, loss) - potential(w_new, loss_new) + fwd - back
