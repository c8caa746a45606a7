#!/usr/bin/env bash
# One command from a fresh clone to a classified clause: builds Lextral, caches
# the model, serves everything with the embedded store (no database server;
# $LEXTRAL_HOME/store, or PostgreSQL when LEXTRAL_DATABASE_URL is set), indexes
# LEDGAR (../shared/data/ledgar, else fetched from the Hugging Face Hub) and
# classifies an example. It also trains the default classifier once (cached
# in ~/.cache/lextral/models/ledgar-classifier; LEXTRAL_FINETUNED_MODEL names
# another, LEXTRAL_SKIP_TRAIN=1 skips it) and caches the offline LLM for the
# zero-shot and RAG strategies (scripts/setup-llm.sh; LEXTRAL_LLM_BACKEND other
# than local skips it). The server keeps running; stop it with
# `scripts/quickstart.sh stop`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lextral/target}"
HOME_DIR="${LEXTRAL_HOME:-$HOME/.cache/lextral}"
RUN_DIR="$HOME_DIR/run"
mkdir -p "$RUN_DIR"
HTTP="${LEXTRAL_HTTP:-127.0.0.1:8080}"
GRPC="${LEXTRAL_GRPC:-127.0.0.1:50051}"
BIN="$CARGO_TARGET_DIR/release/lextral"

if [ "${1:-}" = stop ]; then
  if [ -f "$RUN_DIR/lextral.pid" ] && kill "$(cat "$RUN_DIR/lextral.pid")" 2>/dev/null; then
    echo "quickstart: lextral stopped"
  fi
  rm -f "$RUN_DIR/lextral.pid"
  exit 0
fi

echo "quickstart: building (release)"
cargo build --release --quiet -p lextral-cli

LEXTRAL_EMBED_MODEL="$(scripts/setup-model.sh | tail -n 1)"
if [ "${LEXTRAL_LLM_BACKEND:-local}" = local ] && [ -z "${LEXTRAL_LLM_MODEL:-}" ]; then
  LEXTRAL_LLM_MODEL="$(scripts/setup-llm.sh | tail -n 1)"
  export LEXTRAL_LLM_MODEL
fi
export LEXTRAL_EMBED_MODEL
# The embedded store unless a database is named (auto picks PostgreSQL then).
if [ -z "${LEXTRAL_DATABASE_URL:-}" ]; then
  export LEXTRAL_STORE="${LEXTRAL_STORE:-embedded}"
  export LEXTRAL_STORE_PATH="${LEXTRAL_STORE_PATH:-$HOME_DIR/store}"
  echo "quickstart: embedded store in $LEXTRAL_STORE_PATH"
fi

DATA="${LEXTRAL_DATA:-}"
if [ -z "$DATA" ]; then
  if [ -f ../shared/data/ledgar/train.jsonl ]; then
    DATA=../shared/data/ledgar
  else
    DATA="$HOME_DIR/data/ledgar"
    [ -f "$DATA/train.jsonl" ] || "$BIN" data fetch ledgar --out "$DATA"
  fi
fi

if [ "${LEXTRAL_SKIP_TRAIN:-0}" != 1 ]; then
  MODEL="${LEXTRAL_FINETUNED_MODEL:-$HOME_DIR/models/ledgar-classifier}"
  if [ ! -f "$MODEL/manifest.json" ]; then
    echo "quickstart: training the classifier (once; about 10 min on 2 cores) -> $MODEL"
    "$BIN" train --data "$DATA" --out "$MODEL"
  fi
  export LEXTRAL_FINETUNED_MODEL="$MODEL"
fi

if [ -f "$RUN_DIR/lextral.pid" ] && kill -0 "$(cat "$RUN_DIR/lextral.pid")" 2>/dev/null; then
  echo "quickstart: restarting the running lextral"
  kill "$(cat "$RUN_DIR/lextral.pid")" || true
  sleep 1
