#!/usr/bin/env bash
# Benchmarks (issue 7). Usage: bench/run.sh embed [options for embed_vs_pytorch.py]
#   embed: our embedder and sentence-transformers/PyTorch on the same 1,000
#          clauses, same threads, in one run; prints both and their ratio.
# Builds lextral (release), caches the model and a PyTorch venv in
# ~/.cache/lextral (the venv is ~6 GB: PyPI's torch wheel brings CUDA
# libraries even though only the CPU is used).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lextral/target}"
DATA="${LEXTRAL_DATA:-../shared/data/ledgar}"
what="${1:-embed}"
shift || true

build() {
  cargo build --release --locked -p lextral-cli >&2
  echo "$CARGO_TARGET_DIR/release/lextral"
}

bench_venv() {
  local venv="$HOME/.cache/lextral/bench-venv"
  local stamp="$venv/.requirements"
  if ! cmp -s bench/requirements.txt "$stamp" 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
    "$venv/bin/python" -m pip install --quiet -r bench/requirements.txt >&2
    cp bench/requirements.txt "$stamp"
  fi
  echo "$venv/bin/python"
}

case "$what" in
  embed)
    lextral="$(build)"
    model="$(scripts/setup-model.sh | tail -1)"
    python="$(bench_venv)"
    "$python" bench/embed_vs_pytorch.py --data "$DATA/unlabeled.jsonl" --model "$model" \
      --lextral "$lextral" "$@"
    ;;
  *)
    echo "usage: bench/run.sh embed [--rounds N] [--threads N] [--json FILE]" >&2
    exit 2
    ;;
esac
