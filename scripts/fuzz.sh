#!/usr/bin/env bash
# cargo-fuzz (libFuzzer) over the targets in fuzz/: the embedded store's
# log replay and the REST classify body. Installs a nightly toolchain
# (rustup, minimal profile) and cargo-fuzz (crates.io, pinned) when missing.
#
#   scripts/fuzz.sh [SECONDS]   each target for SECONDS (default 30; CI: 10)
#
# Corpora grow under $LEXTRAL_HOME/fuzz/<target> (default ~/.cache/lextral),
# so later runs start from what earlier ones found; a crash leaves its input
# in fuzz/artifacts/<target>/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${1:-30}"
CARGO_FUZZ_VERSION="0.13.2"
HOME_DIR="${LEXTRAL_HOME:-$HOME/.cache/lextral}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME_DIR/target}/fuzz"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: installing the nightly toolchain" >&2
  rustup toolchain install nightly --profile minimal >&2
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
  cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION" >&2
fi

for target in store_log classify_body; do
  corpus="$HOME_DIR/fuzz/$target"
  mkdir -p "$corpus"
  echo "fuzz: $target for ${SECONDS_PER_TARGET}s (corpus $corpus)"
  # -rss_limit_mb: the store reserves room for what a long log could hold.
  log="$(mktemp)"
  if ! cargo +nightly fuzz run --fuzz-dir fuzz "$target" "$corpus" -- \
    -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: $target failed (the build, or a crash whose input is in fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  grep -E "^stat::(number_of_executed_units|new_units_added)" "$log" | sed "s/^/fuzz: $target /" || true
  rm -f "$log"
done
