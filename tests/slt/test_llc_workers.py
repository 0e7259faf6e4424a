"""LLC estimates in worker processes (``workers=``): the same numbers as in one process, and clear errors."""

from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn

from devvis.errors import ConfigError
from devvis.io import read_json
from devvis.longitudinal import CheckpointSeries
from devvis.parallel import require_picklable, worker_threads
from devvis.slt import calibrate, llc_trajectory


def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))


def images():
    g = torch.Generator().manual_seed(0)
    return torch.utils.data.TensorDataset(torch.rand(96, 3, 8, 8, generator=g), torch.randint(0, 10, (96,), generator=g))


def folder(tmp_path):
    """Three different checkpoints of a small BatchNorm CNN (steps 1, 2, 3)."""
    from devvis.models import save_checkpoint

    model = small_cnn()
    for step in (1, 2, 3):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.1)
        save_checkpoint(model, tmp_path / "ckpts" / f"step_{step}.pt", step=step)
    return tmp_path / "ckpts"


def loader():
    return torch.utils.data.DataLoader(images(), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(3))


SETTINGS = dict(lr=1e-4, localization=10.0, num_chains=2, num_draws=15, num_burnin_steps=5, progress=False, warn=False)


def test_a_series_in_two_workers_gives_the_numbers_of_one_process(tmp_path):
    series = CheckpointSeries(folder(tmp_path), model_fn=small_cnn)
    one = llc_trajectory(series, loader(), nn.CrossEntropyLoss(), **SETTINGS)
    two = llc_trajectory(series, loader(), nn.CrossEntropyLoss(), workers=2, threads=1, **SETTINGS)
    assert two.steps == one.steps == [1, 2, 3]
    assert len(set(one.llc_mean)) == 3  # three different checkpoints, three different numbers
    assert two.llc_mean == one.llc_mean and two.llc_std == one.llc_std
    assert all((a.loss_traces == b.loss_traces).all() for a, b in zip(one.results, two.results))
    assert two.health == one.health


def test_models_in_memory_in_two_workers(tmp_path):
    m = small_cnn()
    pairs = [(5, m), (10, m)]
    one = llc_trajectory(pairs, loader(), nn.CrossEntropyLoss(), **SETTINGS)
    two = llc_trajectory(iter(pairs), loader(), nn.CrossEntropyLoss(), workers=2, threads=1, **SETTINGS)
    assert two.steps == [5, 10] and two.llc_mean == one.llc_mean
    assert two.llc_mean[0] == two.llc_mean[1]  # identical weights, identical numbers whichever worker ran them


def test_calibration_in_two_workers_chooses_and_measures_the_same(tmp_path):
    m = small_cnn()
    grid = dict(lrs=[1e-4, 3e-4], localizations=[10.0], nbetas=[5.0], num_chains=2, num_draws=15, num_burnin_steps=5)
    one = calibrate([m, m], loader(), nn.CrossEntropyLoss(), progress=False, **grid)
    two = calibrate([m, m], loader(), nn.CrossEntropyLoss(), progress=False, workers=2, threads=1, **grid)
    assert [r.llc_mean for r in two.results] == [r.llc_mean for r in one.results]
    assert two.settings == one.settings and two.reason == one.reason and two.fallback == one.fallback


def test_a_criterion_that_cannot_reach_a_worker_is_named():
    m = small_cnn()
    with pytest.raises(ConfigError, match=r"the criterion is a function devvis cannot send to a worker process.*"
                                          r"workers=1"):
        llc_trajectory([(1, m), (2, m)], loader(), lambda out, y: nn.functional.cross_entropy(out, y), workers=2,
                       **SETTINGS)
    with pytest.raises(ConfigError, match=r"workers must be a positive integer .* got 0"):
        llc_trajectory([(1, m)], loader(), nn.CrossEntropyLoss(), workers=0, **SETTINGS)
    require_picklable(nn.CrossEntropyLoss(), "criterion")  # a module pickles: no error


def test_worker_threads_divide_the_cpus():
    assert worker_threads(2, cpus=16) == 8 and worker_threads(3, cpus=2) == 1 and worker_threads(2, 3, cpus=2) == 3
    with pytest.raises(ConfigError, match="threads must be a positive integer, got 0"):
        worker_threads(2, 0)


