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
    values per step, ``(steps_run, B)``, each measured on that step's randomly
    transformed images (what the optimizer saw). ``final``: the objective on
    ``images`` without transforms, ``(B,)`` (read it as :attr:`final_values`).
    ``status``: ``"completed"``, ``"converged"`` or ``"interrupted"``.
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
    final: torch.Tensor | None = None

    @property
    def interrupted(self) -> bool:
        """True when the render was stopped by Ctrl-C (the images are those reached so far)."""
        return self.status == "interrupted"

    @property
    def final_values(self) -> torch.Tensor:
        """The objective on the final :attr:`images` without transforms, ``(B,)``: what
        ``objectives.evaluate(model, objective, result.images)`` returns. A result built without
        it (an old results folder, see :attr:`final_values_transformed`) falls back to the last
        step's values under transforms."""
        return self.final if self.final is not None else self.final_values_transformed

    @property
    def final_values_transformed(self) -> torch.Tensor:
        """Objective value per image at the last step, under that step's random transforms
        (``history[-1]``), ``(B,)``; NaN before the first step."""
        return self.history[-1] if len(self.history) else torch.full((self.images.shape[0],), float("nan"))

    def rows(self, start: int, stop: int, *, objective: str, layers: Sequence[str], fields: dict[str, Any],
             time_s: float | None = None) -> "RenderResult":
        """The result of images ``start:stop`` alone, described as the render of ``objective`` (its
        description), ``layers`` and ``fields``: one part of a stacked render
        (:func:`devvis.objectives.stacked`). Images, snapshots, history and final values are cut to the
        rows; ``config["batch"]`` is the rows' count; ``time_s`` defaults to the rows' share of the time.

        >>> import torch
        >>> r = RenderResult(torch.zeros(3, 3, 4, 4), {}, torch.arange(6.0).view(2, 3), "o", ["a"], {"batch": 3},
        ...                  2, "completed", None, 3.0)
        >>> part = r.rows(1, 3, objective="p", layers=["a"], fields={})
        >>> part.history.tolist(), part.config["batch"], part.time_s
        ([[1.0, 2.0], [4.0, 5.0]], 2, 2.0)
        """
        b = self.images.shape[0]
        if not 0 <= start < stop <= b:
            raise ConfigError(f"rows {start}:{stop} lie outside the result's {b} images")
        share = self.time_s * (stop - start) / b if time_s is None else time_s
        return RenderResult(
            images=self.images[start:stop], snapshots={k: v[start:stop] for k, v in self.snapshots.items()},
            history=self.history[:, start:stop], objective=objective, layers=list(layers),
            config={**self.config, "batch": stop - start}, steps_run=self.steps_run, status=self.status,
            converged_step=self.converged_step, time_s=share, fields=dict(fields),
            final=None if self.final is None else self.final[start:stop])

    def image_metadata(self, j: int, **run: Any) -> dict[str, Any]:
        """The image record of image ``j`` (what :meth:`save` writes beside it; see :mod:`devvis.results`).

        ``run`` fills the record's run fields (``step``, ``checkpoint_path``, ``model``, ...).
        """
        from devvis.results import image_record

        final = None if self.final is None else float(self.final[j])
        return image_record(objective=self.objective, layers=self.layers, history=self.history.tolist(),
                            final_value=final, status=self.status, image_index=j, converged_step=self.converged_step,
                            steps_run=self.steps_run, time_s=self.time_s, config=self.config, fields=self.fields,
                            **run)

    def save(self, output_dir: str | Path, names: Sequence[str] | None = None, **run: Any) -> list[Path]:
        """Write one ``.jpg`` per image and its image record (``.json``) beside it, atomically.

        ``names`` are file stems per image (default ``image-0``, ``image-1``, ...).
        ``run`` fields (``step=``, ``checkpoint_path=``, ...) go into every record. Returns the
        image paths. Read the folder back with :func:`devvis.results.open_results`.
        """
        from devvis.results import write_image

        directory = Path(output_dir)
        b = self.images.shape[0]
        names = list(names) if names is not None else [f"image-{j}" for j in range(b)]
        if len(names) != b:
            raise ConfigError(f"save() got {len(names)} names for {b} images")
        return [write_image(directory, stem, self.images[j], self.image_metadata(j, **run))[0]
                for j, stem in enumerate(names)]
