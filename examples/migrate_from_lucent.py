"""Migrating from Lucent: typical Lucent notebook code, unchanged except for one import line.

    python examples/migrate_from_lucent.py [OUTPUT_DIR]

Lucent (torch-lucent 0.1.8) pins kornia <= 0.4.1; this runs the same calls on devvis's engine.
"""

import os
import sys
import tempfile

import torch
import torchvision

# was: from lucent.optvis import render, param, transform, objectives
from devvis.compat.lucent.optvis import objectives, param, render, transform
from devvis.compat.lucent.misc.io import show  # was: from lucent.misc.io import show
from devvis.compat.lucent.modelzoo.util import get_model_layers  # was: from lucent.modelzoo.util import ...
from devvis.compat.lucent.util import set_seed  # was: from lucent.util import set_seed


def main(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    set_seed(0)  # before the model: its random weights (nothing is downloaded) and every render are then fixed
    model = torchvision.models.resnet18(weights=None).to(device).eval()
    names = get_model_layers(model)  # Lucent's underscore names, the ones its objectives take
    print("layers:", len(names), names[:6], "...")

    # 1. A channel by name, Lucent's defaults (128 px FFT image, standard transforms, upsampled to 224)
    images = render.render_vis(model, "layer2_1_conv1:7", thresholds=(4, 8), show_image=False, progress=False,
                               save_image=True, image_name=os.path.join(out, "layer2_1_conv1_7.jpg"))
    print("channel:", [im.shape for im in images])
    html = show(images[-1])  # inline in a notebook; elsewhere the HTML is returned
    print("show:", html[:40] + "...")

    # 2. A batch made diverse, custom transforms, a smaller fixed model input
    obj = objectives.channel("layer3_0", 5) - 1e2 * objectives.diversity("layer2")
    param_f = lambda: param.image(48, batch=2)  # noqa: E731
    transforms = [transform.pad(8, mode="constant", constant_value=0.5), transform.jitter(4),
                  transform.random_rotate(list(range(-5, 6)))]
    images = render.render_vis(model, obj, param_f, transforms=transforms, thresholds=(8,), fixed_image_size=96,
                               show_image=False, progress=False, save_image=True,
                               image_name=os.path.join(out, "layer3_0_5_diverse.jpg"))
    print("diversity batch:", images[0].shape, "|", obj.description.replace("\n", " "))

    # 3. A custom objective, written the Lucent way, and a CPPN with its usual lower learning rate
    @objectives.wrap_objective()
    def center_minus_mean(layer, n_channel):
        def inner(T):
            t = T(layer)[:, n_channel]
            return -(t[:, t.shape[1] // 2, t.shape[2] // 2] - t.mean()).mean()
        return inner

    images = render.render_vis(model, center_minus_mean("layer2", 3), lambda: param.cppn(48),
                               optimizer=lambda params: torch.optim.Adam(params, 5e-3), thresholds=(8,),
                               fixed_image_size=96, show_image=False, progress=False)
    print("cppn:", images[0].shape, float(images[0].min()), float(images[0].max()))

    # 4. The same Lucent objective also runs through devvis's own render() (sign handled: higher is better)
    from devvis import render as devvis_render

    result = devvis_render(model, objectives.channel("layer2_1_conv1", 7), steps=8, image_size=64,
                           input_size=96, progress=False)
    assert result.history[-1].sum() > result.history[0].sum()
    paths = result.save(out, names=["devvis_layer2_1_conv1_7"])
    print("devvis.render:", round(float(result.history[0].sum()), 3), "->", round(float(result.history[-1].sum()), 3))
    print("wrote:", sorted(os.listdir(out)), "|", paths[0].name)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
