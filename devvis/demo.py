"""The end-to-end demo: train a small model on a planted curriculum, then show its features developing.

``run_demo(output_dir)`` (what ``devvis demo`` and ``make demo`` run):

1. trains :func:`devvis.zoo.compact_resnet` on :class:`devvis.data.SyntheticShapes` with a planted
   curriculum (colour classes first, shapes added at one third of training, gratings at two thirds:
   the run's true stage boundaries) and saves evenly spaced checkpoints (reused when already complete);
2. renders the most active channels of several layers at every checkpoint and computes their
   feature-change metrics and settle steps (:func:`devvis.longitudinal.track`), then their dataset
   examples (held-out SyntheticShapes) and trust verdicts (:func:`devvis.trust.trust`);
3. plots each channel's activation on held-out probe images over training;
4. estimates the local learning coefficient at every checkpoint (calibrated where a healthy setting exists,
   else the grid point with the fewest failures, flagged), plotted
   beside the feature-change curves (:func:`devvis.slt.llc_trajectory`);
5. analyses one circuit: a late channel's strongest upstream channels, their expanded weights and
   whether they settled earlier (:func:`devvis.circuits.composition`);
6. finds the run's developmental stages from the LLC, the loss, the essential dynamics and the
   feature changes, and which units formed in each (:func:`devvis.stages.stages`);
7. writes the report (``report.html`` and its site) over all of it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from devvis import io as dio
from devvis.errors import ConfigError
from devvis.typing import ImageBatch, PathLike

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from devvis.longitudinal import CheckpointSeries
    from devvis.slt import LLCTrajectory
    from devvis.zoo.train import TrainResult


@dataclass
class DemoSettings:
    """Demo knobs; :meth:`quick` gives the ``--quick`` variant.

    The training run is the planted curriculum of ``tests/stages`` (16 px images, width 8, AdamW,
    constant learning rate after the warm-up): shapes join at ``train_steps // 3``, gratings at
    ``2 * train_steps // 3``, and ``checkpoints`` evenly spaced checkpoints (plus step 0) are saved.
    """

    train_steps: int = 300
    checkpoints: int = 30
    width: int = 8
    size: int = 16
    n_train: int = 2400
    n_test: int = 240
    batch_size: int = 64
    lr: float = 0.005
    layers: tuple[str, ...] = ("layer1.0", "layer2.0", "layer3.0")
    channels_per_layer: int = 4
    #: renders at the size the model was trained on: the spectral trust metric compares a picture's
    #: spectrum with the dataset's at the same resolution (at 32 px every picture failed it), and 96
    #: steps let the pictures drive their units as strongly as natural images (at 48 most were "weak")
    render_steps: int = 96
    image_size: int = 16
    #: LLC (benchmarks/LLC_RESULTS.md, round 5): each checkpoint on the classes it had been trained on (a
    #: colour-phase checkpoint is no minimum of the later classes' loss: its loss there is above chance), by
    #: RMSProp-SGLD (δ = 0.01, V warm-started at w*: flat directions settle in < 100 steps, where SGLD needed
    #: ~1000) at a local temperature (nβ = 40, γ = 20: |w − w*|² per weight about w*'s own mean square; the
    #: earlier nβ = γ = 0.5 sampled weights 6x larger than w*, not an LLC). The grid has one point:
    #: calibration at each phase's last checkpoint checks it (healthy, MALA acceptance ≥ 0.9).
    llc_sampler: str = "rmsprop_sgld"
    llc_rmsprop_eps: float = 0.01
    llc_warm_start: bool = True
    llc_draws: int = 400
    llc_burnin: int = 200
    #: chains that have not settled at 2 x (200 + 400) (trending, chains_disagree, burnin_short) continue to
    #: 2 x (400 + 800) (benchmarks/LLC_RESULTS.md, round 7: steps 40, 60 and 280 settle there); the others
    #: cost what they did
    llc_max_draws: int = 800
    llc_lrs: tuple[float, ...] = (1.8e-5,)
    llc_localizations: tuple[float, ...] = (20.0,)
    llc_nbetas: tuple[float, ...] = (40.0,)
    llc_chains: int = 2
    #: the LLC at every k-th checkpoint from the first: 2 x 600 steps cost ~8.6 CPU s per checkpoint
    llc_every: int = 2
    llc_batches: int = 16
    llc_batch_size: int = 32
    #: checkpoints whose LLC is estimated at once, in worker processes of one thread each (the same numbers
    #: as one process: devvis.slt.pool); 2 uses both cores of the 2-core machine the demo is timed on
    llc_workers: int = 2
    circuit_k: int = 4
    circuit_render_steps: int = 48  # the upstream channels' pictures in the circuit figure
    trust_images: int = 256
    trust_k: int = 6
    trust_seeds: int = 2
    seed: int = 0
    #: torch intra-op threads while the demo runs (restored afterwards). Its models are tiny: one thread
    #: is fastest, and on a busy 2-core machine two threads made a model step 25x slower (measured).
    threads: int = 1

    def quick(self) -> "DemoSettings":
        return dataclasses.replace(self, channels_per_layer=3, render_steps=64,
                                   circuit_k=3, trust_images=128)


def curriculum(s: DemoSettings) -> tuple[int, int]:
    """The steps at which shapes and gratings join the demo's training data."""
    return s.train_steps // 3, 2 * s.train_steps // 3


