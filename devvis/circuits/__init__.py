"""Circuits: how channels are built from the channels before them, and when those connections form.

* :func:`expanded_weights` — the effective kernel between two layers through a linearized copy.
* :func:`channel_influence` — gradient x activation (or integrated gradients) of target channels
  with respect to source channels on real inputs.
* :func:`influence_trajectory`, :func:`top_inputs` — those influences at every checkpoint.
* :func:`composition` — a target's strongest upstream channels, when each settles, and a figure.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1))
>>> expanded_weights(net, "0", "2", crop=3, input_shape=(3, 9, 9)).shape
torch.Size([5, 4, 3, 3])
"""

from devvis.circuits.composition import DEFAULT_RENDER, CompositionResult, UpstreamChannel, composition, plot_composition
from devvis.circuits.expanded import IDENTITY_ACTIVATIONS, expanded_weights, linearize
from devvis.circuits.influence import (
    METHODS,
    InfluenceTrajectory,
    channel_influence,
    influence_trajectory,
    top_inputs,
)

__all__ = [
    "CompositionResult", "DEFAULT_RENDER", "UpstreamChannel", "composition", "plot_composition", "IDENTITY_ACTIVATIONS", "METHODS", "InfluenceTrajectory", "channel_influence", "expanded_weights",
    "influence_trajectory", "linearize", "top_inputs",
]
