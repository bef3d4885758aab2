#!/usr/bin/env bash
# Installs everything (Chromium too, for the playground's browser test), then runs ruff and
# the default test suite (slow tests excluded; `.ci/run` runs them after this).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python_env.sh
bash scripts/install.sh
bash scripts/install_browser.sh
python -m ruff check .
python -m pytest -m "not slow" -q -p no:cacheprovider -n 2 "$@"
