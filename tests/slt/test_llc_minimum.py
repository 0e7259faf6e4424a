"""Weights that are not a local minimum have no LLC: the verdict says "not a minimum" and no number is shown.

The learning coefficient is defined at a local minimum of the loss. Where the chains find lower loss around w*
than at it (``below_init`` / ``negative``), ``LLCResult.llc`` is NaN, the trajectory, the CLI, the report and the
demo show no value there, and the sampler's own (negative) number stays in ``llc_mean`` for inspection.
"""

from __future__ import annotations

import argparse
import math
import re

import numpy as np
import pytest
import torch

from devvis.errors import ConfigError
from devvis.io import read_json
from devvis.slt import LLCResult, LLCTrajectory, estimate_llc, llc_trajectory, plot_trajectory
from devvis.slt.diagnostics import NOT_A_MINIMUM, SAMPLER_OFF, not_a_minimum
from test_llc_extend import SLOW, nll, regression, trained_flat_net


def _result(mean: float, **flags: list[int]) -> LLCResult:
    return LLCResult(llc_mean=mean, llc_std=0.5, llc_per_chain=[mean, mean], loss_traces=np.ones((2, 5)),
                     num_burnin_steps=1, init_loss=0.9, nbeta=40.0, flags=dict(flags),
                     hyperparameters={"sampler": "sgld", "lr": 1e-4, "localization": 1.0, "nbeta": 40.0,
                                      "num_chains": 2, "num_draws": 4})


def test_the_verdict_separates_no_minimum_from_an_unsound_sampler():
    for name in NOT_A_MINIMUM:
        res = _result(-3.0, **{name: [0, 1]})
        assert not res.at_minimum and math.isnan(res.llc) and res.llc_mean == -3.0 and not res.ok
        assert res.health == f"not a minimum: {name}"
    for off in SAMPLER_OFF:  # chains that left w* or an integrator that is off: draws below L(w*) prove nothing
        res = _result(-3.0, below_init=[0, 1], **{off: [0]})
        assert res.at_minimum and res.llc == -3.0 and res.health.startswith("unhealthy: ")
    res = _result(2.0, trending=[0])  # unhealthy at a minimum: the number is kept, flagged
    assert res.at_minimum and res.llc == 2.0 and res.health == "unhealthy: trending"
    assert _result(2.0).llc == 2.0 and _result(2.0).health == "healthy"
    assert not_a_minimum(["negative", "chains_disagree"]) and not not_a_minimum(["chains_disagree"])


def test_a_regression_moved_off_its_minimum_has_no_llc_and_says_why():
    model, loader = regression(shift=1.0)
    res = estimate_llc(model, loader, nll, **SLOW)
    assert res.llc_mean < 0 and not res.at_minimum and math.isnan(res.llc)
    assert res.health.startswith("not a minimum: ") and "below_init" in res.health
    d = res.to_dict(include_traces=False)
    assert d["at_minimum"] is False and math.isnan(d["llc"]) and d["llc_mean"] == res.llc_mean
    at, loader = regression()  # the least-squares weights: a minimum, the estimate is its LLC
    good = estimate_llc(at, loader, nll, **{**SLOW, "num_burnin_steps": 200, "num_draws": 400})
    assert good.ok and good.at_minimum and good.llc == good.llc_mean > 0 and good.health == "healthy"