def test_cli_workers_flag_gives_the_numbers_of_one_process(tmp_path, capsys):
    from devvis.commands import llc as llc_cmd

    ckpts = folder(tmp_path)
    parser = argparse.ArgumentParser()
    llc_cmd.register(parser.add_subparsers())
    values = []
    for workers in ("1", "2"):
        args = parser.parse_args([
            "llc", "--model", "test_llc_workers:small_cnn", "--checkpoint-path", str(ckpts),
            "--data", "test_llc_workers:images", "--batch-size", "16", "--num-chains", "2", "--num-draws", "15",
            "--lr", "1e-4", "--localization", "10", "--output-path", str(tmp_path / f"out{workers}"), "--no-progress",
            "--workers", workers, "--threads", "1",
        ])
        assert args.func(args) == 0
        values.append(read_json(tmp_path / f"out{workers}" / "slt" / "llc_trajectory.json")["llc_mean"])
    assert values[0] == values[1] and len(values[0]) == 3
    args = parser.parse_args(["llc", "--model", "test_llc_workers:small_cnn", "--checkpoint-path", str(ckpts),
                              "--data", "test_llc_workers:images", "--workers", "0", "--no-progress"])
    with pytest.raises(ConfigError, match="--workers must be a positive integer; got 0"):
        args.func(args)


def test_a_calibrated_trajectory_starts_its_workers_once_and_matches_one_process(tmp_path, monkeypatch):
    import devvis.slt.pool as pool_mod

    started = []
    real = pool_mod.process_pool
    monkeypatch.setattr(pool_mod, "process_pool", lambda *a, **k: started.append(a) or real(*a, **k))
    series = CheckpointSeries(folder(tmp_path), model_fn=small_cnn)
    cal = dict(lrs=[1e-4, 3e-4], localizations=[10.0], nbetas=[5.0], num_chains=2, num_draws=15, num_burnin_steps=5)
    kw = dict(num_chains=2, num_draws=15, num_burnin_steps=5, progress=False, warn=False, calibrate=cal)
    one = llc_trajectory(series, loader(), nn.CrossEntropyLoss(), **kw)
    assert not started
    two = llc_trajectory(series, loader(), nn.CrossEntropyLoss(), workers=2, threads=1, **kw)
    assert len(started) == 1  # the calibration and the estimates share one set of processes
    assert two.llc_mean == one.llc_mean and two.health == one.health
    assert two.hyperparameters["lr"] == one.hyperparameters["lr"]


def test_convolutions_sample_channels_last_and_the_model_comes_back_as_it_was():
    from devvis.slt import estimate_llc

    m = small_cnn()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    res = estimate_llc(m, loader(), nn.CrossEntropyLoss(), **SETTINGS)
    assert res.hyperparameters["memory_format"] == "channels_last"
    assert m[0].weight.is_contiguous() and all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    assert estimate_llc(flat, loader(), nn.CrossEntropyLoss(), **SETTINGS).hyperparameters["memory_format"] == "as given"


def test_join_keeps_each_parts_numbers_and_refuses_other_settings(tmp_path):
    from devvis.slt import LLCTrajectory

    m = small_cnn()
    a = llc_trajectory([(0, m), (10, m)], loader(), nn.CrossEntropyLoss(), **SETTINGS)
    b = llc_trajectory([(20, m)], loader(), nn.CrossEntropyLoss(), **SETTINGS)
    joined = LLCTrajectory.join([a, b], labels=["phase 1 data", "phase 2 data"])
    assert joined.steps == [0, 10, 20] and joined.llc_mean == a.llc_mean + b.llc_mean
    assert [p["label"] for p in joined.hyperparameters["parts"]] == ["phase 1 data", "phase 2 data"]
    assert joined.hyperparameters["parts"][1]["steps"] == [20, 20]
    joined.save(tmp_path)
    assert read_json(tmp_path / "llc_trajectory.json")["steps"] == [0, 10, 20]
    c = llc_trajectory([(30, m)], loader(), nn.CrossEntropyLoss(), **{**SETTINGS, "lr": 2e-4})
    with pytest.raises(ConfigError, match=r"different settings: part 1 differs in \{'lr': \(0.0001, 0.0002\)\}"):
        LLCTrajectory.join([a, c])
    with pytest.raises(ConfigError, match="steps must increase"):
        LLCTrajectory.join([b, a])
