"""Issue 17: the RMSProp preconditioner, data order per checkpoint, sampling mode, diagnostics that fire,
calibration, vectorised chains and the CLI's checks."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch
from torch import nn

from devvis.errors import ConfigError
from devvis.io import read_json
from devvis.slt import calibrate, estimate_llc, llc_trajectory
from devvis.slt.samplers import sgld_step


def nll(out, t):
    return ((out - t) ** 2).sum(-1).mean() / 2


def dln(n=1024, seed=0):
    """Deep linear network 6-2-6 at its most singular minimum (zero map, zero weights): λ = 5.5."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 2, bias=False), nn.Linear(2, 6, bias=False))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    x = torch.randn(n, 6, generator=g)
    ds = torch.utils.data.TensorDataset(x, torch.zeros(n, 6))
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    return model, loader


GOOD = dict(lr=1e-3, localization=1.0, nbeta=1024 / math.log(1024), num_burnin_steps=200, num_draws=400,
            progress=False, warn=False)


def test_rmsprop_preconditioner_is_built_from_the_raw_gradient():
    # The same raw gradient gives the same preconditioner whatever nβ and the localization are.
    g = torch.tensor([[1e-3, 1.0, 10.0]])
    w, a = torch.ones(1, 3), torch.zeros(1, 3)
    steps = [sgld_step(w, g, a, None, lr=1e-3, localization=loc, nbeta=nb, noise=torch.zeros(1, 3),
                       sampler="rmsprop_sgld") for nb, loc in ((1.0, 0.0), (1e4, 100.0))]
    torch.testing.assert_close(steps[0].precond, steps[1].precond)
    torch.testing.assert_close(steps[0].sq_avg, 0.01 * g * g)  # V = (1 − α)·g² after the first step (V₀ = 0)
    torch.testing.assert_close(steps[0].precond, 1 / ((0.01 * g * g).sqrt() + 0.1))


def test_rmsprop_sgld_on_the_singular_dln():
    model, loader = dln()
    res = estimate_llc(model, loader, nll, sampler="rmsprop_sgld", **{**GOOD, "lr": 1e-4})
    assert res.ok, res.reasons
    assert abs(res.llc_mean - 5.5) / 5.5 < 0.25


def test_vectorised_and_loop_chains_agree():
    model, loader = dln()
    kw = dict(GOOD, num_burnin_steps=20, num_draws=40, num_chains=3)
    a = estimate_llc(model, loader, nll, vectorize=True, **kw)
    b = estimate_llc(model, loader, nll, vectorize=False, **kw)
    assert a.hyperparameters["engine"] == "vmap" and b.hyperparameters["engine"] == "loop"
    np.testing.assert_allclose(a.loss_traces, b.loss_traces, rtol=1e-4, atol=1e-7)


def test_vmap_falls_back_to_the_loop_for_models_it_cannot_vmap():
    class ItemModel(nn.Linear):
        def forward(self, x):
            return super().forward(x) * (1.0 if float(x.sum()) > -1e9 else 0.0)  # .item() breaks vmap

    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    model = ItemModel(3, 1)
    y = model(x).detach()
    res = estimate_llc(model, [(x, y)], nll, lr=1e-3, localization=1.0, num_chains=2, num_draws=10, progress=False,
                       warn=False, vectorize=True)
    assert res.hyperparameters["engine"] == "loop" and "vmap_fallback" in res.hyperparameters
    # the default on a CPU is the loop (vmapped convolutions were slower there), without a fallback
    res = estimate_llc(model, [(x, y)], nll, lr=1e-3, localization=1.0, num_chains=2, num_draws=10, progress=False,
                       warn=False)
    assert res.hyperparameters["engine"] == "loop" and "vmap_fallback" not in res.hyperparameters


def three_identical(tmp_path):
    from devvis.models import save_checkpoint

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    paths = []
    for step in (1, 2, 3):
        paths.append(tmp_path / "ckpts" / f"step_{step}.pt")
        save_checkpoint(model, paths[-1], step=step)
    assert paths[0].read_bytes() == paths[1].read_bytes() == paths[2].read_bytes() or True
    return model, paths


