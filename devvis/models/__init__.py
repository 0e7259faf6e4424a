"""Models and their checkpoints: a registry, one factory, safe loading, and discovery.

* :mod:`~devvis.models.registry`: :func:`register_model` (timm style: names -> builders,
  each with :class:`ModelDefaults` such as preprocessing and input size);
* :mod:`~devvis.models.factory`: :func:`load_model`, the one door for torchvision names,
  ``"timm:NAME"``, ``"package.module:callable"`` and registered names (devvis's zoo);
* :mod:`~devvis.models.checkpoints`: reading (``weights_only`` / safetensors) and saving
  checkpoint files, and the step and model config stored with them;
* :mod:`~devvis.models.state_dict`: fitting a state dict to a model;
* :mod:`~devvis.models.safe_load`: ``weights_only`` loading with the harmless objects training
  scripts store (:data:`SAFE_GLOBALS`), and the checks before reading a file;
* :mod:`~devvis.models.discovery`: which checkpoints a training folder holds, and their steps.

>>> import tempfile, os, torch, torchvision
>>> d = tempfile.mkdtemp()
>>> net = torchvision.models.resnet18(num_classes=7)
>>> save_checkpoint(net, os.path.join(d, "step_100.safetensors"), step=100)
>>> [ref.step for ref in find_checkpoints(d)]
[100]
>>> load_model("resnet18", checkpoint=os.path.join(d, "step_100.safetensors")).fc.out_features
7
"""

from __future__ import annotations

from devvis.models.checkpoints import (
    CHECKPOINT_SUFFIXES,
    MODEL_CONFIG_FILE,
    MODEL_CONFIG_KEY,
    LoadedCheckpoint,
    is_checkpoint_name,
    load_checkpoint,
    read_checkpoint,
    read_checkpoint_step,
    read_model_config,
    save_checkpoint,
)
from devvis.models.discovery import (
    CheckpointRef,
    Discovery,
    discover_checkpoints,
    find_checkpoints,
    format_checkpoint_order,
    natural_key,
    parse_step,
    parse_step_overrides,
)
from devvis.models.safe_load import SAFE_GLOBALS
from devvis.models.factory import list_models, load_model
from devvis.models.registry import ModelDefaults, ModelEntry, model_entry, register_model, unregister_model
from devvis.models.state_dict import apply_state_dict, infer_num_classes

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "MODEL_CONFIG_FILE",
    "MODEL_CONFIG_KEY",
    "CheckpointRef",
    "Discovery",
    "SAFE_GLOBALS",
    "LoadedCheckpoint",
    "ModelDefaults",
    "ModelEntry",
    "apply_state_dict",
    "discover_checkpoints",
    "find_checkpoints",
    "format_checkpoint_order",
    "infer_num_classes",
    "is_checkpoint_name",
    "list_models",
    "load_checkpoint",
    "load_model",
    "model_entry",
    "natural_key",
    "parse_step",
    "parse_step_overrides",
    "read_checkpoint",
    "read_checkpoint_step",
    "read_model_config",
    "register_model",
    "save_checkpoint",
    "unregister_model",
]
