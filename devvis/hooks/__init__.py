"""Which tensor a layer name means, recording it, and early exit of the forward pass.

The one owner of layer names (DESIGN: "which tensor a layer name means"): render,
``objectives.evaluate``, the longitudinal activations and circuits all go through it.

* :mod:`~devvis.hooks.names`: dotted names, underscored aliases, selectors (``blocks.3.attn[0]``);
* :mod:`~devvis.hooks.calls`: a module that runs several times in one forward pass means its
  last call (:class:`CallPlan`, :func:`count_calls`);
* :mod:`~devvis.hooks.layouts`: how to read a tensor (``nchw``, ``nhwc``, ``tokens``, ``flat``);
* :mod:`~devvis.hooks.recorder`: :class:`ActivationRecorder`, :class:`Activations`;
* :mod:`~devvis.hooks.inspect`: :func:`list_layers`.

>>> import torch, torchvision
>>> model = torchvision.models.resnet18(weights=None).eval()
>>> with ActivationRecorder(model, ["layer2.1"]) as rec:
...     acts = rec.run(torch.rand(1, 3, 64, 64))
>>> tuple(acts["layer2.1"].shape)
(1, 128, 8, 8)
"""

from devvis.hooks.calls import CallPlan, StopForward, count_calls, run_forward
from devvis.hooks.inspect import LayerInfo, list_layers
from devvis.hooks.layouts import LAYOUTS, DeclaredLayout, check_layout, declared_layout, infer_layout
from devvis.hooks.names import (
    INPUT,
    ModuleOutput,
    first_tensor,
    get_module,
    module_names,
    resolve_name,
    select_output,
    split_selector,
)
from devvis.hooks.recorder import ActivationRecorder, Activations

__all__ = [
    "INPUT", "ModuleOutput", "split_selector", "module_names", "resolve_name", "get_module", "select_output",
    "first_tensor", "CallPlan", "StopForward", "count_calls", "run_forward", "LAYOUTS", "DeclaredLayout",
    "check_layout", "declared_layout", "infer_layout", "Activations", "ActivationRecorder", "LayerInfo",
    "list_layers",
]
