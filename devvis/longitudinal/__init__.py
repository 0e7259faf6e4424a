"""Longitudinal analysis: how features and activations change across training checkpoints.

* :class:`CheckpointSeries` — checkpoints ordered by step, one model built at a time;
* :func:`render_series` — the same objective, seed and transforms at every checkpoint
  (:class:`SeriesResult`, indexed by step, saved and reloaded from a folder);
* :func:`get_activations` + :func:`plot_longitudinal_activations` — a channel's response to
  fixed probe images over training;
* :func:`comparison_grid` — rows = components, columns = checkpoints;
* :func:`feature_change`, :func:`cross_checkpoint_matrix`, :func:`settle`,
  :func:`appearance_distance`, :func:`top_k_examples` — how much a feature changed (on the
  feature-driven part of the response, and in appearance), and when it settled (the models'
  series first, then the renders);
* :func:`track` — all of the above for a list of components, written to a folder.

>>> import torch
>>> from devvis.longitudinal import CheckpointSeries, render_series, feature_change
>>> nets = {s: torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)) for s in (0, 10, 100)}
>>> series = CheckpointSeries.from_models(nets)
>>> res = render_series(series, "0:1", steps=2, image_size=16, transforms="none", progress=False)
>>> fc = feature_change(series, res, "0", 1)
>>> len(fc.matrix), round(fc.similarity[-1], 6)
(3, 1.0)
"""

from devvis.longitudinal.activations import (DEFAULT_PROBE_RENDER, LongitudinalActivations, get_activations,
                                             preprocess_name)
from devvis.longitudinal.grid import comparison_grid, component_label
from devvis.longitudinal.inputs import ImagesLike, images_from
from devvis.longitudinal.appearance import AppearanceChange, appearance_change, appearance_distance
from devvis.longitudinal.metrics import (
    FeatureChange,
    component_images,
    cross_checkpoint_matrix,
    feature_change,
    render_preprocess,
)
from devvis.longitudinal.settle import Settle, baseline_image, settle, settle_step, similarity_to_final
from devvis.longitudinal.plots import plot_longitudinal_activations, plot_matrix, plot_similarity, step_scale
from devvis.longitudinal.render_layers import render_layers, render_stacked
from devvis.longitudinal.render_series import SeriesResult, render_series, step_dir
from devvis.longitudinal.series import CheckpointSeries, StepNotFoundError, as_series, format_steps
from devvis.longitudinal.track import TrackResult, parse_components, track
from devvis.trust.examples import TopKExamples, top_k_examples

__all__ = [
    "CheckpointSeries", "StepNotFoundError", "as_series", "format_steps", "render_series", "render_layers",
    "render_stacked", "SeriesResult",
    "step_dir", "get_activations", "LongitudinalActivations", "DEFAULT_PROBE_RENDER", "preprocess_name",
    "plot_longitudinal_activations", "comparison_grid", "component_label", "images_from", "ImagesLike",
    "FeatureChange", "TopKExamples", "component_images", "cross_checkpoint_matrix", "feature_change",
    "render_preprocess", "settle_step", "similarity_to_final", "top_k_examples", "settle", "Settle",
    "baseline_image", "appearance_distance", "appearance_change", "AppearanceChange",
    "plot_similarity", "plot_matrix", "step_scale", "track", "TrackResult", "parse_components",
]
