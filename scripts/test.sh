#!/usr/bin/env bash
# Installs everything, then runs the default test suite (slow tests excluded).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
ruff check .
python -m pytest -m "not slow" -q -p no:cacheprovider -n 2 "$@"
