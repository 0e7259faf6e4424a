"""``stages(series, ...)``: the developmental stages of a training run and what formed in each."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from devvis.errors import ConfigError
from devvis.longitudinal import as_series
from devvis.stages.detect import (DEFAULT_MIN_PERSISTENCE, DEFAULT_MIN_SEPARATION, DEFAULT_SUPPORT_Z,
                                  DEFAULT_THRESHOLD, detect_events, signal_z)
from devvis.stages.dynamics import essential_dynamics
from devvis.stages.features import (UnitSettle, change_shares, features_signal, response_change, unit_responses,
                                    unit_settles)
from devvis.stages.result import Stage, StagesResult, formed_stage, settle_stage
from devvis.stages.turns import turning_points
from devvis.typing import ImageBatch, PathLike, PreprocessLike, SeriesLike

#: The signals computed from the series when ``signals`` is not given (``"llc"`` is added when ``llc`` is).
DEFAULT_SIGNALS = ("essential_dynamics", "loss", "features")
SIGNALS = DEFAULT_SIGNALS + ("llc",)
#: Probe images of the default probe (the SyntheticShapes ``"probe"`` split, at the series' image size).
PROBE_IMAGES = 120


def default_layers(model: torch.nn.Module) -> list[str]:
    """Top-level children that are containers of modules with parameters (a ResNet's ``layer1..4``,
    a ViT's ``blocks.0..``); the units of stage analysis."""
    from devvis.stages.blocks import default_blocks

    mods = dict(model.named_modules())
    out = [b for b in default_blocks(model) if any(True for _ in mods[b].children())]
    if not out:
        raise ConfigError("found no block-like layers in the model; give layers=[...] (module names)")
    return out


def _training_settings(series: Any) -> dict[str, Any]:
    """The settings of the :func:`devvis.zoo.train_series` folder the series comes from (``series.json``), or {}."""
    from devvis.errors import CheckpointError
    from devvis.zoo.train import load_series_info

    folders = {p.parent for p in getattr(series, "paths", []) if p is not None}
    if len(folders) == 1:
        try:
            return dict(load_series_info(folders.pop()).settings)
        except CheckpointError:
            pass
    return {}


def _probe(inputs: ImageBatch | None, labels: torch.Tensor | None,
           size: int) -> tuple[torch.Tensor, torch.Tensor | None, list[str] | None]:
    if inputs is not None:
        return inputs, labels, None
    from devvis.data.synthetic import CLASSES, SyntheticShapes

    x, y = SyntheticShapes(PROBE_IMAGES, size, 0, "probe").tensors()
    return x, y, list(CLASSES)


def _groups(groups: Mapping[str, Sequence[int]] | None, class_names: list[str] | None) -> dict[str, list[int]] | None:
    from devvis.data.synthetic import CLASSES, CURRICULUM_PHASES

    if groups is not None:
        return {str(k): [int(c) for c in v] for k, v in groups.items()}
    return {k: list(v) for k, v in CURRICULUM_PHASES.items()} if class_names == list(CLASSES) else None


def _llc_signal(llc: Any, steps: list[int]) -> np.ndarray:
    got = dict(zip(llc.steps, llc.llc_mean)) if hasattr(llc, "llc_mean") else dict(llc)
    missing = [s for s in steps if s not in got]
    if missing:
        raise ConfigError(f"llc has no value at steps {missing[:6]}; give it at every checkpoint of the series")
    values = np.array([float(got[s]) if got[s] is not None else np.nan for s in steps])
    undefined = [s for s, v in zip(steps, values) if not np.isfinite(v)]
    if undefined:
        raise ConfigError(f"llc has no value at steps {undefined[:6]} (no finite estimate, or the weights there are not "
                          f"a local minimum: LLCResult.at_minimum); a stage signal needs a value at every checkpoint: "
                          f"restrict the series to the checkpoints where the LLC is defined, or leave the llc signal out")
    return values


#: How units are assigned to stages: to the stage holding most of their response change (where they formed;
#: the default), or by settle step (the last stage in which they were retuned). See docs/stages.md.
ASSIGN = ("change", "settle")
DEFAULT_ASSIGN = "change"


def _assign_units(stages_: list[Stage], units: Sequence[UnitSettle], assign: str) -> None:
    for u in units:
        k = formed_stage(u.change_share) if assign == "change" else settle_stage(stages_, u.settle_step)
        if k is not None:
            stages_[k].units.append(u)


def _circuits(series: Any, circuits: Sequence[Any], inputs: torch.Tensor, preprocess: PreprocessLike) -> list[dict[str, Any]]:
    from devvis.circuits import influence_trajectory

    out = []
    for c in circuits:
        traj = c if hasattr(c, "influence") else influence_trajectory(series, *c, inputs, preprocess=preprocess)
        infl = traj.influence.detach().double().numpy()
        tps = turning_points(traj.steps, infl)
        out.append({"circuit": f"{traj.source_layer} -> {traj.target_layer}:{traj.target_channel}",
                    "turning_points": [p.to_dict() for p in tps]})
    return out


def stages(series: SeriesLike, *, inputs: ImageBatch | None = None, labels: torch.Tensor | None = None,
           layers: Sequence[str] | None = None, signals: Sequence[str] | None = None, loss: Any = None,
           llc: Any = None, block_llc: Mapping[str, Any] | None = None, changes: Mapping[str, Any] | None = None,
           circuits: Sequence[Any] = (), class_names: Sequence[str] | None = None,
           groups: Mapping[str, Sequence[int]] | None = None, assign: str = DEFAULT_ASSIGN,
           threshold: float = DEFAULT_THRESHOLD, support_z: float = DEFAULT_SUPPORT_Z, min_support: int | None = None,
           min_separation: int = DEFAULT_MIN_SEPARATION, min_persistence: float = DEFAULT_MIN_PERSISTENCE,
           weights: Mapping[str, float] | None = None,
           settle_threshold: float = 0.8, k: int = 9, n_components: int = 3, preprocess: PreprocessLike = "auto",
           output_dir: PathLike | None = None, progress: bool = False) -> StagesResult:
    """The developmental stages of ``series``: boundaries from several signals, and what formed in each stage.

    Args:
        series: a :class:`~devvis.longitudinal.CheckpointSeries` (at least 5 checkpoints), ``{step: model}``
            or checkpoint paths.
        inputs: probe images ``(N, C, H, W)`` in [0, 1], the same at every checkpoint; default: 120 images of
            the ``"probe"`` split of :class:`~devvis.data.SyntheticShapes` (with their labels) at the image
            size of the series' ``series.json`` (32 px when there is none).
        labels: ``(N,)`` class labels of ``inputs``: adds the ``"loss"`` signal (probe cross-entropy) and
            labels each unit's top examples.
        layers: layers whose channels are the units (default :func:`default_layers`).
        signals: which of ``essential_dynamics``, ``loss``, ``features``, ``llc`` to use (default: the
            first three that are available, plus ``llc`` when given).
        loss: a ``{step: value}`` mapping used as the ``loss`` signal instead of the probe loss.
        llc: an :class:`~devvis.slt.LLCTrajectory` (or ``{step: value}``) at the series' steps: the ``llc`` signal.
        block_llc: ``{block: LLCTrajectory}`` (:func:`devvis.stages.block_llc`): attributes each boundary to
            the block whose restricted LLC moves most across it.
        changes: ``{label: FeatureChange}`` from :func:`devvis.longitudinal.track`: their settle steps
            (feature visualizations) replace those units' response settle steps (used by ``assign="settle"``).
        groups: ``{name: class labels}``: each unit's mean standardized response on each group's probe
            images (``group_response``); default on the SyntheticShapes probe: the curriculum's phases.
        assign: ``"change"`` (default: a unit belongs to the stage that holds the largest share of its
            response change, the stage it formed in) or ``"settle"`` (to the stage its settle step falls in).
            They differ: a unit settles in the last stage that retunes it, so on a curriculum the colour
            units retuned when shapes arrive settle in the shape stage, and the shape units retuned when
            gratings arrive settle in the texture stage (docs/stages.md, "Forming and settling").
        circuits: :class:`~devvis.circuits.InfluenceTrajectory` objects or ``(source, target, channel)``
            tuples (computed on the first 32 probe images); each stage lists those with a turning point in it.
        threshold, support_z, min_support, min_separation, min_persistence, weights: boundary detection
            (:func:`devvis.stages.detect_events`); candidates whose supporting vector signals all come back
            (spikes) are reported as ``transients``, not boundaries.
        settle_threshold: the response-similarity threshold of a unit's settle step; k: top examples per unit.
        output_dir: writes ``stages.json``, ``stages_timeline.png`` and ``essential_dynamics.png`` there.

    Returns:
        :class:`StagesResult` (``.boundaries``, ``.transients``, ``.stages``, ``.to_dict()``).
    """
    s = as_series(series)
    steps = list(s.steps)
    if len(steps) < 5:
        raise ConfigError(f"stage detection needs at least 5 checkpoints; the series has {len(steps)}")
    trained = _training_settings(s)
    if assign not in ASSIGN:
        raise ConfigError(f"unknown assign {assign!r}; valid: {', '.join(ASSIGN)}")
    x, y, names = _probe(inputs, labels, int(trained.get("size", 32)))
    class_names = list(class_names) if class_names is not None else names
    group_map = _groups(groups, class_names)
    wanted = list(signals) if signals is not None else [n for n in DEFAULT_SIGNALS if n != "loss" or y is not None
                                                        or loss is not None] + (["llc"] if llc is not None else [])
    if bad := [n for n in wanted if n not in SIGNALS]:
        raise ConfigError(f"unknown signals {bad}; valid: {', '.join(SIGNALS)}")
    ed = essential_dynamics(s, x, labels=y if "loss" in wanted and loss is None else None,
                            n_components=n_components, preprocess=preprocess, progress=progress)
    layer_names = list(layers) if layers is not None else default_layers(s.at(0))
    responses = unit_responses(s, x, layer_names, preprocess=preprocess)
    sig: dict[str, tuple[list[int], np.ndarray]] = {}
    for name in wanted:
        if name == "essential_dynamics":
            sig[name] = (steps, ed.pcs)
        elif name == "loss":
            if loss is None and ed.loss is None:
                raise ConfigError("the loss signal needs labels= (probe labels) or loss={step: value}")
            sig[name] = (steps, np.array([float(dict(loss)[st]) for st in steps]) if loss is not None else np.array(ed.loss))
        elif name == "features":
            sig[name] = (steps, features_signal(responses, n_components))
        else:
            if llc is None:
                raise ConfigError("the llc signal needs llc= (an LLCTrajectory or {step: value})")
            sig[name] = (steps, _llc_signal(llc, steps))
    bounds, transients = detect_events(sig, weights=weights, threshold=threshold, support_z=support_z,
                                       min_support=min_support, min_separation=min_separation,
                                       min_persistence=min_persistence)
    edges = [steps[0]] + [b.step for b in bounds] + [steps[-1]]
    stage_list = [Stage(i, edges[i], edges[i + 1], bounds[i - 1] if i else None) for i in range(len(edges) - 1)]
    units = unit_settles(responses, labels=y, k=k, threshold=settle_threshold, groups=group_map)
    if changes:
        by_label = {u.label: u for u in units}
        for label, fc in changes.items():
            old = by_label.get(label)
            by_label[label] = UnitSettle(fc.layer, fc.channel, fc.settle_step, fc.settle_status,
                                         old.top_examples if old else [], old.top_labels if old else [],
                                         source="feature visualization",
                                         group_response=old.group_response if old else {})
        units = list(by_label.values())
    moved = response_change(responses, y)
    if y is not None and group_map:
        from devvis.stages.contrasts import unit_contrasts

        per = unit_contrasts(s.at(len(s) - 1), x, y, layer_names, groups=group_map, preprocess=preprocess)
        for u in units:
            u.contrast = {name: float(v[u.layer][u.channel]) for name, v in per.items() if u.layer in v}
    for u in units:
        if u.layer in moved and u.channel < moved[u.layer].shape[1]:
            u.change_share = change_shares(steps, moved[u.layer][:, u.channel], edges)
    _assign_units(stage_list, units, assign)
    for rec in _circuits(s, circuits, x[:32], preprocess):
        for st in stage_list:
            hits = [p for p in rec["turning_points"] if st.start <= p["step"] < st.end]
            if hits:
                st.circuits.append({"circuit": rec["circuit"], "turning_points": hits})
    if block_llc:
        from devvis.stages.blocks import attribute

        for st in stage_list[1:]:
            st.block_llc_change = attribute(st.boundary.index, dict(block_llc))
    result = StagesResult(
        steps=steps, boundaries=bounds, transients=transients, stages=stage_list, signals=sig, z=signal_z(steps, sig),
        essential_dynamics=ed,
        units=units, class_names=class_names,
        planted=[{"phase": p["name"], "step": p["start"]} for p in trained["curriculum"]["phases"][1:]]
        if "curriculum" in trained else None,
        settings={"signals": list(sig), "layers": layer_names, "threshold": threshold, "support_z": support_z,
                  "min_support": min_support, "min_separation": min_separation, "min_persistence": min_persistence,
                  "settle_threshold": settle_threshold,
                  "k": k, "n_components": n_components, "probe_images": int(len(x)),
                  "probe_size": int(x.shape[-1]), "groups": group_map, "assign": assign,
                  "change_of": "classes" if y is not None else "images",
                  "weights": dict(weights) if weights else None})
    if output_dir is not None:
        result.save(output_dir)
    return result
