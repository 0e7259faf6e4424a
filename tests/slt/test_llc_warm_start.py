"""RMSProp-SGLD with its running average V warm-started from the gradients at w* (``rmsprop_warm_start``)."""

from __future__ import annotations

import math

import torch
from torch import nn

from devvis.slt import estimate_llc
from devvis.slt.chains import AutoEngine, mean_square_grad


def nll(out, t):
    return ((out - t) ** 2).sum(-1).mean() / 2


def regression(n=512, seed=0):
    """A linear model one step of noise away from its data: L(w) is quadratic, λ = d/2 = 2."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Linear(3, 1)
    x = torch.randn(n, 3, generator=g)
    y = model(x).detach() + 0.5 * torch.randn(n, 1, generator=g)
    return model, [(x[i:i + 64], y[i:i + 64]) for i in range(0, n, 64)]


def test_mean_square_grad_is_the_mean_over_batches_of_the_squared_minibatch_gradient():
    model, loader = regression()
    params = list(model.named_parameters())
    anchor = torch.cat([p.detach().reshape(-1) for _, p in params])
    engine = AutoEngine(model, nll, params, 1, vectorize=False)
    got = mean_square_grad(engine, loader[:3], anchor, torch.device("cpu"))
    want = torch.zeros(4)
    for x, y in loader[:3]:
        out = x @ model.weight.detach().T + model.bias.detach()
        r = (out - y)[:, 0]                       # d/dw of mean ½r² is mean r·x, d/db mean r
        g = torch.cat([(r[:, None] * x).mean(0), r.mean(0, keepdim=True)])
        want += g * g / 3
    torch.testing.assert_close(got, want)


def test_warm_start_is_recorded_and_changes_the_chain_only_when_asked():
    model, loader = regression()
    kw = dict(sampler="rmsprop_sgld", lr=1e-4, localization=1.0, nbeta=100.0, num_chains=2, num_draws=40,
              progress=False, warn=False, rmsprop_eps=1e-3)
    cold = estimate_llc(model, loader, nll, **kw)
    same = estimate_llc(model, loader, nll, rmsprop_warm_start=False, **kw)
    warm = estimate_llc(model, loader, nll, rmsprop_warm_start=True, **kw)
    assert cold.hyperparameters["rmsprop_warm_start"] is False
    assert warm.hyperparameters["rmsprop_warm_start"] is True
    assert (cold.loss_traces == same.loss_traces).all()       # the default is devinterp's V = 0 start
    assert not (cold.loss_traces == warm.loss_traces).all()
    sgld = estimate_llc(model, loader, nll, sampler="sgld", lr=1e-4, localization=1.0, nbeta=100.0, num_draws=5,
                        progress=False, warn=False, rmsprop_warm_start=True)
    assert "rmsprop_warm_start" not in sgld.hyperparameters   # SGLD has no preconditioner to warm-start


def test_fixed_warm_preconditioner_recovers_the_regular_lambda():
    # α = 1 keeps V at its warm start: a fixed preconditioner, for which SGLD's stationary law is exact
    # up to the step size; on a quadratic loss the estimate is d/2 = 2 (ε·G·nβ·h ≈ 0.08 here: ε = 2e-4 gave
    # 3.0, the discretization's inflated variance).
    model, loader = regression(n=2048)
    nbeta = 2048 / math.log(2048)
    res = estimate_llc(model, loader, nll, sampler="rmsprop_sgld", lr=2e-5, localization=1.0, nbeta=nbeta,
                       num_chains=4, num_burnin_steps=200, num_draws=800, rmsprop_alpha=1.0, rmsprop_eps=1e-2,
                       rmsprop_warm_start=True, progress=False, warn=False)
    assert res.ok, res.reasons
    assert abs(res.llc_mean - 2.0) < 0.4, res.llc_mean
