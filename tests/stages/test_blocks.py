"""Restricted LLC per block with a planted answer, and the per-unit group responses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from devvis.stages import block_llc
from devvis.stages.blocks import attribute
from devvis.stages.features import group_responses


class TwoBranch(nn.Module):
    """Two independent ReLU branches on the two halves of the input, one output each."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
        self.b = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))

    def forward(self, x):
        return torch.cat([self.a(x[:, :4]), self.b(x[:, 4:])], 1)


def _net(dead_in_b: int) -> TwoBranch:
    """At a minimum of the all-zero target (output weights 0); ``dead_in_b`` hidden units of branch b dead."""
    torch.manual_seed(0)
    m = TwoBranch()
    with torch.no_grad():
        for branch in (m.a, m.b):
            branch[0].bias.fill_(3.0)
            branch[2].weight.zero_()
            branch[2].bias.zero_()
        m.b[0].bias[:dead_in_b] = -100.0
    return m


def test_block_llc_moves_only_in_the_block_that_changes():
    """Planted: between checkpoints 1 and 2 three of branch b's four hidden units die. The loss is
    quadratic in the output weights of live units only, so b's restricted LLC falls (theory: from 4/2 + 1/2 to
    1/2 + 1/2, bias included); branch a's weights and loss terms are untouched (the MSE over the two
    outputs is a sum of one term per branch), so its restricted LLC stays exactly the same."""
    series = {0: _net(0), 1: _net(0), 2: _net(3), 3: _net(3)}
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(512, 8, generator=g), torch.zeros(512, 2)
    loader = [(x[i:i + 128], y[i:i + 128]) for i in range(0, 512, 128)]
    per = block_llc(series, loader, nn.functional.mse_loss, lr=1e-3, localization=100.0, num_chains=2,
                    num_draws=100, warn=False)
    a, b = per["a"], per["b"]
    assert a.llc_mean == pytest.approx([a.llc_mean[0]] * 4, abs=1e-6) and a.llc_mean[0] > 0.3
    assert b.llc_mean[0] == pytest.approx(b.llc_mean[1], abs=1e-6)
    assert b.llc_mean[2] < 0.7 * b.llc_mean[1]
    moved = attribute(2, per)  # the boundary at checkpoint 2: LLC at 1 vs 3
    assert moved["a"] < 0.01 and moved["b"] > 1.5
    assert max(moved, key=moved.get) == "b"


def test_group_responses_planted():
    profile = np.array([[1.0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 2, 2], [5, 5, 5, 5, 5, 5]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    got = group_responses(profile, labels, {"A": [0], "BC": [1, 2], "none": [7]})
    assert got[0]["A"] == pytest.approx(2 ** 0.5) and got[0]["BC"] == pytest.approx(-(2 ** 0.5) / 2)
    assert got[1]["A"] == pytest.approx(-(2 ** 0.5) / 2)
    assert np.isnan(got[0]["none"]) and all(np.isnan(v) for v in got[2].values())  # no images; constant unit
