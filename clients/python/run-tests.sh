#!/usr/bin/env bash
# Runs the Python client's tests against a live stack the tests start
# themselves. Creates a virtualenv in ~/.cache/lextral/python-venv (reused),
# installs requirements-dev.txt, generates the stubs (generate.sh), installs
# the package and runs pytest. Uses LEXTRAL_EMBED_MODEL, LEXTRAL_LLM_MODEL and
# LEXTRAL_TEST_DATABASE_URL when set (scripts/test.sh sets them), else sets
# them up itself; the lextral binary is LEXTRAL_BIN, default the debug build
# that `cargo test` made (built if missing).
set -euo pipefail
cd "$(dirname "$0")"
HOME_DIR="${LEXTRAL_HOME:-$HOME/.cache/lextral}"
VENV="$HOME_DIR/python-venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -r requirements-dev.txt
PYTHON="$VENV/bin/python" ./generate.sh
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -e .
# Standalone runs set up what scripts/test.sh would (all cached after the first time).
LEXTRAL_EMBED_MODEL="${LEXTRAL_EMBED_MODEL:-$(../../scripts/setup-model.sh | tail -n 1)}"
LEXTRAL_LLM_MODEL="${LEXTRAL_LLM_MODEL:-$(../../scripts/setup-llm.sh | tail -n 1)}"
LEXTRAL_TEST_DATABASE_URL="${LEXTRAL_TEST_DATABASE_URL:-$(../../scripts/dev-db.sh start | tail -n 1)}"
export LEXTRAL_EMBED_MODEL LEXTRAL_LLM_MODEL LEXTRAL_TEST_DATABASE_URL
export LEXTRAL_BIN="${LEXTRAL_BIN:-${CARGO_TARGET_DIR:-$HOME_DIR/target}/debug/lextral}"
[ -x "$LEXTRAL_BIN" ] || cargo build -q -p lextral-cli
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
