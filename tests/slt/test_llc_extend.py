"""Chains that have not settled run longer (``estimate_llc(..., max_draws=...)``): a continued chain is the chain a
longer layout would have run, only the checks that longer chains can cure extend it, and the CLI and report say so."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch
from torch import nn

from devvis.errors import ConfigError
from devvis.io import read_json
from devvis.slt import diagnostics, estimate_llc, llc_trajectory
from devvis.slt.batches import SeededStream
from devvis.slt.chains import ChainRun, ChainSettings, make_engine


def nll(out, t):
    return ((out - t) ** 2).sum(-1).mean() / 2


def regression(shift: float = 0.0):
    """A linear regression at its least-squares weights (9 parameters, λ = d/2 = 4.5), or ``shift`` away from them."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 8, generator=g)
    torch.manual_seed(0)
    model = nn.Linear(8, 1)
    y = model(x).detach() + 0.1 * torch.randn(512, 1, generator=g)
    if shift:
        with torch.no_grad():
            model.weight.add_(shift)
    return model, [(x[i:i + 64], y[i:i + 64]) for i in range(0, 512, 64)]


# ε = 1e-3 relaxes in ~120 steps: 20 burn-in steps and 40 draws catch the chains still rising
SLOW = dict(lr=1e-3, localization=1.0, num_chains=2, num_burnin_steps=20, num_draws=40, progress=False, warn=False)


def test_unsettled_chains_run_longer_until_they_settle_near_the_true_llc():
    model, loader = regression()
    short = estimate_llc(model, loader, nll, **SLOW)
    assert not short.ok and set(short.failed_checks) <= set(diagnostics.CURED_BY_LONGER_CHAINS)
    assert short.llc_mean < 0.5 * 4.5  # the chains had not yet risen to their stationary loss

    longer = estimate_llc(model, loader, nll, max_draws=1280, **SLOW)
    assert longer.ok, longer.reasons
    assert longer.extensions >= 1 and abs(longer.llc_mean - 4.5) < 0.25 * 4.5
    k = longer.extensions
    assert longer.num_burnin_steps == 20 * 2**k and longer.draw_traces.shape == (2, 40 * 2**k)
    assert longer.hyperparameters["num_draws"] == 40 and longer.hyperparameters["max_draws"] == 1280
    assert any(f"extended {'once' if k == 1 else 'twice' if k == 2 else f'{k} times'}" in d
               for d in longer.diagnostics)
    d = longer.to_dict(include_traces=False)
    assert d["extensions"] == k and d["num_draws"] == 40 * 2**k and d["num_burnin_steps"] == 20 * 2**k

    # the continued chains are the chains of the longer layout, run from the start
    fresh = estimate_llc(model, loader, nll, **{**SLOW, "num_burnin_steps": 20 * 2**k, "num_draws": 40 * 2**k})
    np.testing.assert_array_equal(longer.loss_traces, fresh.loss_traces)
    np.testing.assert_array_equal(longer.distance_traces, fresh.distance_traces)
    assert longer.llc_mean == fresh.llc_mean and fresh.extensions == 0
    assert longer.acceptance == fresh.acceptance and longer.pull_ratio == fresh.pull_ratio
    assert longer.health == fresh.health


def test_max_draws_bounds_the_extension_and_a_settled_estimate_is_unchanged():
    model, loader = regression()
    capped = estimate_llc(model, loader, nll, max_draws=100, **SLOW)  # one doubling (80 draws) fits, two do not
    assert capped.extensions == 1 and capped.draw_traces.shape == (2, 80)

    settled = {**SLOW, "num_burnin_steps": 400, "num_draws": 400}
    plain = estimate_llc(model, loader, nll, **settled)
    assert plain.ok, plain.reasons
    same = estimate_llc(model, loader, nll, max_draws=3200, **settled)
    assert same.extensions == 0
    np.testing.assert_array_equal(same.loss_traces, plain.loss_traces)
    assert same.acceptance == plain.acceptance and same.pull_ratio == plain.pull_ratio


