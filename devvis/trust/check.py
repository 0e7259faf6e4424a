"""``trust()``: dataset examples and the five trust metrics for every unit at every checkpoint, with a verdict.

A unit's picture at a checkpoint is *trustworthy* when every metric passes its threshold
(:class:`Thresholds`), else *suspicious* with the reasons. Definitions: :mod:`devvis.trust.metrics`
and ``docs/trust.md``.

>>> import torch
>>> from devvis.longitudinal import CheckpointSeries
>>> nets = {s: torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3))
...         for s in (0, 1)}
>>> res = trust(CheckpointSeries.from_models(nets), ["2:0"], torch.rand(40, 3, 16, 16), k=4, seeds=2, steps=4,
...             image_size=16, progress=False)
>>> [u.step for u in res.units["2:0"]], res.units["2:0"][-1].verdict.split(":")[0] in ("trustworthy", "suspicious")
([0, 1], True)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from devvis import io as dio
from devvis.data.sources import DatasetLike, dataset_images, dataset_size
from devvis.errors import ConfigError
from devvis.longitudinal.series import as_series
from devvis.render import render
from devvis.trust.examples import DatasetExamples, Unit, dataset_examples, montage, parse_units, safe_name, unit_label
from devvis.trust.metrics import (UNSEEN_TRANSFORMS, PathSimilarity, default_path_layers, natural_max_ratio,
                                  path_similarity, radial_spectrum, seed_stability, spectral_distance,
                                  transform_robustness)
from devvis.trust.batch import UnitScores, given_renders, score_checkpoint, units_objective
from devvis.typing import ImageBatch, PathLike, PreprocessLike, SeriesLike, TransformsLike

TRUSTWORTHY = "trustworthy"


@dataclass(frozen=True)
class Thresholds:
    """Where each metric turns a verdict to *suspicious*; the defaults are calibrated in ``docs/trust.md`` (measured
    on trained and untrained checkpoints and on the planted fooling circuit).

    ``min_natural_ratio``: the visualization must drive the unit at least this fraction of its best natural
    image (below it the render has not found what drives the unit: a convergence reading, it grows with render
    steps); ``min_seed_similarity``: visualizations from different starts must agree this much (centred
    cosine without the unit's own channel; 0 = unrelated); ``min_relative_robustness``: the visualization's
    robustness to unseen transforms must be at least this fraction of its natural examples' (capped at 1:
    examples whose activation grows under a transform do not raise the bar); ``min_path_similarity``: the
    visualization must be closer to the natural examples than random natural patches are (0 = no closer);
    ``max_spectral_distance``: mean |log10| power-spectrum ratio to the dataset's (white noise against
    SyntheticShapes: 1.17).
    """

    min_natural_ratio: float = 0.25
    min_seed_similarity: float = 0.2
    min_relative_robustness: float = 0.5
    min_path_similarity: float = 0.0
    max_spectral_distance: float = 1.1


@dataclass
class UnitTrust:
    """The trust metrics of one unit's visualizations at one checkpoint, and the verdict."""

    layer: str
    channel: int
    step: int
    viz_value: float
    dataset_max: float
    natural_max_ratio: float
    seed_similarity: float
    transform_robustness: float
    natural_robustness: float
    path: PathSimilarity
    spectral_distance: float
    reasons: list[str] = field(default_factory=list)

    @property
    def trustworthy(self) -> bool:
        """No metric failed."""
        return not self.reasons

    @property
    def verdict(self) -> str:
        """``"trustworthy"`` or ``"suspicious: reason; reason"``."""
        return TRUSTWORTHY if not self.reasons else "suspicious: " + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (NaN becomes null when written)."""
        return {"layer": self.layer, "channel": self.channel, "step": self.step, "verdict": self.verdict,
                "reasons": self.reasons, "viz_value": self.viz_value, "dataset_max": self.dataset_max,
                "natural_max_ratio": self.natural_max_ratio, "seed_similarity": self.seed_similarity,
                "transform_robustness": self.transform_robustness, "natural_robustness": self.natural_robustness,
                "path_similarity": self.path.score, "path": self.path.to_dict(),
                "spectral_distance": self.spectral_distance}


def reasons_for(u: UnitTrust, t: Thresholds) -> list[str]:
    """The failed metrics of ``u`` under ``t``, each as a short reason (NaN metrics fail nothing)."""
    out = []
    if u.natural_max_ratio < t.min_natural_ratio:
        out.append(f"weak picture, drives the unit only {u.natural_max_ratio:.2f}x its best natural image "
                   "(render longer?)")
    if u.seed_similarity < t.min_seed_similarity:
        out.append(f"renders from different seeds disagree (similarity {u.seed_similarity:.2f})")
    if (u.natural_robustness > 0 and math.isfinite(u.transform_robustness)
            and u.transform_robustness < t.min_relative_robustness * min(1.0, u.natural_robustness)):
        out.append(f"fragile under unseen transforms (keeps {u.transform_robustness:.0%} of its activation, natural "
                   f"examples {u.natural_robustness:.0%})")
    if u.path.score < t.min_path_similarity:
        out.append(f"reaches the unit along another path than its natural examples (path similarity "
                   f"{u.path.score:.2f})")
    if u.spectral_distance > t.max_spectral_distance:
        out.append(f"unnatural power spectrum (off by 10^{u.spectral_distance:.1f} on average)")
    return out


@dataclass
class TrustResult:
    """What :func:`trust` found: ``units[label]`` one :class:`UnitTrust` per checkpoint, the dataset
    examples, the visualizations ``visualizations[label][step]`` ``(seeds, C, H, W)``, and the settings."""

    steps: list[int]
    units: dict[str, list[UnitTrust]]
    examples: DatasetExamples
    visualizations: dict[str, dict[int, ImageBatch]]
    thresholds: Thresholds
    settings: dict[str, Any] = field(default_factory=dict)

    def summary_lines(self) -> list[str]:
        """One line per unit: its verdict at each checkpoint (``ok`` or the reasons)."""
        lines = []
        for label, rows in self.units.items():
            bad = [r for r in rows if not r.trustworthy]
            head = f"{label}: trustworthy at {len(rows) - len(bad)}/{len(rows)} checkpoints"
            lines.append(head + ("" if not bad else "; suspicious at " + ", ".join(
                f"step {r.step} ({'; '.join(r.reasons)})" for r in bad)))
        return lines

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record in devvis's metadata schema."""
        return dio.metadata("trust", steps=self.steps, thresholds=dataclasses.asdict(self.thresholds),
                            settings=self.settings, units={k: [r.to_dict() for r in v] for k, v in self.units.items()},
                            verdicts={k: {str(r.step): r.verdict for r in v} for k, v in self.units.items()})

    def save(self, output_dir: PathLike) -> list[Path]:
        """Write ``trust.json``, ``examples/`` (:meth:`DatasetExamples.save`) and
        ``visualizations/{layer}_channel_{c}/step_{step:06d}.png`` (the seeds' renders in a row)."""
        out = Path(output_dir)
        files = self.examples.save(out / "examples")
        for label, by_step in self.visualizations.items():
            layer, _, c = label.rpartition(":")
            for step, images in by_step.items():
                path = out / "visualizations" / f"{safe_name(layer)}_channel_{c}" / f"step_{step:06d}.png"
                dio.atomic_write_bytes(path, dio.image_bytes(montage(images), format="PNG"))
                files.append(path)
        dio.write_json(out / "trust.json", self.to_dict())
        files.append(out / "trust.json")
        return files


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def trust(series: SeriesLike, units: Sequence[Unit], dataset: DatasetLike, *, k: int = 9, seeds: int = 3,
          steps: int = 128, image_size: int = 64, seed: int = 0, transforms: TransformsLike = "standard",
          preprocess: PreprocessLike = "auto", n_random: int = 32, path_layers: Sequence[str] | None = None,
          thresholds: Thresholds | None = None, batch_size: int = 64, dataset_image_size: int = 64,
          examples: DatasetExamples | None = None, renders: Any = None, progress: bool = True,
          **render_kwargs: Any) -> TrustResult:
    """Dataset examples, visualizations and trust metrics of each unit at every checkpoint of ``series``.

    Args:
        series: the checkpoints (a :class:`~devvis.longitudinal.CheckpointSeries`, ``{step: model}``, a folder).
        units: ``["layer:c", ("layer", c), ...]``.
        dataset: natural images: a folder path, a tensor ``(N, C, H, W)`` in [0, 1], a Dataset or a DataLoader.
        k: top natural examples per unit (the ``N`` of path similarity and robustness).
        seeds: visualizations per unit and checkpoint, from independent random starts (one batch, seeded by
            ``seed``; the same at every checkpoint); seed stability compares them.
        steps, image_size, transforms, render_kwargs: the renders (:func:`devvis.render`).
        preprocess: the model-input rule for the renders and every score (``"auto"``: the model's own).
        n_random: random natural images (seeded) for the baselines of path similarity, seed stability and
            the spectrum.
        path_layers: layers path similarity compares; default :func:`~devvis.trust.metrics.default_path_layers`.
        examples: dataset examples already computed with :func:`dataset_examples` (same series and units).
        renders: visualizations already rendered with the same ``steps``, ``image_size`` and ``transforms``
            (``track(...).renders``, :func:`~devvis.trust.batch.given_renders`): a unit found there at every
            checkpoint uses that picture as its first seed, so the verdict is about the picture shown
            elsewhere, and only ``seeds - 1`` more are rendered (from ``seed + 1``).

    All units of all layers (and all seeds) are rendered in one batch per checkpoint, and every score
    comes from two recorded passes per checkpoint (:mod:`devvis.trust.batch`).

    Returns :class:`TrustResult` (``.save(dir)`` writes JSON and images; ``.summary_lines()`` for a console).
    """
    for name, v in (("k", k), ("seeds", seeds), ("steps", steps), ("image_size", image_size), ("n_random", n_random)):
        _check_positive(name, v)
    th = thresholds or Thresholds()
    s = as_series(series)
    parsed = parse_units(units)
    ex = examples or dataset_examples(s, parsed, dataset, k=k, batch_size=batch_size, image_size=dataset_image_size,
                                      preprocess=preprocess, progress=progress)
    n = dataset_size(dataset) or ex.n_images
    g = torch.Generator().manual_seed(seed)
    rand_idx = torch.randperm(n, generator=g)[:min(n_random, n)].sort().values.tolist()
    natural = dataset_images(dataset, rand_idx, image_size=dataset_image_size)
    natural_spectrum = radial_spectrum(natural)
    by_layer: dict[str, list[int]] = {}
    for layer, c in parsed:
        by_layer.setdefault(layer, []).append(c)
    final = s.at(len(s) - 1)
    paths = {layer: list(path_layers) if path_layers is not None
             else default_path_layers(final, layer, tuple(natural.shape[1:])) for layer in by_layer}
    recorded_layers = list(dict.fromkeys([x for layer in by_layer for x in paths[layer] + [layer]]))
    out: dict[str, list[UnitTrust]] = {unit_label(l, c): [] for l, c in parsed}
    viz_out: dict[str, dict[int, ImageBatch]] = {unit_label(l, c): {} for l, c in parsed}
    given = given_renders(renders, parsed, steps=steps, image_size=image_size,
                          transforms=transforms) if renders is not None else {}
    given = {u: by_step for u, by_step in given.items() if all(st in by_step for st in s.steps)}
    counts = [seeds - (1 if u in given else 0) for u in parsed]
    objective = units_objective(parsed, counts) if sum(counts) else None
    own_seed = seed + 1 if given else seed  # independent of the given renders' starts
    bar = tqdm(total=len(s), disable=not progress, desc="trust", unit="checkpoint")
    for step, model in s:
        own = render(model, objective, steps=steps, image_size=image_size, seed=own_seed, batch=sum(counts),
                     transforms=transforms, preprocess=preprocess, progress=False,
                     **render_kwargs).images if objective is not None else None
        offsets = [sum(counts[:u]) for u in range(len(parsed))]
        viz = torch.cat([torch.cat(([given[u][step].to(own.dtype if own is not None else torch.float32)]
                                    if u in given else []) + ([own[o:o + n]] if n else []))
                         for u, o, n in zip(parsed, offsets, counts)])
        top = torch.cat([ex.images(unit_label(l, c), step) for l, c in parsed])
        scores = score_checkpoint(model, parsed, paths, viz, top, natural, seeds=seeds, k=k, preprocess=preprocess,
                                  batch_size=batch_size)
        for u, (layer, c) in enumerate(parsed):
            label = unit_label(layer, c)
            viz_out[label][step] = viz[u * seeds:(u + 1) * seeds]
            i = ex.units[label].steps.index(step)
            out[label].append(_unit_trust(layer, c, step, scores[u], float(ex.units[label].values[i, 0]),
                                          viz[u * seeds:(u + 1) * seeds], natural_spectrum, paths[layer], th))
        bar.update(1)
    bar.close()
    settings = {"k": k, "seeds": seeds, "steps": steps, "image_size": image_size, "seed": seed,
                "transforms": transforms if isinstance(transforms, str) or transforms is None else repr(transforms),
                "preprocess": ex.preprocess, "n_random": len(rand_idx), "random_indices": rand_idx,
                "path_layers": paths, "given_renders": sorted(unit_label(*u) for u in given),
                "own_render_seed": own_seed, "unseen_transforms": list(UNSEEN_TRANSFORMS), "dataset": ex.dataset,
                **{key: v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)
                   for key, v in render_kwargs.items()}}
    return TrustResult(steps=s.steps, units=out, examples=ex, visualizations=viz_out, thresholds=th, settings=settings)


def _unit_trust(layer: str, c: int, step: int, sc: UnitScores, dmax: float, viz: ImageBatch,
                natural_spectrum: torch.Tensor, path: list[str], th: Thresholds) -> UnitTrust:
    value = float(sc.viz_values.mean())
    u = UnitTrust(layer=layer, channel=c, step=step, viz_value=value, dataset_max=dmax,
                  natural_max_ratio=natural_max_ratio(value, dmax),
                  seed_similarity=seed_stability(sc.viz[layer], sc.random[layer], exclude=c),
                  transform_robustness=transform_robustness(sc.viz_values, sc.viz_t),
                  natural_robustness=transform_robustness(sc.top_values, sc.top_t),
                  path=path_similarity(sc.viz, sc.top, sc.random, path),
                  spectral_distance=spectral_distance(viz, natural_spectrum))
    u.reasons = reasons_for(u, th)
    return u
