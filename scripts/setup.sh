#!/usr/bin/env bash
# Idempotent setup for a fresh Debian machine (Python 3.11, Node 20): a virtualenv with the exact pins, the
# bridge package (editable), and the pinned TF.js npm packages. Quick when everything is already there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BRIDGE_VENV:-$ROOT/.venv}"
LOCK="$ROOT/requirements/lock-py311-cpu.txt"
STAMP="$VENV/.bridge-setup-stamp"
PY="${PYTHON:-python3}"

want_stamp() { cat "$LOCK" "$ROOT/pyproject.toml" "$ROOT/bridge/js/package-lock.json" | sha256sum | cut -d' ' -f1; }

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtualenv $VENV"
    "$PY" -m venv "$VENV"
fi
if [ "${BRIDGE_SETUP_NO_PIP:-0}" = 1 ]; then
    # Used by the clean-clone test, which borrows an existing virtualenv and must not re-point its install.
    "$VENV/bin/python" -c "import bridge, torch, tensorflow, onnx2tf" \
        || { echo "[setup] BRIDGE_SETUP_NO_PIP=1 but $VENV lacks the Python packages" >&2; exit 1; }
elif [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$(want_stamp)" ]; then
    echo "[setup] installing pinned Python packages (first run takes a few minutes)"
    # torch==2.13.0 resolves to the CPU build that lies on this machine's disk (pip's find-links).
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -c "$LOCK" -e "$ROOT[test,browser]" 2>&1 \
        | grep -v -E "^WARNING: Location .* is ignored" || true
    "$VENV/bin/python" -c "import bridge, torch, tensorflow, onnx2tf" 2>/dev/null \
        || { echo "[setup] Python packages failed to install" >&2; exit 1; }
    NODE_SETUP=1
fi
if ! command -v node >/dev/null 2>&1; then
    echo "[setup] Node is missing: apt-get install -y nodejs npm (Node 20)" >&2
    exit 1
fi
if [ ! -d "$ROOT/bridge/js/node_modules/@tensorflow/tfjs" ] || [ "${NODE_SETUP:-0}" = 1 ]; then
    echo "[setup] installing pinned TF.js npm packages"
    (cd "$ROOT/bridge/js" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
if ! command -v chromium >/dev/null 2>&1; then
    echo "[setup] installing Chromium from Debian's packages (browser stages)"
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
            || echo "[setup] Chromium could not be installed: browser stages will be skipped" >&2
    else
        echo "[setup] not root: run 'sudo apt-get install -y chromium' for the browser stages" >&2
    fi
fi
[ "${BRIDGE_SETUP_NO_PIP:-0}" = 1 ] || want_stamp > "$STAMP"
