"""Ground truth shared with devinterp's own suite (so results are comparable), for SGLD and RMSProp-SGLD.

* Normal-crossing potentials: ``f_w(x) = x·∏ w_i^{p_i}`` fitted to noise by MSE at w = 0; the learning
  coefficient is ``min_i 1/(2 p_i)``: powers (1, 1) → 1/2, (1, 2) → 1/4, (1, 3) → 1/6. Check: the truth
  lies within mean ± 3.5 std over chains (devinterp's ``test_accuracy_normalcrossing``).
* Reduced-rank regression ``x ↦ B A x`` trained on pure-noise targets (true map 0), (M, H, N) in
  devinterp's five cases of Aoyagi & Watanabe (2005); check: rtol 0.4 (devinterp's ``test_accuracy_rrr``).

Chains run vectorised (vectorize=True: faster than the loop for these tiny models). Settings follow devinterp's tests (full batch of 1000, nβ = 1000/log 1000, MSE loss; SGLD ε = 4·10⁻⁴ with
no localization for the potentials, ε = 6·10⁻⁴ and γ = 1 for RRR). RMSProp-SGLD's preconditioner
1/(√V + 0.1) scales a near-zero gradient's step by up to 10, so its ε is 10x smaller. Chains run
vectorised; the durations are printed.
"""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch import nn

from devvis.slt import estimate_llc

pytestmark = pytest.mark.slow
SAMPLERS = [("sgld", 1.0), ("rmsprop_sgld", 0.1)]  # (sampler, ε factor)


class Polynomial(nn.Module):
    def __init__(self, powers):
        super().__init__()
        self.register_buffer("powers", torch.tensor(powers, dtype=torch.float32))
        self.weights = nn.Parameter(torch.zeros(len(powers)))

    def forward(self, x):
        return x * torch.prod(self.weights ** self.powers)


def rrr_truth(M: int, H: int, N: int) -> float:
    """Aoyagi & Watanabe (2005) for true rank 0, in devinterp's case order."""
    if M + H < N:
        return M * H / 2
    if N + H < M:
        return H * N / 2
    if M + N < H:
        return M * N / 2
    return (2 * M * N + 2 * H * N + 2 * M * H - N ** 2 - M ** 2 - H ** 2 + (M + H + N) % 2) / 8


CROSSINGS = [((1, 1), 0.5), ((1, 2), 0.25), ((1, 3), 1 / 6)]


@pytest.mark.parametrize("sampler,factor", SAMPLERS, ids=[s for s, _ in SAMPLERS])
@pytest.mark.parametrize("powers,truth", CROSSINGS, ids=[f"p{a}{b}" for (a, b), _ in CROSSINGS])
def test_normal_crossing(sampler, factor, powers, truth):
    g = torch.Generator().manual_seed(42)
    n = 1000
    x = torch.normal(0.0, 2.0, (n,), generator=g)
    y = 0.25 * torch.randn(n, generator=g)
    t0 = time.perf_counter()
    res = estimate_llc(Polynomial(powers), [(x, y)], nn.functional.mse_loss, sampler=sampler, lr=4e-4 * factor,
                       localization=0.0, nbeta=n / math.log(n), num_chains=10, num_draws=2000, seed=42, vectorize=True,
                       progress=False, warn=False)
    print(f"\n{sampler} powers {powers}: {res.llc_mean:.4f} ± {res.llc_std:.4f} (truth {truth:.4f}) "
          f"{time.perf_counter() - t0:.1f}s")
    assert res.llc_mean - 3.5 * res.llc_std < truth < res.llc_mean + 3.5 * res.llc_std


RRR = [(5, 3, 5), (5, 4, 5), (4, 3, 8), (8, 3, 4), (3, 8, 4)]


@pytest.mark.parametrize("sampler,factor", SAMPLERS, ids=[s for s, _ in SAMPLERS])
@pytest.mark.parametrize("M,H,N", RRR, ids=[f"{m}-{h}-{n}" for m, h, n in RRR])
def test_reduced_rank_regression(sampler, factor, M, H, N):
    g = torch.Generator().manual_seed(1)
    n = 1000
    x, y = torch.randn(n, M, generator=g), torch.randn(n, N, generator=g)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(M, H, bias=False), nn.Linear(H, N, bias=False))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(2000):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    for p in model.parameters():
        p.grad = None
    t0 = time.perf_counter()
    res = estimate_llc(model, [(x, y)], nn.functional.mse_loss, sampler=sampler, lr=6e-4 * factor, localization=1.0,
                       nbeta=n / math.log(n), num_chains=3, num_draws=2000, seed=42, progress=False, warn=False,
                       vectorize=True)
    truth = rrr_truth(M, H, N)
    print(f"\n{sampler} RRR {(M, H, N)}: {res.llc_mean:.3f} ± {res.llc_std:.3f} (truth {truth}) "
          f"{time.perf_counter() - t0:.1f}s")
    assert math.isclose(res.llc_mean, truth, rel_tol=0.4)