def train_demo_series(output_dir: PathLike, s: DemoSettings, *, progress: bool = False) -> "TrainResult":
    """Train (or reuse) the demo's checkpoint series in ``output_dir``: the compact ResNet on the planted curriculum."""
    from devvis.zoo import train_series

    every = max(1, s.train_steps // s.checkpoints)
    return train_series(Path(output_dir), steps=s.train_steps, width=s.width, size=s.size, n_train=s.n_train,
                        n_test=s.n_test, batch_size=s.batch_size, optimizer="adam", lr=s.lr, curriculum=curriculum(s),
                        checkpoint_steps=list(range(0, s.train_steps + 1, every)), seed=s.seed, threads=1,
                        progress=progress)


def _last_trained(checkpoint_step: int) -> int:
    """The last optimizer step a checkpoint saved at ``checkpoint_step`` has taken (steps 0 … k − 1; 0 for the
    initialization): its classes are the ones it had been trained on."""
    return max(checkpoint_step - 1, 0)


def llc_loader(s: DemoSettings, size: int | None = None, step: int | None = None) -> torch.utils.data.DataLoader:
    """The demo's LLC data: ``llc_batches`` batches of ``llc_batch_size`` images of the classes the run had trained
    on by checkpoint ``step`` (the classes of optimizer steps up to ``step - 1``; default: the whole curriculum).

    The loss the run minimized: the LLC is defined at a minimum, and a checkpoint of the colour phase is
    far from a minimum of the later classes' loss (its loss there is above chance); the two conjunction
    classes are never trained. Generated once, so every SGLD step reads tensors.
    """
    from devvis.data import SyntheticShapes
    from devvis.data.synthetic import Curriculum

    n = s.llc_batches * s.llc_batch_size
    x, y = SyntheticShapes(6 * n, size=size or s.size, seed=s.seed, split="train").tensors()
    at = s.train_steps if step is None else _last_trained(step)
    keep = Curriculum.build(s.train_steps, curriculum(s)).pool(at, y)[:n]
    if len(keep) < n:
        raise ConfigError(f"{len(keep)} LLC images of the classes of step {at}; {n} needed (llc_batches x llc_batch_size)")
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[keep], y[keep]), batch_size=s.llc_batch_size,
                                       shuffle=False)


def _llc_by_phase(series: "CheckpointSeries", s: DemoSettings, size: int) -> "LLCTrajectory":
    """The LLC at every checkpoint, each on the classes it had been trained on: one :func:`llc_trajectory` per
    curriculum phase (its loader, calibrated at the phase's last checkpoint), joined; one pool of workers."""
    from devvis.data.synthetic import Curriculum
    from devvis.slt import LLCTrajectory, llc_trajectory
    from devvis.slt.pool import EstimatePool

    cur = Curriculum.build(s.train_steps, curriculum(s))
    series = series[:: max(1, s.llc_every)]
    phases: dict[int, list[int]] = {}
    for k, step in enumerate(series.steps):
        phases.setdefault(cur.phase_at(_last_trained(step)), []).append(k)
    calibration = dict(lrs=s.llc_lrs, localizations=s.llc_localizations, nbetas=s.llc_nbetas, num_chains=s.llc_chains,
                       num_draws=s.llc_draws, num_burnin_steps=s.llc_burnin, checkpoints=[-1])
    parts, labels = [], []
    with EstimatePool(s.llc_workers, threads=1) as pool:
        for positions in phases.values():
            last = series.steps[positions[-1]]
            classes = sorted(cur.classes_at(_last_trained(last)))
            parts.append(llc_trajectory(series[positions[0]:positions[-1] + 1], llc_loader(s, size, step=last),
                                        torch.nn.CrossEntropyLoss(), sampler=s.llc_sampler,
                                        rmsprop_eps=s.llc_rmsprop_eps, rmsprop_warm_start=s.llc_warm_start,
                                        num_chains=s.llc_chains, num_draws=s.llc_draws, num_burnin_steps=s.llc_burnin,
                                        max_draws=s.llc_max_draws, calibrate=calibration, seed=s.seed, progress=False, warn=False, workers=pool))
            labels.append(f"{len(classes)} classes trained by step {last}")
    return LLCTrajectory.join(parts, labels)


