#!/usr/bin/env bash
# Runs the whole test suite. Installs what the tests need (the embedding
# model, the local LLM, a local PostgreSQL + pgvector) into the cache and starts the database if it is not
# running; stops it again afterwards if this script started it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lextral/target}"

LEXTRAL_EMBED_MODEL="$(scripts/setup-model.sh | tail -n 1)"
LEXTRAL_LLM_MODEL="$(scripts/setup-llm.sh | tail -n 1)"
export LEXTRAL_EMBED_MODEL LEXTRAL_LLM_MODEL

started_db=0
own_db=0
if [ -z "${LEXTRAL_TEST_DATABASE_URL:-}" ]; then
  own_db=1
  if ! scripts/dev-db.sh status >/dev/null 2>&1; then
    started_db=1
  fi
  LEXTRAL_TEST_DATABASE_URL="$(scripts/dev-db.sh start | tail -n 1)"
  export LEXTRAL_TEST_DATABASE_URL
fi
cleanup() {
  # Each test makes its own database; drop them so runs do not pile up.
  if [ "$own_db" = 1 ]; then
    scripts/dev-db.sh drop-test-databases || true
  fi
  if [ "$started_db" = 1 ]; then
    scripts/dev-db.sh stop || true
  fi
}
trap cleanup EXIT

# The report render test opens report.html in headless Chromium (Debian's
# chromium package). As root (CI) install it and make the test required;
# otherwise the test says it skipped.
if [ -z "${LEXTRAL_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test: installing chromium for the report render test"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "test: chromium not found; the report render test will skip (apt-get install chromium)" >&2
  fi
fi
if [ -n "${LEXTRAL_CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1; then
  export LEXTRAL_REQUIRE_CHROMIUM=1
fi

echo "test: embedder $LEXTRAL_EMBED_MODEL, LLM $LEXTRAL_LLM_MODEL"
cargo test --workspace --all-targets "$@"
# The Python client against a live stack (venv, generated stubs, pytest).
clients/python/run-tests.sh
# The Helm chart linted and rendered by Helm's SDK, objects checked against
# the Kubernetes schemas and each other.
helm/check.sh
# The book built and checked (links, command lines, configuration page).
scripts/docs.sh
# cargo-fuzz, bounded (bench budgets: scripts/fuzz.sh 600).
scripts/fuzz.sh "${LEXTRAL_FUZZ_SECONDS:-10}"
