"""``RenderResult``: what :func:`devvis.render` returns, and how it is saved.

``images`` are the final images ``(B, C, H, W)`` float in [0, 1] on the CPU; ``save(output_dir)``
writes one ``.jpg`` per image and a ``.json`` of its metadata beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from devvis import io as dio
from devvis.errors import ConfigError


@dataclass
class RenderResult:
    """What :func:`render` returns.

    ``images``: final images ``(B, C, H, W)`` float in [0, 1] on the CPU.
    ``snapshots``: ``{step: images}`` at each threshold. ``history``: objective
    values per step, ``(steps_run, B)``. ``status``: ``"completed"``,
    ``"converged"`` or ``"interrupted"``.
    """

    images: torch.Tensor
    snapshots: dict[int, torch.Tensor]
    history: torch.Tensor
    objective: str
    layers: list[str]
    config: dict[str, Any]
    steps_run: int
    status: str
    converged_step: int | None
    time_s: float
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def interrupted(self) -> bool:
        """True when the render was stopped by Ctrl-C (the images are those reached so far)."""
        return self.status == "interrupted"

    @property
    def final_values(self) -> torch.Tensor:
        """Objective value per image at the last step, ``(B,)``."""
        return self.history[-1] if len(self.history) else torch.full((self.images.shape[0],), float("nan"))

    def image_metadata(self, j: int, **extra: Any) -> dict[str, Any]:
        """The metadata record of image ``j`` (what :meth:`save` writes beside it)."""
        fields = {**self.fields, **extra}
        return dio.metadata(
            "render",
            objective=self.objective,
            layers=self.layers,
            image_index=j,
            final_value=float(self.history[-1, j]) if len(self.history) else None,
            status=self.status,
            converged=self.status == "converged",
            converged_step=self.converged_step,
            steps_run=self.steps_run,
            history=[float(v) for v in self.history[:, j]] if len(self.history) else [],
            time_s=self.time_s,
            config=self.config,
            **fields,
        )

    def save(self, directory: str | Path, names: Sequence[str] | None = None, **extra: Any) -> list[Path]:
        """Write one ``.jpg`` per image and a ``.json`` of its metadata beside it, atomically.

        ``names`` are file stems per image (default ``image-0``, ``image-1``, ...).
        ``extra`` fields are added to every JSON. Returns the image paths.
        """
        directory = Path(directory)
        b = self.images.shape[0]
        names = list(names) if names is not None else [f"image-{j}" for j in range(b)]
        if len(names) != b:
            raise ConfigError(f"save() got {len(names)} names for {b} images")
        paths = []
        for j, stem in enumerate(names):
            img_path = directory / f"{stem}.jpg"
            dio.write_image(img_path, self.images[j])
            dio.write_json(directory / f"{stem}.json", self.image_metadata(j, image_file=img_path.name, **extra))
            paths.append(img_path)
        return paths
