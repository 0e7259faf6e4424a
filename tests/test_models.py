"""load_model: name resolution, num_classes inference, fitting checkpoints to architectures."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
import torchvision
from torch import nn

from devvis.errors import CheckpointError, ConfigError, ModelNotFoundError
from devvis.io import write_json
from devvis.architectures import fixed_input_size, resolve_input_size
from devvis.models import (
    ModelDefaults,
    apply_state_dict,
    infer_num_classes,
    list_models,
    load_model,
    model_entry,
    register_model,
    save_checkpoint,
    unregister_model,
)
from devvis.render.pipeline import ModelInput, resolve_preprocess
from devvis.zoo import compact_resnet


@pytest.fixture(scope="module")
def net7() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=7).eval()


@pytest.fixture(scope="module")
def ckpt7(net7, tmp_path_factory):
    p = tmp_path_factory.mktemp("ckpt") / "step_100.pt"
    torch.save({"model_state_dict": net7.state_dict(), "step": 100}, p)
    return p


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_torchvision_without_checkpoint():
    net = load_model("resnet18", num_classes=10)
    assert isinstance(net, torchvision.models.ResNet)
    assert net.fc.out_features == 10 and not net.training
    assert next(net.parameters()).device.type == "cpu"
    assert load_model("ResNet18").fc.out_features == 1000  # names are case-insensitive, default head


def test_num_classes_inferred_from_checkpoint(net7, ckpt7):
    net = load_model("resnet18", checkpoint=ckpt7)
    assert net.fc.out_features == 7
    assert same_weights(net, net7)
    assert not net.training


def test_num_classes_inferred_from_safetensors(net7, tmp_path):
    # safetensors does not keep the saved key order; the classifier is still found.
    p = tmp_path / "m.safetensors"
    save_checkpoint(net7, p)
    assert same_weights(load_model("resnet18", checkpoint=p), net7)


def test_num_classes_inferred_for_other_heads(tmp_path):
    torch.manual_seed(0)
    src = torchvision.models.mobilenet_v3_small(num_classes=4)  # classifier.3.weight after classifier.0
    p = tmp_path / "mnv3.safetensors"
    save_checkpoint(src, p)
    net = load_model("mobilenet_v3_small", checkpoint=p)
    assert net.classifier[3].out_features == 4 and net.classifier[0].out_features == 1024
    assert same_weights(net, src.eval())


@pytest.mark.parametrize(
    "shapes, expected",
    [
        ({"features.0.weight": (8, 3, 3, 3), "heads.head.weight": (5, 768), "heads.head.bias": (5,)}, 5),
        ({"classifier.0.weight": (4096, 9216), "classifier.3.weight": (4096, 4096), "classifier.6.weight": (12, 4096)}, 12),
        ({"fc.weight": (3, 64), "proj.weight": (16, 64)}, 3),  # a named classifier beats a later 2-D weight
        ({"a.weight": (16, 8), "b.weight": (6, 16), "norm.weight": (6,)}, 6),  # generic: last 2-D weight
        ({"conv.weight": (4, 3, 3, 3), "bn.weight": (4,)}, None),
    ],
)
def test_infer_num_classes(shapes, expected):
    sd = {k: torch.zeros(s) for k, s in shapes.items()}
    assert infer_num_classes(sd) == expected


def test_infer_num_classes_follows_given_order():
    sd = {"classifier.6.weight": torch.zeros(12, 8), "classifier.0.weight": torch.zeros(8, 4)}  # shuffled
    assert infer_num_classes(sd) == 8
    assert infer_num_classes(sd, order=["classifier.0.weight", "classifier.6.weight"]) == 12


def test_explicit_num_classes_mismatch_names_shapes(ckpt7):
    with pytest.raises(CheckpointError) as info:
        load_model("resnet18", checkpoint=ckpt7, num_classes=10)
    msg = str(info.value)
    assert str(ckpt7) in msg
    assert "fc.weight: checkpoint (7, 512) vs model (10, 512)" in msg


def test_wrong_architecture_names_keys(ckpt7):
    with pytest.raises(CheckpointError) as info:
        load_model("resnet34", checkpoint=ckpt7)
    msg = str(info.value)
    assert str(ckpt7) in msg and "missing keys" in msg and "layer1.2.conv1.weight" in msg
    assert "different architecture" in msg


def test_apply_state_dict_checks_before_copying():
    net = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    bad = {"0.weight": torch.ones(2, 3), "0.bias": torch.ones(2), "1.weight": torch.ones(5, 2), "1.bias": torch.ones(5)}
    with pytest.raises(CheckpointError, match=r"1\.weight: checkpoint \(5, 2\) vs model \(2, 2\)"):
        apply_state_dict(net, bad, path="x.pt")
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # untouched


def test_strict_false_loads_the_matching_part():
    net = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    partial = {"0.weight": torch.ones(2, 3), "0.bias": torch.ones(2), "extra.w": torch.ones(1)}
    with pytest.raises(CheckpointError, match=r"2 missing keys \(1\.weight, 1\.bias\).*1 unexpected keys \(extra\.w\)"):
        apply_state_dict(net, partial, strict=True)
    apply_state_dict(net, partial, strict=False)
    assert net[0].weight.sum().item() == 6.0


class Wrapper(nn.Module):
    def __init__(self, num_classes: int = 7):
        super().__init__()
        self.model = torchvision.models.resnet18(num_classes=num_classes)


def test_prefix_reconciliation(net7, tmp_path):
    # A Lightning module that owns the network as `model` plus an EMA copy and a loss buffer.
    sd = net7.state_dict()
    lightning = {**{f"model.{k}": v for k, v in sd.items()}, **{f"ema.{k}": v + 1 for k, v in sd.items()},
                 "criterion.weight": torch.ones(7)}
    p = tmp_path / "epoch=0-step=10.ckpt"
    torch.save({"state_dict": lightning, "global_step": 10}, p)
    assert same_weights(load_model("resnet18", checkpoint=p), net7)
    # The reverse: a plain checkpoint into a model that wraps the network as `.model`.
    q = tmp_path / "plain.pt"
    torch.save(sd, q)
    wrapped = apply_state_dict(Wrapper(), torch.load(q, weights_only=True), path=q)
    assert same_weights(wrapped.model, net7)


# ---------------------------------------------------------------------------- name resolution


def test_unknown_name_lists_closest():
    with pytest.raises(ModelNotFoundError) as info:
        load_model("resnet81")
    msg = str(info.value)
    assert "'resnet81'" in msg and "resnet18" in msg and "timm:" in msg


def test_weights_are_never_downloaded():
    with pytest.raises(ConfigError, match="never downloads"):
        load_model("resnet18", weights="IMAGENET1K_V1")


def test_timm_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` raise ImportError
    with pytest.raises(ModelNotFoundError, match=r"pip install devvis\[timm\]"):
        load_model("timm:resnet18")


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    pkg = tmp_path / "mynets"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "arch.py").write_text(textwrap.dedent(
        """
        from torch import nn

        def tiny_cnn(num_classes=10, width=4):
            return nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(width, num_classes))

        def fixed_head(width=4):
            return nn.Sequential(nn.Conv2d(3, width, 3), nn.Flatten(), nn.Linear(width, 2))

        def small_vit(num_classes=3):
            from torchvision.models import VisionTransformer
            return VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=1, hidden_dim=8,
                                     mlp_dim=8, num_classes=num_classes)

        def already_tagged():
            net = nn.Identity()
            net.devvis_cfg = {"preprocess": "none", "input_size": None}
            return net

        NOT_CALLABLE = 3
        """
    ))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "mynets.arch"
    for name in ("mynets.arch", "mynets"):
        sys.modules.pop(name, None)


def test_user_callable(user_module, tmp_path):
    net = load_model(f"{user_module}:tiny_cnn", width=6)
    assert net[0].out_channels == 6 and net[-1].out_features == 10 and not net.training
    torch.manual_seed(1)
    src = load_model(f"{user_module}:tiny_cnn", num_classes=3, width=6)
    p = tmp_path / "tiny.pt"
    torch.save(src.state_dict(), p)
    back = load_model(f"{user_module}:tiny_cnn", checkpoint=p, width=6)  # num_classes=3 inferred
    assert back[-1].out_features == 3 and same_weights(back, src)


def test_user_callable_without_num_classes_gets_none_inferred(user_module, tmp_path):
    src = load_model(f"{user_module}:fixed_head")
    p = tmp_path / "fixed.pt"
    torch.save(src.state_dict(), p)
    assert same_weights(load_model(f"{user_module}:fixed_head", checkpoint=p), src)


def test_user_callable_errors(user_module):
    with pytest.raises(ModelNotFoundError, match="tiny_cnn"):
        load_model(f"{user_module}:tiny_cn")
    with pytest.raises(ModelNotFoundError, match="cannot import module 'mynets.nope'"):
        load_model("mynets.nope:tiny_cnn")
    with pytest.raises(ModelNotFoundError, match="not a callable"):
        load_model(f"{user_module}:NOT_CALLABLE")
    with pytest.raises(ConfigError, match="does not accept"):
        load_model(f"{user_module}:tiny_cnn", depth=3)


@pytest.fixture
def registered(request):
    """Register builders under test names and unregister them afterwards."""
    names: list[str] = []

    def register(name, builder, **defaults):
        register_model(name, **defaults)(builder)
        names.append(name)
        return model_entry(name).builder

    yield register
    for name in names:
        if name in list_models():
            unregister_model(name)


def tiny_registered_net(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(12, num_classes))


def test_registered_names(registered, tmp_path):
    build = registered("tiny_registered_net", tiny_registered_net, preprocess="none")
    assert "tiny_registered_net" in list_models() and "tiny_registered_net" in list_models("REGISTERED")
    assert load_model("tiny_registered_net")[1].out_features == 10
    src = build(num_classes=5)
    p = tmp_path / "zoo.safetensors"
    save_checkpoint(src, p, model_config={"name": "tiny_registered_net", "kwargs": {}})
    net = load_model(None, checkpoint=p)  # name from the checkpoint's metadata, classes inferred
    assert net[1].out_features == 5 and same_weights(net, src)
    assert net.devvis_cfg == {"preprocess": "none", "input_size": None}
    with pytest.raises(ModelNotFoundError, match="tiny_registered_net"):
        load_model("tiny_registered_nte")


def test_registered_defaults_land_on_devvis_cfg(registered):
    build = registered("tiny_fixed_48", tiny_registered_net, preprocess="none", input_size=48)
    expected = {"preprocess": "none", "input_size": (48, 48)}
    by_name, direct = load_model("tiny_fixed_48", num_classes=3), build(num_classes=3)
    assert by_name.devvis_cfg == expected and direct.devvis_cfg == expected
    assert by_name.devvis_cfg is not direct.devvis_cfg  # each model owns its dict
    assert model_entry("tiny_fixed_48").defaults == ModelDefaults(preprocess="none", input_size=(48, 48))
    # The declared input size is the size every render resizes to.
    assert fixed_input_size(by_name) == (48, 48) and resolve_input_size(by_name, None) == (48, 48)
    assert resolve_input_size(by_name, 64) == 64
    x = torch.rand(2, 3, 20, 20)
    assert ModelInput(by_name)(x).shape == (2, 3, 48, 48)


def test_preprocess_auto_follows_the_registry():
    x = torch.rand(2, 3, 16, 16)
    zoo_net = load_model("compact_resnet", width=4)
    assert zoo_net.devvis_cfg == {"preprocess": "none", "input_size": None}
    assert torch.equal(resolve_preprocess("auto", zoo_net)(x), x)  # raw [0, 1] input
    assert torch.equal(resolve_preprocess("auto", compact_resnet(width=4))(x), x)  # built directly
    resnet = load_model("resnet18")
    assert resnet.devvis_cfg == {"preprocess": "imagenet", "input_size": None}
    normalized = resolve_preprocess("auto", resnet)(x)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(normalized, (x - mean) / std, atol=1e-6)


def test_unregistered_models_get_imagenet_and_their_fixed_size(user_module):
    vit = load_model(f"{user_module}:small_vit")
    assert vit.devvis_cfg == {"preprocess": "imagenet", "input_size": (32, 32)}
    kept = load_model(f"{user_module}:already_tagged")  # a callable's own devvis_cfg is kept
    assert kept.devvis_cfg == {"preprocess": "none", "input_size": None}


def test_unknown_registered_name_lists_close_names():
    with pytest.raises(ModelNotFoundError) as info:
        model_entry("compact_resnt")
    assert "'compact_resnt'" in str(info.value) and "compact_resnet" in str(info.value)
    with pytest.raises(ModelNotFoundError) as info:
        load_model("compact_resnt")
    assert "compact_resnet" in str(info.value) and "timm:" in str(info.value)
    with pytest.raises(ModelNotFoundError, match="compact_resnet"):
        unregister_model("compact_resnte")


def test_registering_a_name_twice_raises(registered):
    first = registered("tiny_twice", tiny_registered_net)
    with pytest.raises(ConfigError, match="'tiny_twice' is already registered"):
        register_model("tiny_twice", preprocess="none")(tiny_registered_net)
    assert model_entry("tiny_twice").builder is first  # the first registration is kept
    assert model_entry("tiny_twice").defaults.preprocess == "imagenet"
    with pytest.raises(ConfigError, match="already registered"):
        register_model("compact_resnet")(tiny_registered_net)


@pytest.mark.parametrize("defaults, match", [
    ({"preprocess": "imagnet"}, "unknown default preprocess 'imagnet'"),
    ({"input_size": (0, 32)}, "input_size"),
    ({"input_size": "224"}, "input_size"),
])
def test_register_model_rejects_bad_defaults(defaults, match):
    with pytest.raises(ConfigError, match=match):
        register_model("tiny_bad_defaults", **defaults)
    assert "tiny_bad_defaults" not in list_models()


def test_registry_never_imports_model_files():
    import ast
    from pathlib import Path

    import devvis.models

    folder = Path(devvis.models.__file__).parent
    for name in ("registry", "checkpoints", "state_dict", "discovery"):
        tree = ast.parse((folder / f"{name}.py").read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        assert not any(m and m.startswith("devvis.zoo") for m in imported), name
        assert "devvis.models.factory" not in imported, name


def test_model_config_json_beside_checkpoint(net7, tmp_path):
    run = tmp_path / "run"
    (run / "step_100").mkdir(parents=True)
    write_json(run / "model_config.json", {"name": "resnet18", "kwargs": {"num_classes": 7}})
    p = run / "step_100" / "model.pt"
    torch.save(net7.state_dict(), p)
    assert same_weights(load_model(None, checkpoint=p), net7)
    bad = tmp_path / "bad"
    bad.mkdir()
    write_json(bad / "model_config.json", {"kwargs": {}})
    torch.save(net7.state_dict(), bad / "m.pt")
    with pytest.raises(ConfigError, match="string 'name'"):
        load_model(None, checkpoint=bad / "m.pt")


def test_no_name_and_no_config(ckpt7):
    with pytest.raises(ModelNotFoundError, match="model_config.json"):
        load_model(None, checkpoint=ckpt7)
    with pytest.raises(ModelNotFoundError, match="no model name"):
        load_model(None)


def test_bad_device():
    with pytest.raises(ConfigError, match="device 'gpu7' is not valid; expected cpu, cuda"):
        load_model("resnet18", device="gpu7")


def test_real_zoo_model_rebuilt_from_config(tmp_path):
    from devvis.zoo import MODELS

    torch.manual_seed(0)
    src = MODELS["compact_resnet"](num_classes=5, width=4)
    config = {"name": "compact_resnet", "kwargs": {"num_classes": 5, "width": 4}}
    save_checkpoint(src, tmp_path / "step_000010.safetensors", step=10, model_config=config)
    net = load_model(None, checkpoint=tmp_path / "step_000010.safetensors")
    assert same_weights(net, src.eval())
    # The stored kwargs (width=4) also apply when the name is given explicitly.
    assert same_weights(load_model("compact_resnet", checkpoint=tmp_path / "step_000010.safetensors"), src)