def test_without_burn_in_the_first_run_becomes_the_burn_in():
    """The default num_burnin_steps=0: a chain still rising from w* fails burnin_short, and the extension gives
    it a burn-in (the first run's draws) instead of doubling a zero."""
    assert ChainSettings(sampler="sgld", lr=1e-3, localization=1.0, nbeta=10.0, num_burnin_steps=0, num_draws=40,
                         num_steps_bw_draws=1).extended().num_burnin_steps == 40
    model, loader = regression()
    short = estimate_llc(model, loader, nll, **{**SLOW, "num_burnin_steps": 0})
    assert "burnin_short" in short.failed_checks
    longer = estimate_llc(model, loader, nll, max_draws=np.int64(1280), **{**SLOW, "num_burnin_steps": 0})
    assert longer.ok, longer.reasons
    assert longer.extensions >= 1 and abs(longer.llc_mean - 4.5) < 0.25 * 4.5
    assert longer.num_burnin_steps == 40 * 2 ** (longer.extensions - 1)
    assert longer.draw_traces.shape == (2, 40 * 2**longer.extensions)
    assert longer.hyperparameters["max_draws"] == 1280 and type(longer.hyperparameters["max_draws"]) is int


def test_a_point_that_is_no_minimum_is_not_extended():
    model, loader = regression(shift=1.0)  # the chains fall below L(w*): no longer chain makes that an LLC
    res = estimate_llc(model, loader, nll, max_draws=1280, **SLOW)
    assert {"below_init", "negative"} <= set(res.failed_checks) and res.llc_mean < 0
    assert res.extensions == 0 and res.draw_traces.shape == (2, 40)


def test_uncalibrated_defaults_are_not_extended():
    model, loader = regression()
    res = estimate_llc(model, loader, nll, num_chains=2, num_burnin_steps=20, num_draws=40, max_draws=1280,
                       progress=False, warn=False)
    assert "uncalibrated" in res.failed_checks and res.extensions == 0


@pytest.mark.parametrize("bad", [10, 0, 2.5, True])
def test_max_draws_below_num_draws_or_not_an_integer_is_a_config_error(bad):
    model, loader = regression()
    with pytest.raises(ConfigError, match=rf"max_draws must be None or an integer >= num_draws \(40\); got {bad!r}"):
        estimate_llc(model, loader, nll, max_draws=bad, **SLOW)


@pytest.mark.parametrize("vectorize", [False, True])
@pytest.mark.parametrize("dropout", [False, True])
def test_chain_run_advanced_in_two_calls_equals_one_call(vectorize, dropout):
    model, loader = regression()
    if dropout:  # sampled in train mode: the masks come from the global RNG, which the MALA points must not move
        torch.manual_seed(1)
        model = nn.Sequential(model, nn.Dropout(0.1), nn.Linear(1, 1)).train()
    params = list(model.named_parameters())
    anchor = torch.cat([p.detach().reshape(-1) for _, p in params])
    short = ChainSettings(sampler="rmsprop_sgld", lr=1e-3, localization=1.0, nbeta=10.0, num_burnin_steps=5,
                          num_draws=20, num_steps_bw_draws=3)
    long = ChainSettings(**{**short.__dict__, "num_burnin_steps": 10, "num_draws": 40})

    def run(*layouts):
        engine = make_engine(model, nll, params, 2, vectorize, torch.device("cpu"))
        gens = [torch.Generator().manual_seed(c) for c in range(2)]
        return ChainRun(engine, [SeededStream(loader, c) for c in range(2)], anchor, gens, device=torch.device("cpu"),
                        mala_layouts=layouts)

    # a fresh run of the long layout measures its own MALA points; the continued one those of both layouts
    once, twice = run(long), run(short, long)
    with torch.random.fork_rng():
        torch.manual_seed(7)
        once.advance(long)
    with torch.random.fork_rng():
        torch.manual_seed(7)
        twice.advance(short)
        assert twice.traces(short).shape == (2, 5 + 20) and twice.step == short.steps
        twice.advance(long)
    np.testing.assert_array_equal(once.traces(long), twice.traces(long))
    a, b = once.stats(long), twice.stats(long)
    np.testing.assert_array_equal(a.distance, b.distance)
    assert a.acceptance == b.acceptance and a.pull_ratio == b.pull_ratio and np.isfinite(a.acceptance).all()
    assert once.traces(long).shape == (2, 10 + 40)
    # thinning: the draws are every third step after the burn-in
    np.testing.assert_array_equal(once.traces(long)[:, 10:], once.loss[:, 10::3][:, :40])
    assert math.isfinite(once.stats(long).pull_ratio[0])