fi
echo "quickstart: serving (log: $RUN_DIR/lextral.log)"
nohup "$BIN" serve all --http "$HTTP" --grpc "$GRPC" >"$RUN_DIR/lextral.log" 2>&1 &
echo $! >"$RUN_DIR/lextral.pid"
for _ in $(seq 1 120); do
  if curl -fs "http://$HTTP/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$(cat "$RUN_DIR/lextral.pid")" 2>/dev/null; then
    echo "quickstart: lextral exited; see $RUN_DIR/lextral.log" >&2
    tail -n 20 "$RUN_DIR/lextral.log" >&2
    exit 1
  fi
  sleep 0.5
done
curl -fs "http://$HTTP/readyz" >/dev/null

SPLITS="${LEXTRAL_INDEX_SPLITS:-train}"
echo "quickstart: indexing $DATA ($SPLITS)"
"$BIN" index --data "$DATA" --splits "$SPLITS" --server "http://$GRPC"

echo "quickstart: classifying an example"
EXAMPLE="This Agreement shall be governed by and construed in accordance with the laws of the State of New York, without regard to its conflict of laws principles."
"$BIN" classify --server "http://$GRPC" --strategy knn "$EXAMPLE"
if [ -n "${LEXTRAL_FINETUNED_MODEL:-}" ]; then
  "$BIN" classify --server "http://$GRPC" --strategy finetuned "$EXAMPLE"
fi
# The local LLM loads in the background (seconds); give it a moment.
for attempt in $(seq 1 30); do
  if "$BIN" classify --server "http://$GRPC" --strategy rag "$EXAMPLE"; then break; fi
  [ "$attempt" = 30 ] && { echo "quickstart: rag did not answer; see $RUN_DIR/lextral.log" >&2; exit 1; }
  sleep 2
done

# An evaluation report of the fast strategies on the validation split
# (about half a minute); rag and zero-shot are in the hint below.
REPORT=""
if [ -f "$DATA/validation.jsonl" ]; then
  STRATEGIES=knn
  # A model refitted on train + validation (lextral train's default) has
  # seen these clauses: its figures here would not be held-out. Its
  # cross-validated estimate is printed instead.
  if [ -n "${LEXTRAL_FINETUNED_MODEL:-}" ]; then
    if grep -q '"refit": true' "$LEXTRAL_FINETUNED_MODEL/manifest.json" 2>/dev/null; then
      python3 - "$LEXTRAL_FINETUNED_MODEL/manifest.json" <<'PY' || true
import json, sys
cv = json.load(open(sys.argv[1]))["cross_validation"]
row = next(c for c in cv["candidates"] if c["name"] == cv["chosen"])
print(f"quickstart: the fine-tuned model ({cv['chosen']}) was refitted on train + validation; "
      f"its {cv['folds']}-fold cross-validated estimate: micro-F1 {row['micro_f1_mean']:.4f} ± {row['micro_f1_sd']:.4f}, "
      f"macro-F1 {row['macro_f1_mean']:.4f} ± {row['macro_f1_sd']:.4f}")
PY
    else
      STRATEGIES=knn,finetuned,cascade
    fi
  fi
  RUN="$HOME_DIR/runs/quickstart-$(date -u +%Y%m%dT%H%M%SZ)"
  echo "quickstart: evaluating $STRATEGIES on validation -> $RUN"
  "$BIN" eval --data "$DATA" --split validation --strategy "$STRATEGIES" --out "$RUN" --server "http://$GRPC"
  REPORT="$RUN/report.html"
fi

cat <<TXT

Lextral is running:
  web UI        http://$HTTP/
  API docs      http://$HTTP/docs
  REST          curl -s http://$HTTP/v1/classify -H 'content-type: application/json' -d '{"texts":["..."],"strategy":"knn"}'
  gRPC          $GRPC (grpcurl -plaintext $GRPC list)
  report        ${REPORT:-(no validation split)}
  evaluate      $BIN eval --data $DATA --split validation --strategy knn,finetuned,cascade,rag,zero-shot --out runs/validation
                ($BIN eval compare RUN_DIR... for an overview across runs)
  stop          scripts/quickstart.sh stop
TXT
