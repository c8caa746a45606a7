#!/usr/bin/env bash
# Generates the Python gRPC stubs from ../../proto with grpcio-tools into
# src/lextral/v1/ (not committed: run this before installing or testing).
# The stubs are never edited by hand; the typed wrapper is src/lextral_client.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
out=src
rm -rf "$out/lextral"
mkdir -p "$out"
"$PYTHON" -m grpc_tools.protoc \
  -I ../../proto \
  --python_out="$out" --grpc_python_out="$out" --pyi_out="$out" \
  ../../proto/lextral/v1/*.proto
# Regular packages, so type checkers and setuptools find them.
touch "$out/lextral/__init__.py" "$out/lextral/v1/__init__.py"
echo "generated $(ls "$out"/lextral/v1/*_pb2*.py | wc -l) modules in $out/lextral/v1"