def trained_flat_net() -> nn.Module:
    """test_llc_trust's flat_net trained near its minimum on tiny_images (training loss 0.016)."""
    from test_llc_trust import flat_net, tiny_images

    x, y = tiny_images().tensors
    torch.manual_seed(0)
    model = flat_net()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def test_cli_max_draws_reaches_every_estimate_and_is_checked(tmp_path, capsys):
    from devvis.commands import llc as llc_cmd
    from devvis.models import save_checkpoint

    model = trained_flat_net()
    for step in (1, 2):
        save_checkpoint(model, tmp_path / "ckpts" / f"step_{step}.pt", step=step)
    parser = argparse.ArgumentParser()
    llc_cmd.register(parser.add_subparsers())
    common = ["llc", "--model", "test_llc_trust:flat_net", "--checkpoint-path", str(tmp_path / "ckpts"),
              "--data", "test_llc_trust:tiny_images", "--batch-size", "16", "--num-chains", "2", "--num-draws", "20",
              "--lr", "1e-2", "--localization", "1", "--output-path", str(tmp_path / "out"), "--no-progress"]
    args = parser.parse_args(common + ["--max-draws", "10"])
    with pytest.raises(ConfigError, match=r"--max-draws must be at least --num-draws \(20\); got 10"):
        args.func(args)
    args = parser.parse_args(common)  # 2 x 20 draws without burn-in: the chains have not settled
    assert args.func(args) == 0
    before = read_json(tmp_path / "out" / "slt" / "llc_trajectory.json")
    assert not any(one["ok"] for one in before["per_step"])
    assert all(one["extensions"] == 0 and one["num_draws"] == 20 for one in before["per_step"])
    capsys.readouterr()

    args = parser.parse_args(common + ["--max-draws", "160"])
    assert args.func(args) == 0
    data = read_json(tmp_path / "out" / "slt" / "llc_trajectory.json")
    assert data["hyperparameters"]["max_draws"] == 160 and data["llc_mean"][0] == data["llc_mean"][1]
    for one in data["per_step"]:
        assert one["extensions"] >= 1 and one["num_draws"] == 20 * 2 ** one["extensions"] <= 160 and one["ok"]
    assert f"(chains extended to {data['per_step'][0]['num_draws']} draws)" in capsys.readouterr().out


def test_trajectory_passes_max_draws_to_every_checkpoint():
    model, loader = regression()
    traj = llc_trajectory([(0, model), (1, model)], loader, nll, max_draws=1280, **SLOW)
    assert [r.extensions for r in traj.results] == [traj.results[0].extensions] * 2 and traj.results[0].extensions >= 1
    assert traj.llc_mean[0] == traj.llc_mean[1] and all(r.ok for r in traj.results)


