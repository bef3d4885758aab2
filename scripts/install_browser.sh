#!/usr/bin/env bash
# Installs Debian's Chromium for the playground's browser test where it is missing.
# Needs root and apt-get (CI has both); elsewhere it says why not and the test is skipped.
set -uo pipefail
if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "no Chromium and no root apt-get here: the browser test will be skipped" >&2
    exit 0
fi
echo "installing Debian's chromium for the browser test (about a minute)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null \
    || echo "could not install chromium: the browser test will be skipped" >&2