def test_the_trajectory_shows_no_value_where_there_is_no_minimum(tmp_path, monkeypatch):
    off, loader = regression(shift=1.0)
    at, _ = regression()
    traj = llc_trajectory([(0, off), (100, at)], loader, nll, output_dir=tmp_path,
                          **{**SLOW, "num_burnin_steps": 200, "num_draws": 400})
    assert math.isnan(traj.llc_mean[0]) and math.isnan(traj.llc_std[0]) and traj.results[0].llc_mean < 0
    assert traj.llc_mean[1] == traj.results[1].llc_mean > 0
    assert traj.health[0].startswith("not a minimum: ") and traj.health[1] == "healthy"
    saved = read_json(tmp_path / "llc_trajectory.json")
    assert saved["llc_mean"][0] is None and saved["per_step"][0]["llc_mean"] < 0  # the sampler's number kept
    assert saved["per_step"][0]["at_minimum"] is False and saved["per_step"][1]["at_minimum"] is True

    import devvis.io

    figures = []
    monkeypatch.setattr(devvis.io, "write_figure", lambda path, fig: figures.append(fig))
    plot_trajectory(traj, tmp_path / "again.png")
    ax = figures[0].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["not a local minimum: no LLC"]  # no unhealthy ring, no number for step 0
    assert len(ax.texts) == 0

    from devvis.stages.api import _llc_signal

    with pytest.raises(ConfigError, match=r"llc has no value at steps \[0\].*not a local minimum"):
        _llc_signal(traj, [0, 100])
    assert _llc_signal({0: 1.0, 100: 2.0}, [0, 100]).tolist() == [1.0, 2.0]


def test_the_cli_prints_no_number_at_an_untrained_checkpoint(tmp_path, capsys):
    from devvis.commands import llc as llc_cmd
    from devvis.models import save_checkpoint
    from test_llc_trust import flat_net

    torch.manual_seed(0)
    save_checkpoint(flat_net(), tmp_path / "ckpts" / "step_0.pt", step=0)  # random init: the loss falls around it
    save_checkpoint(trained_flat_net(), tmp_path / "ckpts" / "step_300.pt", step=300)
    parser = argparse.ArgumentParser()
    llc_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["llc", "--model", "test_llc_trust:flat_net", "--checkpoint-path", str(tmp_path / "ckpts"),
                              "--data", "test_llc_trust:tiny_images", "--batch-size", "16", "--num-chains", "2",
                              "--num-draws", "80", "--num-burnin-steps", "40", "--lr", "1e-4", "--localization", "1",
                              "--nbeta", "1000",
                              "--output-path", str(tmp_path / "out"), "--no-progress"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    line0 = next(ln for ln in out.splitlines() if ln.split()[:1] == ["0"])
    assert re.match(r"\s*0\s+-\s+-\s+not a minimum: .*below_init", line0), line0
    data = read_json(tmp_path / "out" / "slt" / "llc_trajectory.json")
    assert data["llc_mean"][0] is None and data["per_step"][0]["llc_mean"] < 0
    assert data["llc_mean"][1] is not None and data["per_step"][1]["at_minimum"]


def test_the_report_draws_no_point_and_names_the_reason():
    from devvis.report.overview import _llc

    steps = [0, 20, 40, 60]
    health = ["not a minimum: below_init, negative", "healthy", "unhealthy: trending", "healthy"]

    class Run:
        llc = {"steps": steps, "llc_mean": [None, 9.6, 11.5, 20.0], "llc_std": [None, 0.5, 0.5, 1.0],
               "health": health, "per_step": [{"step": s, "num_draws": 400} for s in steps]}

    page = _llc(Run())
    assert page.count("<line class='nomin'") == 1 and "step 0: no LLC (not a minimum: below_init, negative)" in page
    assert "<td>none (not a minimum)</td>" in page and "<td class='nomin'" in page
    assert page.count("<circle class='okpt'") == 2 and page.count("<circle class='badpt'") == 1
    assert "grey dashed line: not a local minimum, so no LLC (1 checkpoint:" in page


def test_a_chain_stopped_on_nan_keeps_the_verdict_unhealthy():
    res = _result(-3.0, nan=[0], below_init=[0, 1], negative=[0, 1])  # the surviving chain's draws prove nothing
    assert res.at_minimum and res.health.startswith("unhealthy: ") and res.llc == -3.0


def test_a_stage_boundary_next_to_a_checkpoint_without_llc_attributes_no_block():
    from devvis.stages.result import Stage

    stage = Stage(1, 0, 20, None)
    stage.block_llc_change = {"conv1": math.nan, "layer1": math.nan}
    assert stage.to_dict()["attributed_block"] is None
    stage.block_llc_change = {"conv1": math.nan, "layer1": 2.5}
    assert stage.to_dict()["attributed_block"] == "layer1"
