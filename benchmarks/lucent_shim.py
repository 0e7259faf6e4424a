"""Import torch-lucent 0.1.8 (the comparison baseline) from ``benchmarks/.deps`` with two shims.

Lucent is never a dependency of devvis: ``benchmarks/setup_lucent.sh`` installs it with
``--no-deps`` into ``benchmarks/.deps``, and :func:`load_lucent` puts that folder on ``sys.path``.

Shims (each is reported in the benchmark's output, see :data:`NOTES`):

* Lucent 0.1.8 calls ``kornia.get_rotation_matrix2d`` and ``kornia.warp_affine``, which moved to
  ``kornia.geometry.transform`` in current kornia (Lucent pins kornia<=0.4.1): the two names are
  re-exported at kornia's top level, unchanged.
* ``lucent.misc.io.showing`` imports ``IPython.display`` at import time (to show images in a
  notebook, which the benchmark never does): when IPython is not installed, an empty stand-in
  module is registered instead of installing IPython and its dependency tree.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path
from typing import Any

#: Where setup_lucent.sh installs Lucent; DEVVIS_BENCH_DEPS overrides it (the tests point it at an empty folder).
DEPS = Path(os.environ.get("DEVVIS_BENCH_DEPS") or Path(__file__).resolve().parent / ".deps")

#: Human-readable lines describing every shim applied (printed by the harness).
NOTES: list[str] = []


def _shim_kornia() -> None:
    import kornia
    from kornia.geometry import transform as kgt

    for name in ("get_rotation_matrix2d", "warp_affine"):
        if not hasattr(kornia, name):
            setattr(kornia, name, getattr(kgt, name))
            NOTES.append(f"shim: kornia.{name} re-exported from kornia.geometry.transform.{name} "
                         f"(kornia {kornia.__version__}; Lucent 0.1.8 expects kornia<=0.4.1)")


def _shim_ipython() -> None:
    try:
        importlib.import_module("IPython.display")
        return
    except ImportError:
        pass
    ipy = types.ModuleType("IPython")
    display = types.ModuleType("IPython.display")

    def _unavailable(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("IPython is stubbed by the devvis benchmark; Lucent's show() is not available")

    display.display = _unavailable  # type: ignore[attr-defined]
    display.HTML = _unavailable  # type: ignore[attr-defined]
    ipy.display = display  # type: ignore[attr-defined]
    sys.modules.setdefault("IPython", ipy)
    sys.modules.setdefault("IPython.display", display)
    NOTES.append("shim: IPython.display stubbed (imported by lucent.misc.io at import time, used only to "
                 "show images in notebooks; IPython is not installed)")


def load_lucent() -> tuple[Any | None, str]:
    """Return ``(lucent_modules, message)``; ``lucent_modules`` is None when Lucent is not installed.

    ``lucent_modules`` has attributes ``render``, ``objectives``, ``param`` (Lucent's own modules)
    and ``version``.
    """
    if DEPS.is_dir() and str(DEPS) not in sys.path:
        sys.path.insert(0, str(DEPS))
    try:
        importlib.import_module("lucent")
    except ImportError:
        return None, (f"Lucent is not installed (run benchmarks/setup_lucent.sh to install torch-lucent 0.1.8 "
                      f"into {DEPS}); showing devvis against the floor only")
    _shim_kornia()
    _shim_ipython()
    try:
        render = importlib.import_module("lucent.optvis.render")
        objectives = importlib.import_module("lucent.optvis.objectives")
        param = importlib.import_module("lucent.optvis.param")
    except Exception as e:  # an incompatible Lucent: report, never crash the devvis rows
        return None, f"Lucent is installed but failed to import ({type(e).__name__}: {e}); devvis against the floor only"
    try:
        from importlib.metadata import version

        ver = version("torch-lucent")
    except Exception:
        ver = "unknown"
    mods = types.SimpleNamespace(render=render, objectives=objectives, param=param, version=ver)
    return mods, f"Lucent {ver} imported from {Path(render.__file__).parents[2]}"
