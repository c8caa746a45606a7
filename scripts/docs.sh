#!/usr/bin/env bash
# The book: builds docs/ with mdBook (installed pinned into the cache on
# first use) and checks README.md and the book against the repository and
# the binary: every relative link resolves, every page is in SUMMARY.md,
# every `lextral ...` command line names a subcommand and flags that exist,
# and the configuration reference is what scripts/config-reference.py writes.
# The grpcurl and curl examples run in the Python client tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lextral/target}"
TOOLS="${LEXTRAL_HOME:-$HOME/.cache/lextral}/tools"
MDBOOK_VERSION="0.5.4"

mdbook="$TOOLS/mdbook-$MDBOOK_VERSION/bin/mdbook"
if [ ! -x "$mdbook" ]; then
  echo "docs: installing mdbook $MDBOOK_VERSION (cargo install)" >&2
  cargo install --locked --quiet mdbook --version "$MDBOOK_VERSION" \
    --root "$TOOLS/mdbook-$MDBOOK_VERSION"
fi
lextral="${LEXTRAL_BIN:-}"
if [ -z "$lextral" ]; then
  cargo build --quiet --locked -p lextral-cli
  lextral="$CARGO_TARGET_DIR/debug/lextral"
fi

echo "== mdbook build docs"
# A warning (an unclosed HTML tag, a missing file) fails the build.
if ! log="$("$mdbook" build docs 2>&1)" || grep -q "WARN\|ERROR" <<<"$log"; then
  echo "$log" >&2
  echo "docs: mdbook build failed or warned" >&2
  exit 1
fi
echo "== links"
python3 scripts/docs_check.py links
echo "== lextral command lines"
python3 scripts/docs_check.py commands "$lextral"
echo "== configuration reference"
python3 scripts/config-reference.py "$lextral" --check docs/src/configuration-reference.md
echo "docs: ok (book in docs/book/index.html)"
