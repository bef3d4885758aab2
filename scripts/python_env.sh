# Sourced by install.sh, test.sh and quickstart.sh: choose the Python to install into.
# Inside a virtualenv, or where pip may install into the system Python, that Python.
# Where the system Python is "externally managed" (PEP 668, current Debian and Ubuntu),
# a project virtualenv .venv is created (once) and activated instead.
PYTHON="$(command -v python || command -v python3)"
externally_managed() {
    "$PYTHON" - <<'PY'
import os, sys, sysconfig
managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
sys.exit(0 if managed and sys.prefix == sys.base_prefix else 1)
PY
}
if [ -z "${VIRTUAL_ENV:-}" ] && externally_managed; then
    if [ ! -x .venv/bin/python ]; then
        echo "This Python is externally managed (PEP 668): creating the project virtualenv .venv"
        if ! "$PYTHON" -m venv .venv 2>/dev/null; then
            rm -rf .venv
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
                apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
                "$PYTHON" -m venv .venv
            else
                echo "error: '$PYTHON -m venv' failed; install python3-venv, or activate a virtualenv" >&2
                exit 1
            fi
        fi
    fi
    echo "Using the project virtualenv .venv (activate it with: source .venv/bin/activate)"
    # shellcheck disable=SC1091
    . .venv/bin/activate
    PYTHON="$(command -v python)"
fi
export PATH