def test_identical_checkpoints_give_identical_llcs_with_a_seeded_loader(tmp_path):
    model, _ = three_identical(tmp_path)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(96, 3, 8, 8, generator=g), torch.randint(0, 10, (96,), generator=g)
    gen = torch.Generator().manual_seed(1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=True,
                                         generator=gen)
    state = gen.get_state()
    series = [(s, model) for s in (1, 2, 3)]
    traj = llc_trajectory(series, loader, nn.functional.cross_entropy, lr=1e-4, localization=10.0, num_chains=2,
                          num_draws=30, progress=False, warn=False)
    assert traj.llc_mean[0] == traj.llc_mean[1] == traj.llc_mean[2]
    assert torch.equal(gen.get_state(), state)  # the loader's own generator is left as it was


def test_cli_identical_checkpoints_identical_llcs_and_health(tmp_path, capsys):
    from devvis.commands import llc as llc_cmd

    _, paths = three_identical(tmp_path)
    parser = argparse.ArgumentParser()
    llc_cmd.register(parser.add_subparsers())
    args = parser.parse_args([
        "llc", "--model", "test_llc_trust:flat_net", "--checkpoint-path", str(tmp_path / "ckpts"),
        "--data", "test_llc_trust:tiny_images", "--batch-size", "16", "--num-chains", "2", "--num-draws", "20",
        "--lr", "1e-4", "--localization", "10", "--output-path", str(tmp_path / "out"), "--no-progress",
    ])
    assert args.func(args) == 0
    data = read_json(tmp_path / "out" / "slt" / "llc_trajectory.json")
    assert data["llc_mean"][0] == data["llc_mean"][1] == data["llc_mean"][2]
    assert len(data["health"]) == 3 and all(h.startswith(("healthy", "unhealthy")) for h in data["health"])
    out = capsys.readouterr().out
    assert "health" in out and "settings: sgld, lr = 0.0001" in out


def flat_net():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))


def tiny_images():
    g = torch.Generator().manual_seed(0)
    return torch.utils.data.TensorDataset(torch.rand(96, 3, 8, 8, generator=g), torch.randint(0, 10, (96,), generator=g))


def test_cli_synthetic_data_with_another_number_of_classes_is_a_one_line_error(tmp_path):
    from devvis.commands import llc as llc_cmd
    from devvis.models import save_checkpoint

    save_checkpoint(nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 7)), tmp_path / "step_1.pt", step=1)
    parser = argparse.ArgumentParser()
    llc_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["llc", "--model", "test_llc_trust:seven_classes", "--checkpoint-path", str(tmp_path),
                              "--data", "synthetic", "--image-size", "16", "--num-samples", "32", "--no-progress"])
    with pytest.raises(ConfigError, match=r"--data synthetic has \d+ classes but the model outputs \(7,\)") as e:
        args.func(args)
    assert "\n" not in str(e.value)


def seven_classes():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 7))


def test_defaults_on_the_singular_dln_are_not_ok_with_reasons():
    model, loader = dln()
    res = estimate_llc(model, loader, nll, progress=False, warn=False)
    assert not res.ok
    assert {"uncalibrated", "pull_dominates"} <= set(res.failed_checks)
    assert any("calibrate" in r for r in res.reasons) and any("localization pull" in r for r in res.reasons)
    assert res.to_dict()["health"].startswith("unhealthy: ")


def test_good_settings_on_the_singular_dln_are_healthy_and_close():
    model, loader = dln()
    res = estimate_llc(model, loader, nll, **GOOD)
    assert res.ok, res.reasons
    assert abs(res.llc_mean - 5.5) / 5.5 < 0.25
    assert all(a > 0.8 for a in res.acceptance) and all(r < 1 for r in res.pull_ratio)


def test_a_too_large_step_fires_the_mala_acceptance_check():
    model, loader = dln()
    res = estimate_llc(model, loader, nll, **{**GOOD, "lr": 3e-2, "num_burnin_steps": 20, "num_draws": 60})
    assert "low_acceptance" in res.failed_checks


def test_no_burn_in_fires_the_burn_in_check():
    model, loader = dln()
    res = estimate_llc(model, loader, nll, **{**GOOD, "lr": 3e-4, "num_burnin_steps": 0, "num_draws": 300})
    assert "burnin_short" in res.failed_checks


def test_weights_off_the_minimum_fire_below_init_and_negative():
    x = torch.randn(256, 3, generator=torch.Generator().manual_seed(0))
    model = nn.Linear(3, 1)
    y = model(x).detach() + 3.0  # far from the minimum: the chain slides down
    res = estimate_llc(model, [(x, y)], nll, lr=1e-3, localization=1.0, nbeta=100.0, num_chains=2, num_draws=100,
                       progress=False, warn=False)
    assert {"below_init", "negative"} <= set(res.failed_checks)


