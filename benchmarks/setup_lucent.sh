#!/usr/bin/env bash
# Install torch-lucent 0.1.8 (the comparison baseline) into benchmarks/.deps, OUTSIDE devvis's
# dependencies and outside the project's virtual environment: benchmarks/run.py puts that folder
# on sys.path. --no-deps because Lucent pins kornia<=0.4.1 and old torch; the harness re-exports
# the two kornia names Lucent needs and stubs IPython.display (imported by lucent.misc.io at import
# time, used only to show images in notebooks), and says so in its output.
#   usage: benchmarks/setup_lucent.sh [python]    (default: .venv/bin/python)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${1:-$here/../.venv/bin/python}"
target="$here/.deps"
if [ -f "$target/.installed-0.1.8" ]; then
    exit 0
fi
mkdir -p "$target"
# decorator: the only third-party package Lucent imports at import time that the venv lacks
# (numpy, PIL, tqdm, torchvision and kornia come with devvis).
"$py" -m pip install -q --no-deps --target "$target" torch-lucent==0.1.8 decorator
touch "$target/.installed-0.1.8"
