"""Lucent compatibility: ``from lucent.optvis import render, param, transform, objectives`` becomes

    from devvis.compat.lucent import render, param, transform, objectives

and the rest of the code runs unchanged on devvis's engine: only the layers the
objective reads are hooked (and unhooked afterwards), the forward pass stops after
the last of them, no gradient piles up on the model's parameters, and no device is
fixed at import time. ``render_vis`` is also importable from here; ``util.set_seed``
is Lucent's. Lucent's other paths exist too: ``devvis.compat.lucent.optvis`` (the same four
modules), ``devvis.compat.lucent.modelzoo.util.get_model_layers`` and
``devvis.compat.lucent.misc.io.show`` (with ``misc.io.showing``).

>>> from torch import nn
>>> from devvis.compat.lucent import render, param, objectives
>>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
>>> imgs = render.render_vis(model, objectives.channel("2", 5), lambda: param.image(24), thresholds=(4,),
...                          show_image=False, progress=False, fixed_image_size=24)
>>> imgs[0].shape, imgs[0].dtype.name
((1, 24, 24, 3), 'float32')
"""

from devvis.compat.lucent import misc, modelzoo, optvis, util
from devvis.compat.lucent.optvis import objectives, param, render, transform
from devvis.compat.lucent.optvis.render import hook_model, render_vis

__all__ = ["optvis", "render", "param", "transform", "objectives", "util", "misc", "modelzoo", "render_vis",
           "hook_model"]