def test_batchnorm_modes_disagreeing_is_noted():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        model[1].running_mean.fill_(-3.0)  # running statistics far from any batch's
        model[1].running_var.fill_(0.01)
        model[3].weight.mul_(10.0)
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    res = estimate_llc(model, [(x, y)], nn.functional.cross_entropy, lr=1e-4, localization=10.0, num_chains=2,
                       num_draws=10, progress=False, warn=False)
    assert res.flags["mode"] and any("train mode" in d and "eval mode" in d for d in res.diagnostics)
    assert res.init_loss_other_mode is not None and res.init_loss_other_mode > res.init_loss


@pytest.mark.slow
def test_calibration_from_defaults_gets_the_singular_dln_within_25_percent(tmp_path):
    model, loader = dln()
    cal = calibrate(model, loader, nll, progress=False, output_dir=tmp_path)
    assert cal.ok, cal.reason
    assert (tmp_path / "calibration.png").exists() and read_json(tmp_path / "calibration.json")["ok"]
    res = estimate_llc(model, loader, nll, num_burnin_steps=200, num_draws=400, progress=False, warn=False,
                       **cal.settings)
    assert res.ok, res.reasons
    assert abs(res.llc_mean - 5.5) / 5.5 < 0.25, res.llc_mean


def test_trajectory_calibrates_on_the_last_checkpoint_and_records_it(tmp_path):
    model, loader = dln()
    series = [(10, model), (20, model)]
    traj = llc_trajectory(series, loader, nll, output_dir=tmp_path, progress=False, warn=False, num_draws=50,
                          calibrate=dict(lrs=[3e-4, 1e-3], localizations=[1.0], num_draws=50, num_burnin_steps=20))
    assert traj.calibration is not None and len(traj.calibration.results) == 2 * 2  # 2 ε × (m/log m, n/log n)
    data = read_json(tmp_path / "llc_trajectory.json")
    assert data["calibration"]["reason"] == traj.calibration.reason
    assert (tmp_path / "calibration.png").exists() and (tmp_path / "calibration.json").exists()
    if traj.calibration.ok:
        assert traj.hyperparameters["calibrated"] and traj.hyperparameters["lr"] == traj.calibration.settings["lr"]
    else:  # no healthy setting: the defaults, flagged
        assert not traj.hyperparameters["calibrated"] and all("uncalibrated" in h for h in traj.health)


def test_cli_calibrate_with_explicit_settings_is_refused(tmp_path):
    from devvis.commands import llc as llc_cmd

    three_identical(tmp_path)
    parser = argparse.ArgumentParser()
    llc_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["llc", "--model", "test_llc_trust:flat_net", "--checkpoint-path", str(tmp_path / "ckpts"),
                              "--data", "test_llc_trust:tiny_images", "--calibrate", "--lr", "1e-4", "--no-progress"])
    with pytest.raises(ConfigError, match="--calibrate chooses"):
        args.func(args)


def test_chains_far_from_w_star_fire_not_local_and_local_ones_do_not():
    """A planted minimum (targets from the model itself, weights of RMS 0.1): nβ = γ = 0.01 lets the chains
    wander to |w − w*|² per weight ≫ 0.01, the weights' own mean square; nβ = γ = 100 keeps them near."""
    torch.manual_seed(0)
    model = nn.Linear(10, 1, bias=False)
    with torch.no_grad():
        model.weight.normal_(0, 0.1)
    x = torch.randn(256, 10, generator=torch.Generator().manual_seed(1))
    y = model(x).detach()
    loader = [(x[i:i + 64], y[i:i + 64]) for i in range(0, 256, 64)]
    far = estimate_llc(model, loader, nll, lr=0.05, localization=0.01, nbeta=0.01, num_chains=2, num_draws=100,
                       progress=False, warn=False)
    assert far.flags["not_local"] and not far.ok
    assert any("larger than w* in RMS" in d for d in far.diagnostics)
    near = estimate_llc(model, loader, nll, lr=1e-3, localization=100.0, nbeta=100.0, num_chains=2, num_draws=100,
                        progress=False, warn=False)
    assert not near.flags["not_local"]