def test_the_trajectory_plot_spans_the_healthy_estimates_and_labels_a_far_off_one(monkeypatch, tmp_path):
    import devvis.io
    from devvis.slt import LLCResult, LLCTrajectory, plot_trajectory

    figures = []
    monkeypatch.setattr(devvis.io, "write_figure", lambda path, fig: figures.append(fig))
    mean = [-47.7, 9.6, 11.5, 20.0]
    results = [LLCResult(llc_mean=m, llc_std=0.5, llc_per_chain=[m, m], loss_traces=np.ones((2, 5)), num_burnin_steps=1,
                         init_loss=0.9, nbeta=40.0, hyperparameters={"sampler": "sgld", "lr": 1e-4, "localization": 1.0,
                                                                     "nbeta": 40.0, "num_chains": 2, "num_draws": 4,
                                                                     "max_draws": 8}) for m in mean]
    results[0].flags["chains_disagree"] = [0, 1]  # unhealthy, at a minimum: its number is kept and drawn
    results[1].extensions = 1
    traj = LLCTrajectory(steps=[0, 20, 40, 60], llc_mean=mean, llc_std=[0.5] * 4, results=results,
                         hyperparameters=results[0].hyperparameters)
    plot_trajectory(traj, tmp_path / "t.png")
    ax = figures[0].axes[0]
    assert ax.get_ylim() == pytest.approx((9.1 - 2.85, 20.5 + 2.85))  # a quarter of the healthy span, 11.4
    assert [t.get_text() for t in ax.texts] == ["-47.7"] and "up to 8 where unsettled" in ax.get_title()


def test_the_extension_answers_noise_and_settling_but_not_a_chain_that_never_settles():
    """benchmarks/llc_extension_rates.py on 100 seeds: on stationary and settling chains the extension flags
    fewer than one look at either layout; a chain that drifts forever is flagged as often as by one look at the
    demo's layout (every extended one is caught again)."""
    from simulated import rates

    stationary, settling, drift = (rates(kind, 100) for kind in ("stationary", "relax150", "drift1"))
    assert stationary["extension"] <= min(stationary["short"], 0.02) and stationary["extended"] == stationary["short"]
    assert settling["short"] >= 0.1 and settling["extension"] <= 0.03
    assert drift["short"] >= 0.5 and drift["long"] == 1.0 and drift["extension"] == drift["short"]


def test_a_healthy_calibration_estimate_is_reused_with_max_draws():
    """With max_draws, llc_trajectory still reuses the calibration's estimate at a calibration checkpoint when it is
    healthy (a healthy estimate is never extended, so it is the one the trajectory would make), on a copy that
    records the trajectory's max_draws."""
    from test_llc_health import _trained_and_early_linear

    x, y, trained, _ = _trained_and_early_linear()
    layout = dict(num_chains=2, num_draws=400, num_burnin_steps=100)
    cal = dict(lrs=[1e-3, 3e-3], localizations=[1.0], nbetas=[100.0], checkpoints=[-1], **layout)
    traj = llc_trajectory([(0, trained), (1, trained)], [(x, y)], nll, calibrate=cal, max_draws=1600, progress=False,
                          warn=False, **layout)
    assert traj.calibration.ok, traj.calibration.reason
    chosen = traj.calibration.model_results[0][traj.calibration.chosen]
    fresh, reused = traj.results
    assert reused.ok and reused.loss_traces is chosen.loss_traces  # the calibration's own run, not a new one
    assert reused.hyperparameters["max_draws"] == 1600 and chosen.hyperparameters["max_draws"] is None
    assert fresh.llc_mean == reused.llc_mean and fresh.extensions == 0


@pytest.mark.parametrize("options,kwargs,same", [
    (dict(lrs=[1e-3], localizations=[1.0], nbetas=[10.0], num_chains=4, num_draws=200, num_burnin_steps=0), {}, True),
    ({}, dict(num_chains=2, num_draws=400, num_burnin_steps=200, max_draws=800), True),  # calibrate's own layout
    ({}, {}, False),  # calibrate's 2 x (200 + 400) against estimate_llc's 4 x 200
    (dict(num_chains=4, num_draws=200, num_burnin_steps=0, seed=1), dict(seed=0), False),  # another seed
    (dict(num_chains=4, num_draws=200, num_burnin_steps=0, threads=2), {}, False),  # threads can change the sums
    (dict(num_chains=4, num_draws=200, num_burnin_steps=0), dict(params=["0"]), True),  # shared: both get it
    (dict(num_chains=4, num_draws=200, num_burnin_steps=0, sampler="rmsprop_sgld"), {}, False),
])
def test_which_calibration_estimates_the_trajectory_may_reuse(options, kwargs, same):
    from devvis.slt.trajectory import _same_estimates

    assert _same_estimates(options, kwargs) is same