def _top_channels(series: "CheckpointSeries", layer: str, n: int, probe: ImageBatch) -> list[int]:
    """The ``n`` channels of ``layer`` most active on ``probe`` ``(B, 3, H, W)`` in [0, 1] at the final
    checkpoint (the live ones): the probe reaches the model through the render's pipeline
    (``preprocess="auto"``), with the model borrowed through :func:`devvis.state.frozen`."""
    from devvis.hooks import ActivationRecorder
    from devvis.render.pipeline import ModelInput
    from devvis.state import frozen

    model = series.at(len(series) - 1)
    with frozen(model), ActivationRecorder(model, [layer], detach=True) as rec, torch.no_grad():
        a = rec.run(ModelInput(model)(probe))[layer]
    score = a.mean(dim=(0, 2, 3))
    return sorted(score.argsort(descending=True)[:n].tolist())


def run_demo(output_dir: PathLike, *, quick: bool = False, progress: bool = True,
             settings: DemoSettings | None = None, log: Callable[[str], object] = print) -> Path:
    """Run the whole demo into ``output_dir``; returns the report's path.

    The compact ResNet is a zoo model (it carries ``devvis_cfg``: raw [0, 1] input), so every
    step uses the default ``preprocess="auto"``.
    """
    s = settings or DemoSettings()
    if quick:
        s = s.quick()
    previous = torch.get_num_threads()
    torch.set_num_threads(s.threads)
    try:
        return _run(Path(output_dir), s, quick, progress, log)
    finally:
        torch.set_num_threads(previous)


