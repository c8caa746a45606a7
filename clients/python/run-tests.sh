#!/usr/bin/env bash
# Runs the Python client's tests against a live stack the tests start
# themselves. Creates a virtualenv in ~/.cache/lextral/python-venv (reused),
# installs requirements-dev.txt, generates the stubs (generate.sh), installs
# the package and runs pytest. Needs LEXTRAL_EMBED_MODEL and
# LEXTRAL_TEST_DATABASE_URL (scripts/test.sh sets both) and the lextral
# binary: LEXTRAL_BIN, default the debug build that `cargo test` made.
set -euo pipefail
cd "$(dirname "$0")"
HOME_DIR="${LEXTRAL_HOME:-$HOME/.cache/lextral}"
VENV="$HOME_DIR/python-venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -r requirements-dev.txt
PYTHON="$VENV/bin/python" ./generate.sh
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -e .
export LEXTRAL_BIN="${LEXTRAL_BIN:-${CARGO_TARGET_DIR:-$HOME_DIR/target}/debug/lextral}"
[ -x "$LEXTRAL_BIN" ] || cargo build -q -p lextral-cli
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
