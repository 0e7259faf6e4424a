"""devvis: developmental interpretability for vision models.

Feature visualization by activation maximization, across a model's training
checkpoints, beside singular-learning-theory metrics and circuits.

>>> import torchvision
>>> from devvis import render, objectives
>>> model = torchvision.models.resnet18(weights=None)
>>> result = render(model, objectives.channel("layer2.1", 0), steps=2, image_size=32, progress=False)
>>> result.images.shape
torch.Size([1, 3, 32, 32])
"""

from devvis import errors, objectives, param, transforms
from devvis._version import __version__
from devvis.hooks import ActivationRecorder, Activations, list_layers
from devvis.render import Convergence, RenderResult, render

__all__ = [
    "__version__", "render", "RenderResult", "Convergence", "objectives", "param", "transforms", "errors",
    "ActivationRecorder", "Activations", "list_layers",
]