def _run(out: Path, s: DemoSettings, quick: bool, progress: bool, log: Callable[[str], object]) -> Path:
    """The demo's stages (:func:`run_demo` sets the threads around them)."""
    from devvis.circuits import composition
    from devvis.data import SyntheticShapes, probe_batch
    from devvis.longitudinal import CheckpointSeries, get_activations, plot_longitudinal_activations, track
    from devvis.report import write_report
    from devvis.stages import stages
    from devvis.trust import trust

    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_all = time.time()

    def stage(name: str):
        log(f"[devvis demo] {name}")
        return time.time()

    cur = curriculum(s)
    t = stage(f"1/7 training the compact ResNet on a planted curriculum of synthetic shapes (colours from step 0, "
              f"shapes from {cur[0]}, gratings from {cur[1]}; reused if already trained)")
    trained = train_demo_series(out / "checkpoints", s, progress=progress)
    timings["train_s"] = time.time() - t
    log(f"    {len(trained.steps)} checkpoints, held-out accuracy {trained.final_accuracy:.1%}"
        f"{' (reused)' if trained.reused else ''}")

    series = CheckpointSeries(out / "checkpoints")
    size = int(trained.settings.get("size", s.size))
    probe = probe_batch(32, size=size, seed=s.seed)
    components = [(layer, c) for layer in s.layers for c in _top_channels(series, layer, s.channels_per_layer, probe)]

    t = stage(f"2/7 rendering {len(components)} channels at {len(series)} checkpoints and measuring feature change")
    tracked = track(series, components, out / "longitudinal", steps=s.render_steps, image_size=s.image_size,
                    seed=s.seed, progress=progress)
    timings["features_s"] = time.time() - t

    t = stage(f"2b/7 dataset examples and trust verdicts of the {len(components)} channels "
              "(SyntheticShapes as the dataset)")
    trusted = trust(series, components, SyntheticShapes(s.trust_images, size=size, seed=s.seed, split="test"),
                    k=s.trust_k, seeds=s.trust_seeds, steps=s.render_steps, image_size=s.image_size, seed=s.seed,
                    dataset_image_size=s.image_size, renders=tracked.renders, progress=progress)
    trusted.save(out / "trust")
    timings["trust_s"] = time.time() - t
    n_ok = sum(u.trustworthy for rows in trusted.units.values() for u in rows)
    log(f"    {n_ok}/{sum(len(r) for r in trusted.units.values())} unit-checkpoints trustworthy "
        f"({timings['trust_s']:.0f} s)")

    t = stage("3/7 activation trajectories on held-out probe images")
    for layer, c in components:
        acts = get_activations(None, layer, c, series, inputs=probe)
        plot_longitudinal_activations(acts, layer, c, out / "longitudinal" / "activations" / f"{layer}_channel_{c}.png")
    timings["activations_s"] = time.time() - t

    t = stage("4/7 local learning coefficient at every checkpoint, on the classes it had been trained on "
              "(RMSProp-SGLD; the settings checked by calibration at the end of each curriculum phase)")
    curves = {label: (fc.steps, fc.similarity) for label, fc in tracked.changes.items()}
    llc = _llc_by_phase(series, s, size)
    llc.save(out / "slt", feature_curves=curves)
    h = llc.hyperparameters
    n_healthy = sum(r.ok for r in llc.results)
    no_minimum = [st for st, r in zip(llc.steps, llc.results) if not r.at_minimum]
    values = [v for v in llc.llc_mean if math.isfinite(v)]
    log(f"    LLC settings: {h['sampler']}, lr {h['lr']:.3g}, localization {h['localization']:.3g}, nβ "
        f"{h['nbeta']:.4g}, {h['num_chains']} chains x ({h['num_burnin_steps']} burn-in + {h['num_draws']} draws), "
        f"batches of {s.llc_batch_size}; chains run longer at steps "
        f"{[st for st, r in zip(llc.steps, llc.results) if r.extensions] or 'none'} (up to {s.llc_max_draws} draws); "
        f"calibration at each phase's end: "
        + "; ".join(f"steps {p['steps'][0]}-{p['steps'][1]} {'passed' if p['calibrated'] else 'failed (flagged)'}"
                    for p in h["parts"])
        + f"; an LLC at {len(llc.results) - len(no_minimum)} of {len(llc.results)} checkpoints, {n_healthy} of them healthy"
        + (f"; no LLC at steps {no_minimum} (not a local minimum of their loss)" if no_minimum else "")
        + (f", LLC {min(values):.3g} to {max(values):.3g}" if values else ", no finite LLC"))
    timings["llc_s"] = time.time() - t

    t = stage("5/7 one circuit: where the most active late channel comes from")
    target_layer, source_layer = s.layers[-1], s.layers[-2]
    target = next(c for layer, c in components if layer == target_layer)
    composition(series, source_layer, target_layer, target, k=s.circuit_k, inputs=probe, output_dir=out / "circuits",
                render_kwargs={"steps": s.circuit_render_steps, "image_size": s.image_size}, seed=s.seed)
    timings["circuits_s"] = time.time() - t

    t = stage("6/7 developmental stages (LLC, loss, essential dynamics, feature change) and what formed in each")
    # an LLC that is not healthy at every checkpoint cannot tell a stage boundary: it is left out, and said so
    # (and a stage signal needs a value at every checkpoint: with llc_every > 1 it is left out too)
    every_step = llc.steps == list(series.steps)
    llc_signal = llc if n_healthy == len(llc.results) and every_step else None
    staged = stages(series, llc=llc_signal, circuits=[(source_layer, target_layer, target)], output_dir=out / "stages")
    timings["stages_s"] = time.time() - t
    n_unhealthy = len(llc.results) - n_healthy - len(no_minimum)
    left_out = [f"{n_unhealthy} estimates unhealthy"] * bool(n_unhealthy) \
        + [f"no LLC at {len(no_minimum)} checkpoints"] * bool(no_minimum) \
        + [f"estimated at {len(llc.steps)} of {len(series)} checkpoints"] * (not every_step)
    log(f"    boundaries at steps {[b.step for b in staged.boundaries]} (planted: {list(cur)}); signals: "
        f"{', '.join(staged.settings['signals'])}"
        + ("" if llc_signal is not None else f" (the LLC left out: {', '.join(left_out)})"))

    t = stage("7/7 writing the report")
    timings["total_s"] = time.time() - t_all
    took = (f"analysis took {timings['total_s'] - timings['train_s']:.0f} s, training reused" if trained.reused
            else f"demo took {timings['total_s']:.0f} s (training {timings['train_s']:.0f} s)")
    summary = (f"compact ResNet (width {s.width}, {size} px) trained {s.train_steps} steps on a planted curriculum of "
               f"SyntheticShapes (shapes from step {cur[0]}, gratings from {cur[1]}): held-out accuracy "
               f"{trained.final_accuracy:.1%}; {len(series)} checkpoints; {took}{' (quick)' if quick else ''}")
    dio.write_json(out / "demo.json", dio.metadata(
        "demo", summary=summary, quick=quick, settings=dataclasses.asdict(s), timings_s=timings,
        accuracy=trained.final_accuracy, steps=series.steps, components=[f"{l}:{c}" for l, c in components],
        curriculum={"shape": cur[0], "texture": cur[1]},
        settle_steps={k: v.settle_step for k, v in tracked.changes.items()},
        trust={k: {str(u.step): u.verdict for u in rows} for k, rows in trusted.units.items()},
        llc=dict(zip(map(str, llc.steps), llc.llc_mean)), llc_healthy=n_healthy, llc_not_a_minimum=no_minimum,
        stage_boundaries=[b.step for b in staged.boundaries], stage_signals=staged.settings["signals"]))
    report = write_report(out, title="devvis demo: features developing over training")
    log(f"    wrote {report} ({summary})")
    return report
