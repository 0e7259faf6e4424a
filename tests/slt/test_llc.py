"""Behaviour of the LLC estimator: restoration, NaN handling, restriction, determinism, outputs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from devvis.errors import ConfigError, LayerNotFoundError
from devvis.io import read_json, write_json
from devvis.slt import LLCDiagnosticWarning, default_nbeta, estimate_llc, llc_sweep, llc_trajectory
from devvis.slt.llc import MODE_BATCHES
from devvis.longitudinal.plots import set_step_axis

FAST = dict(lr=1e-3, localization=10.0, num_chains=2, num_draws=15, progress=False, warn=False)


def small_data(n=64, d=4, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    return x, y


def loader_of(x, y, bs=16):
    return [(x[i : i + bs], y[i : i + bs]) for i in range(0, len(x), bs)]


def bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}


def assert_same(model, snap):
    for k, v in model.state_dict(keep_vars=True).items():
        assert torch.equal(v.detach(), snap[k]), k


ce = nn.functional.cross_entropy


def test_weights_buffers_grads_and_modes_restored_bit_exactly():
    model = bn_net()
    x, y = small_data()
    model.train()
    model(x)  # give BatchNorm non-trivial running stats
    model[0].weight.grad = torch.full_like(model[0].weight, 0.5)
    model[3].bias.requires_grad_(False)
    snap = snapshot(model)
    grad_before = model[0].weight.grad.clone()
    for train_mode in (False, True):
        res = estimate_llc(model, loader_of(x, y), ce, train_mode=train_mode, **FAST)
        assert math.isfinite(res.llc_mean)
        assert_same(model, snap)
        assert model.training and all(m.training for m in model.modules())
        assert torch.equal(model[0].weight.grad, grad_before)
        assert model[0].bias.grad is None and model[3].weight.grad is None and model[3].bias.grad is None
        assert model[3].bias.requires_grad is False and model[0].weight.requires_grad is True


def test_frozen_batchnorm_inside_a_train_mode_model_comes_back_exactly():
    """A model in train mode holding a BatchNorm in eval mode (a frozen BN) keeps every submodule's
    own mode, every value bit-exact and every requires_grad flag, whichever mode sampling used."""
    model = bn_net()
    x, y = small_data()
    model.train()
    model(x)  # non-trivial running statistics
    model[1].eval()  # the frozen BatchNorm
    model[3].weight.requires_grad_(False)
    model[0].bias.grad = torch.full_like(model[0].bias, -2.0)
    snap = snapshot(model)
    modes = {name: m.training for name, m in model.named_modules()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    assert modes[""] and not modes["1"]
    for train_mode in (False, True):
        seen: list[bool] = []
        handle = model[1].register_forward_hook(lambda m, i, o: seen.append(m.training))
        res = estimate_llc(model, loader_of(x, y), ce, train_mode=train_mode, **FAST)
        handle.remove()
        assert math.isfinite(res.llc_mean)
        # one mode for all while sampling; the first MODE_BATCHES batches of the other mode: the loss check at w*
        assert seen and seen[-1] == train_mode and seen.count(not train_mode) == MODE_BATCHES == 2
        assert {name: m.training for name, m in model.named_modules()} == modes
        assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
        assert_same(model, snap)
        assert torch.equal(model[0].bias.grad, torch.full_like(model[0].bias, -2.0))
        assert all(p.grad is None for n, p in model.named_parameters() if n != "0.bias")


def test_train_mode_during_sampling_unless_train_mode_false():
    # Default: train mode (the loss the weights were trained on); the other mode only for the loss check on the
    # first MODE_BATCHES batches.
    model = bn_net()
    x, y = small_data()
    seen: list[bool] = []
    model[1].register_forward_hook(lambda m, i, o: seen.append(m.training))
    res = estimate_llc(model, loader_of(x, y), ce, **FAST)
    assert seen[-1] is True and seen.count(False) == MODE_BATCHES and res.hyperparameters["train_mode"] is True
    seen.clear()
    res = estimate_llc(model, loader_of(x, y), ce, train_mode=False, **FAST)
    assert seen[-1] is False and seen.count(True) == MODE_BATCHES and res.hyperparameters["train_mode"] is False
    assert res.init_loss_other_mode is not None


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_restored_after_exception_mid_chain(exc):
    model = bn_net()
    x, y = small_data()
    snap = snapshot(model)
    calls = {"n": 0}

    def crashing(out, t):
        calls["n"] += 1
        if calls["n"] == 12:  # after the 4 initial-loss batches, inside chain 0
            raise exc("boom")
        return ce(out, t)

    with pytest.raises(exc):
        estimate_llc(model, loader_of(x, y), crashing, **FAST)
    assert_same(model, snap)
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


def nan_after(k):
    calls = {"n": 0}

    def crit(out, t):
        calls["n"] += 1
        loss = ce(out, t)
        return loss * float("nan") if calls["n"] > k else loss

    return crit


def test_nan_stops_chains_and_all_nan_is_not_ok():
    model = bn_net()
    x, y = small_data()
    # Loop engine: 4 batches for L(w*), MODE_BATCHES (2) for the other mode; then per step chain 0 and chain 1,
    # and at step 0 (the one MALA point of 15 draws: one in sixteen at most) the MALA check of each.
    init_calls = 4 + MODE_BATCHES
    with pytest.warns(LLCDiagnosticWarning, match="nan"):
        res = estimate_llc(model, loader_of(x, y), nan_after(init_calls + 4 + 2), vectorize=False,
                           **{**FAST, "warn": True})
    assert res.flags["nan"] == [0, 1]
    assert all(math.isnan(v) for v in res.llc_per_chain)
    assert math.isnan(res.llc_mean) and not res.ok and res.health.startswith("unhealthy: nan")
    # Chain 0 recorded its first 2 steps, then stopped: the rest of its trace is NaN.
    assert np.isfinite(res.loss_traces[0, :2]).all() and np.isnan(res.loss_traces[0, 2:]).all()
    assert any("chain 0" in d and "step 2" in d for d in res.diagnostics)
    assert any("all chains" in d for d in res.diagnostics)


def test_one_nan_chain_is_excluded_from_mean():
    model = bn_net()
    x, y = small_data()
    calls = {"n": 0}

    def nan_once(out, t):
        calls["n"] += 1
        loss = ce(out, t)
        return loss * float("nan") if calls["n"] == 8 + 4 + 2 + 1 else loss  # chain 0, step 2 (see above)

    with pytest.warns(LLCDiagnosticWarning):
        res = estimate_llc(model, loader_of(x, y), nan_once, vectorize=False, **{**FAST, "warn": True})
    assert res.flags["nan"] == [0]
    assert math.isnan(res.llc_per_chain[0]) and math.isfinite(res.llc_per_chain[1])
    assert res.llc_mean == pytest.approx(res.llc_per_chain[1])
    assert "nan" not in res.failed_checks


def test_restricted_llc_moves_only_chosen_parameters():
    model = bn_net()
    x, y = small_data()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("3.")}
    w3 = model[3].weight.detach().clone()
    moved = []

    def watching(out, t):
        for n, p in model.named_parameters():
            if n in frozen:
                assert torch.equal(p.detach(), frozen[n]), f"{n} moved"
        moved.append(not torch.equal(model[3].weight.detach(), w3))
        return ce(out, t)

    res = estimate_llc(model, loader_of(x, y), watching, params=["3"], vectorize=False, **FAST)
    assert any(moved)
    assert res.hyperparameters["restricted_params"] == ["3.weight", "3.bias"]
    assert res.hyperparameters["num_sampled_params"] == 8 * 3 + 3
    # Parameter names work too, and the full-model run records no restriction.
    res_w = estimate_llc(model, loader_of(x, y), ce, params=["3.weight"], **FAST)
    assert res_w.hyperparameters["restricted_params"] == ["3.weight"]
    assert estimate_llc(model, loader_of(x, y), ce, **FAST).hyperparameters["restricted_params"] is None


def test_restricted_to_parameters_the_loss_ignores_gives_zero():
    # A parameter that does not enter the loss only feels the localization: the loss never
    # changes, so its restricted LLC is exactly 0, whatever the unrestricted value is.
    class WithUnused(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(4, 3)
            self.unused = nn.Linear(4, 3)

        def forward(self, x):
            return self.used(x)

    torch.manual_seed(0)
    model = WithUnused()
    x, y = small_data()
    res = estimate_llc(model, loader_of(x, y, bs=64), ce, params=["unused"], **FAST)
    assert res.llc_per_chain == [0.0, 0.0]
    full = estimate_llc(model, loader_of(x, y, bs=64), ce, **FAST)
    assert full.llc_mean != 0.0


def test_unknown_param_name_is_reported_with_suggestion():
    with pytest.raises(LayerNotFoundError, match="'4'"):
        estimate_llc(bn_net(), loader_of(*small_data()), ce, params=["4"], **FAST)


def test_same_seed_same_result_and_global_rng_untouched():
    model = bn_net()
    x, y = small_data()
    ds = torch.utils.data.TensorDataset(x, y)
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = estimate_llc(model, loader, ce, seed=7, **FAST)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)  # a different global state must not matter
    b = estimate_llc(model, loader, ce, seed=7, **FAST)
    c = estimate_llc(model, loader, ce, seed=8, **FAST)
    assert a.llc_per_chain == b.llc_per_chain
    np.testing.assert_array_equal(a.loss_traces, b.loss_traces)
    assert a.llc_per_chain != c.llc_per_chain
    assert a.llc_per_chain[0] != a.llc_per_chain[1]  # chains use different streams


def test_nbeta_default_and_user_recorded():
    x, y = small_data()
    res = estimate_llc(bn_net(), loader_of(x, y, bs=16), ce, **FAST)
    assert res.nbeta == pytest.approx(16 / math.log(16)) == default_nbeta(16)
    assert res.hyperparameters["nbeta_source"].startswith("default m/log m")
    res = estimate_llc(bn_net(), loader_of(x, y, bs=16), ce, nbeta=50.0, **FAST)
    assert res.nbeta == 50.0 and res.hyperparameters["nbeta_source"] == "user"


def test_trace_layout_burnin_and_thinning():
    x, y = small_data()
    res = estimate_llc(bn_net(), loader_of(x, y), ce, num_burnin_steps=5, num_steps_bw_draws=3, train_mode=False,
                       **FAST)
    assert res.loss_traces.shape == (2, 5 + 15)
    assert res.draw_traces.shape == (2, 15)
    assert np.isfinite(res.loss_traces).all()
    # The first recorded loss is the minibatch loss at w* itself.
    model = bn_net()
    model.eval()
    with torch.no_grad():
        first = float(ce(model(x[:16]), y[:16]))
    assert res.loss_traces[0, 0] == pytest.approx(first, rel=1e-6)
    expected = res.nbeta * (res.draw_traces.mean(axis=1) - res.init_loss)
    np.testing.assert_allclose(res.llc_per_chain, expected, rtol=1e-10)


def test_init_loss_is_batch_weighted_mean_and_can_be_limited():
    model = bn_net()
    model.eval()
    x, y = small_data(n=40)
    loader = loader_of(x, y, bs=16)  # batches of 16, 16, 8
    with torch.no_grad():
        full = float(ce(model(x), y))
        first = float(ce(model(x[:16]), y[:16]))
    kw = dict(FAST, train_mode=False)
    assert estimate_llc(model, loader, ce, **kw).init_loss == pytest.approx(full, rel=1e-5)
    assert estimate_llc(model, loader, ce, init_loss_batches=1, **kw).init_loss == pytest.approx(first, rel=1e-6)


def test_divergence_is_flagged_and_not_ok():
    # A bounded loss and a huge step: the chain wanders off to loss ≈ 1 while staying finite,
    # so nβ·(E[L] − L(w*)) ≈ 100 far exceeds 2·d/2 = 4 for d = 4 parameters.
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    model = nn.Linear(3, 1)
    y = model(x).detach()
    with pytest.warns(LLCDiagnosticWarning, match="diverged"):
        res = estimate_llc(model, [(x, y)], lambda o, t: (1 - torch.exp(-((o - t) ** 2))).mean(), lr=1.0,
                           localization=0.0, nbeta=100.0, num_chains=1, num_draws=50, progress=False)
    assert res.flags["diverged"] == [0] and not res.ok
    assert res.llc_mean > 4


def test_trending_chain_is_flagged():
    # A tiny step size from w*: the loss is still climbing when the draws end.
    x = torch.randn(256, 3, generator=torch.Generator().manual_seed(1))
    model = nn.Linear(3, 1)
    y = model(x).detach()
    with pytest.warns(LLCDiagnosticWarning, match="trending"):
        res = estimate_llc(model, [(x, y)], lambda o, t: ((o - t) ** 2).mean(), lr=1e-5, localization=0.0,
                           nbeta=100.0, num_chains=1, num_draws=200, progress=False)
    assert res.flags["trending"] == [0]


def test_rmsprop_sgld_on_a_regular_quadratic():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 3, generator=g)
    model = nn.Linear(3, 1)
    y = model(x).detach()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LLCDiagnosticWarning)
        res = estimate_llc(model, [(x, y)], lambda o, t: ((o - t) ** 2).sum(-1).mean() / 2, sampler="rmsprop_sgld",
                           lr=2e-3, localization=1.0, nbeta=100.0, num_chains=2, num_draws=400,
                           num_burnin_steps=100, progress=False)
    assert res.hyperparameters["sampler"] == "rmsprop_sgld"
    assert res.hyperparameters["rmsprop_alpha"] == 0.99
    assert 1.0 < res.llc_mean < 3.0  # d = 4 parameters, regular: λ = 2


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(sampler="hmc"), "unknown sampler 'hmc'; valid: sgld, rmsprop_sgld"),
        (dict(lr=0.0), "lr must be positive"),
        (dict(num_chains=0), "num_chains"),
        (dict(localization=-1.0), "localization"),
        (dict(nbeta=-2.0), "nbeta"),
    ],
)
def test_invalid_settings_raise_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        estimate_llc(bn_net(), loader_of(*small_data()), ce, progress=False, **kwargs)


def test_batch_size_one_needs_explicit_nbeta():
    x, y = small_data(n=4)
    with pytest.raises(ConfigError, match="batch size 1"):
        estimate_llc(bn_net().eval(), loader_of(x, y, bs=1), ce, progress=False)


def test_result_json_and_trace_plot(tmp_path):
    x, y = small_data()
    res = estimate_llc(bn_net(), loader_of(x, y), ce, num_burnin_steps=3, **FAST)
    write_json(tmp_path / "r.json", res.to_dict())
    back = read_json(tmp_path / "r.json")
    assert back["llc_mean"] == pytest.approx(res.llc_mean)
    assert len(back["loss_traces"]) == 2 and len(back["loss_traces"][0]) == 18
    assert back["hyperparameters"]["sampler"] == "sgld" and back["num_burnin_steps"] == 3
    res.plot_traces(tmp_path / "traces.png")
    assert (tmp_path / "traces.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_grid_outputs(tmp_path):
    x, y = small_data()
    results = llc_sweep(bn_net(), loader_of(x, y), ce, lrs=[1e-4, 1e-3], localizations=[1.0, 10.0, 100.0],
                        output_dir=tmp_path, num_chains=1, num_draws=10, progress=False)
    assert [(r.hyperparameters["lr"], r.hyperparameters["localization"]) for r in results] == [
        (1e-4, 1.0), (1e-4, 10.0), (1e-4, 100.0), (1e-3, 1.0), (1e-3, 10.0), (1e-3, 100.0)]
    data = read_json(tmp_path / "llc_sweep.json")
    assert data["kind"] == "llc_sweep" and len(data["settings"]) == 6
    assert (tmp_path / "llc_sweep.png").stat().st_size > 1000
    with pytest.raises(ConfigError, match="not both"):
        llc_sweep(bn_net(), loader_of(x, y), ce, lrs=[1e-3], localizations=[1.0], localization=2.0)


def test_trajectory_over_three_checkpoints(tmp_path):
    x, y = small_data()
    models = []
    for s in range(3):
        torch.manual_seed(s)
        models.append(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)))
    series = [(0, models[0]), (100, models[1]), (10_000, models[2])]
    curves = {"feature change": ([0, 100, 10_000], [1.0, 0.4, 0.0])}
    traj = llc_trajectory(iter(series), loader_of(x, y), ce, feature_curves=curves, output_dir=tmp_path,
                          seed=3, **FAST)
    assert traj.steps == [0, 100, 10_000]
    assert len(traj.llc_mean) == 3 and all(math.isfinite(v) for v in traj.llc_mean)
    # Same seed and settings at every checkpoint: the per-step value equals a direct call.
    direct = estimate_llc(models[1], loader_of(x, y), ce, seed=3, **FAST)
    assert traj.llc_mean[1] == direct.llc_mean
    data = read_json(tmp_path / "llc_trajectory.json")
    assert data["steps"] == [0, 100, 10_000] and len(data["per_step"]) == 3
    assert data["hyperparameters"]["seed"] == 3 and "diagnostics" in data["per_step"][0]
    assert (tmp_path / "llc_trajectory.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ConfigError, match="no \\(step, model\\)"):
        llc_trajectory([], loader_of(x, y), ce)


def test_step_axis_scale_choice():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3)
    # the LLC plot uses the longitudinal plots' step axis (one rule for every step axis)
    for ax, steps in zip(axes, ([0, 10, 100_000], [10, 100_000], [10, 20, 500])):
        set_step_axis(ax, steps, label=False)
    assert [a.get_xscale() for a in axes] == ["symlog", "log", "linear"]
    plt.close(fig)


def tiny_dataset():
    """``--data test_llc:tiny_dataset`` in the CLI test: 32 images of 3x16x16, 12 classes."""
    g = torch.Generator().manual_seed(0)
    return torch.utils.data.TensorDataset(torch.rand(32, 3, 16, 16, generator=g), torch.randint(0, 12, (32,), generator=g))


@pytest.mark.parametrize("data", ["synthetic", "test_llc:tiny_dataset"])
def test_cli_run_over_checkpoints(tmp_path, capsys, data):
    import argparse

    from devvis.commands import llc as llc_cmd
    from devvis.models import save_checkpoint
    from devvis.zoo.resnet import compact_resnet

    config = {"name": "compact_resnet", "kwargs": {"width": 4, "blocks": [1, 1]}}
    for step in (0, 5000):
        torch.manual_seed(step)
        save_checkpoint(compact_resnet(width=4, blocks=(1, 1)), tmp_path / "ckpts" / f"step_{step}.pt", step=step,
                        model_config=config)
    parser = argparse.ArgumentParser()
    llc_cmd.register(parser.add_subparsers())
    args = parser.parse_args([
        "llc", "--checkpoint-path", str(tmp_path / "ckpts"), "--data", data, "--num-samples", "32",
        "--image-size", "16", "--batch-size", "16", "--num-chains", "1", "--num-draws", "4", "--lr", "1e-5",
        "--output-path", str(tmp_path / "out"), "--no-progress",
    ])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LLCDiagnosticWarning)
        assert args.func(args) == 0
    data_json = read_json(tmp_path / "out" / "slt" / "llc_trajectory.json")
    assert data_json["steps"] == [0, 5000]
    assert data_json["hyperparameters"]["nbeta"] == pytest.approx(16 / math.log(16))
    assert (tmp_path / "out" / "slt" / "llc_trajectory.png").exists()
    out = capsys.readouterr().out
    assert "5000" in out and "llc_trajectory.json" in out


def test_cli_bad_data_spec(tmp_path):
    import argparse

    from devvis.commands import llc as llc_cmd
    from devvis.models import save_checkpoint

    save_checkpoint(nn.Linear(2, 2), tmp_path / "step_1.pt", step=1)
    parser = argparse.ArgumentParser()
    llc_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["llc", "--model", "resnet18", "--checkpoint-path", str(tmp_path), "--data", "nope"])
    with pytest.raises(ConfigError, match="'nope' is neither 'synthetic' nor 'package.module:callable'"):
        args.func(args)
    args = parser.parse_args(["llc", "--checkpoint-path", str(tmp_path), "--data", "no_such_mod:fn"])
    with pytest.raises(ConfigError, match="cannot import 'fn' from 'no_such_mod'"):
        args.func(args)
