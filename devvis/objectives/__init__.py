"""Objectives: what a feature visualization maximizes.

An :class:`Objective` maps recorded activations to one value per image
(``Tensor[B]``, higher is better) and knows the layers it reads. They compose
with ``+ - * /``, unary minus, products of objectives and ``sum([...])``.

>>> from devvis import objectives
>>> obj = objectives.channel("layer3.1", 5) + 0.05 * objectives.total_variation()
>>> sorted(obj.layers)
['input', 'layer3.1']
"""

from devvis.objectives.activation import (
    channel,
    channel_interpolate,
    channels,
    channels_first,
    direction,
    direction_neuron,
    layer,
    neuron,
)
from devvis.objectives.core import Objective, Sum, as_objective, weighted, wrap_objective
from devvis.objectives.evaluate import evaluate
from devvis.objectives.stacked import stacked
from devvis.objectives.regularizers import (
    alignment,
    alpha_total_variation,
    blur_input_each_step,
    closeness,
    diversity,
    l1,
    l2,
    total_variation,
    transparency,
)

__all__ = [
    "Objective", "Sum", "as_objective", "weighted", "wrap_objective", "evaluate", "channel", "channels", "neuron",
    "layer", "direction", "direction_neuron", "channel_interpolate", "channels_first", "l1", "l2",
    "total_variation", "blur_input_each_step", "diversity", "alignment", "transparency", "alpha_total_variation",
    "closeness", "stacked",
]
