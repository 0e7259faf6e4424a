#!/usr/bin/env bash
# Install devinterp 1.3.2 (the last release that takes vision models; the LLC comparison baseline) into
# benchmarks/.deps, OUTSIDE devvis's dependencies and outside the project's virtual environment:
# benchmarks/llc_compare.py puts that folder on sys.path. --no-deps: its runtime needs (torch, numpy,
# tqdm, matplotlib, pydantic) come with the venv; anything missing is reported by the benchmark.
#   usage: benchmarks/setup_devinterp.sh [python]    (default: .venv/bin/python)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${1:-$here/../.venv/bin/python}"
target="$here/.deps"
if [ -f "$target/.installed-devinterp-1.3.2" ]; then
    exit 0
fi
mkdir -p "$target"
"$py" -m pip install -q --no-deps --target "$target" devinterp==1.3.2
touch "$target/.installed-devinterp-1.3.2"
