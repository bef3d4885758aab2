#!/usr/bin/env bash
# The README's main job: install, build the embedded folk corpus, train cpu_small for a
# bounded time, evaluate, and write samples (MIDI + piano-roll PNGs) into OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python_env.sh
bash scripts/install.sh
musicvae quickstart --out "${1:-runs/quickstart}"
