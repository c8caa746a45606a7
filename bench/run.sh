#!/usr/bin/env bash
# Benchmarks (issue 7). Usage: bench/run.sh embed|retriever|retriever-codes|retriever-embedded|stack|overload|crash|faults|all [options]
#   embed:     our embedder and sentence-transformers/PyTorch on the same 1,000
#              clauses, same threads, in one run; prints both and their ratio
#              (options go to bench/embed_vs_pytorch.py).
#   retriever: pgvector at 1M vectors searched through its HNSW index
#              (--pg-search hnsw): bulk load, HNSW build, recall@10 and
#              latency against ef_search, plot (options go to `lextral bench
#              retriever`, e.g. --vectors 100000). Uses its own PostgreSQL
#              instance `bench` (shared_buffers 4 GB) unless
#              LEXTRAL_BENCH_DATABASE_URL names a server. ~25 min, ~8 GB disk.
#   retriever-codes: the same pgvector table searched through the
#              retriever's in-memory mirror (--pg-search codes): load, mirror
#              load, recall and latency against ef_search; no index build.
#              ~5 min.
#   retriever-embedded: the same 1M vectors in the embedded store (no
#              server; one-bit codes + exact re-scoring): load, reopen,
#              recall and latency against ef_search. ~3 min, 1.6 GB disk,
#              ~5 GB memory.
#   overload:  256 REST clients on knn against `serve all` for DURATION
#              seconds (default 300): answers per status code, accepted and
#              refused p99, resident memory before and after (issue 19).
#   crash:     CYCLES (default 25) SIGKILLs of `serve all` mid-ingest per
#              store; every acknowledged batch whole after each restart.
#   faults:    the services as separate processes under a kNN load; SIGKILL
#              the embedder, the retriever and PostgreSQL in turn: how fast
#              callers are refused, readiness flips, answers resume (release
#              build of the test clients/cli/tests/faults.rs).
#   stack:     the services as separate processes (embedded store, train split
#              indexed, the fine-tuned model of the quick start), then REST
#              kNN at one client (`lextral bench stack`) and knn/finetuned over
#              REST and gRPC at 1/8/32 clients with each service's memory
#              (`lextral bench load`; options go to it).
#   all:       all of them in turn, default options.
# Results go to $LEXTRAL_BENCH_OUT (default ~/.cache/lextral/bench). Builds
# lextral (release), caches the model and a PyTorch venv in ~/.cache/lextral
# (the venv is ~6 GB: PyPI's torch wheel brings CUDA libraries even though
# only the CPU is used).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lextral/target}"
DATA="${LEXTRAL_DATA:-../shared/data/ledgar}"
HOME_DIR="${LEXTRAL_HOME:-$HOME/.cache/lextral}"
OUT="${LEXTRAL_BENCH_OUT:-$HOME_DIR/bench}"
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

# With LEXTRAL_BENCH_DOCS=1 a retriever benchmark's plot replaces the book's
# picture (docs/src/images/retriever-1m-<name>-recall-vs-ef-search.png).
publish_plot() {
  local name="$1"
  if [ "${LEXTRAL_BENCH_DOCS:-0}" = 1 ]; then
    cp "$OUT/$name/recall_vs_ef_search.png" \
      "docs/src/images/retriever-1m-$name-recall-vs-ef-search.png"
    echo "bench: docs/src/images/retriever-1m-$name-recall-vs-ef-search.png replaced"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

run_embed() {
  local lextral model python
  lextral="$(build)"
  model="$(scripts/setup-model.sh | tail -1)"
  python="$(bench_venv)"
  "$python" bench/embed_vs_pytorch.py --data "$DATA/unlabeled.jsonl" --model "$model" \
    --lextral "$lextral" "$@"
}

run_retriever() {
  local out="$1" lextral url
  shift
  lextral="$(build)"
  LEXTRAL_EMBED_MODEL="$(scripts/setup-model.sh | tail -1)"
  export LEXTRAL_EMBED_MODEL
  url="${LEXTRAL_BENCH_DATABASE_URL:-}"
  if [ -z "$url" ]; then
    # Settings a server for 1M vectors would get; they apply when the
    # instance starts (stop it first to change them).
    url="$(LEXTRAL_DEV_DB_INSTANCE=bench LEXTRAL_DEV_DB_OPTS="-c shared_buffers=4GB \
      -c effective_cache_size=16GB -c max_wal_size=8GB -c maintenance_work_mem=4GB" \
      scripts/dev-db.sh start | tail -1)"
  fi
  "$lextral" bench retriever --database-url "$url" --base "$DATA/unlabeled.jsonl" \
    --query-data "$DATA/validation.jsonl" --query-data "$DATA/train.jsonl" \
    --out "$OUT/$out" "$@"
  echo "bench: report and plot in $OUT/$out"
  publish_plot "$out"
}

run_retriever_embedded() {
  local lextral
  lextral="$(build)"
  LEXTRAL_EMBED_MODEL="$(scripts/setup-model.sh | tail -1)"
  export LEXTRAL_EMBED_MODEL
  "$lextral" bench retriever --store embedded --base "$DATA/unlabeled.jsonl" \
    --query-data "$DATA/validation.jsonl" --query-data "$DATA/train.jsonl" \
    --out "$OUT/retriever-embedded" "$@"
  echo "bench: report and plot in $OUT/retriever-embedded"
  publish_plot retriever-embedded
}

# Global: the EXIT trap runs after run_stack has returned.
STACK_PIDS=()
STACK_TMP=""
stop_services() {
  for pid in "${STACK_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${STACK_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -n "$STACK_TMP" ] && rm -rf "$STACK_TMP"
  STACK_PIDS=()
  STACK_TMP=""
}

run_stack() {
  local lextral model tmp
  lextral="$(build)"
  LEXTRAL_EMBED_MODEL="$(scripts/setup-model.sh | tail -1)"
  export LEXTRAL_EMBED_MODEL
  model="${LEXTRAL_FINETUNED_MODEL:-$HOME_DIR/models/ledgar-classifier}"
  if [ ! -f "$model/manifest.json" ]; then
    echo "bench: training the default classifier (once) -> $model" >&2
    "$lextral" train --data "$DATA" --out "$model" >&2
  fi
  tmp="$(mktemp -d)"
  STACK_TMP="$tmp"
  trap stop_services EXIT
  declare -A grpc metrics
  for service in embedder retriever finetuned orchestrator; do
    grpc[$service]="127.0.0.1:$(free_port)"
    metrics[$service]="127.0.0.1:$(free_port)"
  done
  local http="127.0.0.1:$(free_port)"
  # Each service in its own process, as on Kubernetes, so each reports its
  # own memory; the store is the embedded one unless a database is named.
  local store=(--store embedded --store-path "$tmp/store")
  [ -n "${LEXTRAL_DATABASE_URL:-}" ] && store=(--store postgres)
  "$lextral" serve embedder --grpc "${grpc[embedder]}" --metrics "${metrics[embedder]}" \
    >"$tmp/embedder.log" 2>&1 &
  STACK_PIDS+=($!)
  "$lextral" serve retriever --grpc "${grpc[retriever]}" --metrics "${metrics[retriever]}" \
    "${store[@]}" >"$tmp/retriever.log" 2>&1 &
  STACK_PIDS+=($!)
  "$lextral" serve finetuned-classifier --grpc "${grpc[finetuned]}" \
    --metrics "${metrics[finetuned]}" --finetuned-model "$model" \
    --finetuned-embedder-url "http://${grpc[embedder]}" >"$tmp/finetuned.log" 2>&1 &
  STACK_PIDS+=($!)
  "$lextral" serve orchestrator --grpc "${grpc[orchestrator]}" --http "$http" \
    --metrics "${metrics[orchestrator]}" --embedder-url "http://${grpc[embedder]}" \
    --retriever-url "http://${grpc[retriever]}" --finetuned-url "http://${grpc[finetuned]}" \
    --prompt-url "http://127.0.0.1:$(free_port)" >"$tmp/orchestrator.log" 2>&1 &
  STACK_PIDS+=($!)
  for _ in $(seq 1 240); do
    curl -fs "http://$http/readyz" >/dev/null 2>&1 && break
    sleep 0.5
  done
  if ! curl -fs "http://$http/readyz" >/dev/null; then
    echo "bench: the services did not become ready; logs:" >&2
    tail -n 5 "$tmp"/*.log >&2
    exit 1
  fi
  echo "bench: indexing the train split" >&2
  "$lextral" index --data "$DATA" --splits train --server "http://${grpc[orchestrator]}" >&2
  mkdir -p "$OUT"
  echo "== one client, REST kNN (lextral bench stack)"
  "$lextral" bench stack --data "$DATA/validation.jsonl" --queries 200 \
    --server "http://${grpc[orchestrator]}" --http "http://$http" \
    --embedder "http://${grpc[embedder]}" --retriever "http://${grpc[retriever]}"
  echo "== concurrent clients (lextral bench load)"
  "$lextral" bench load --data "$DATA/validation.jsonl" \
    --server "http://${grpc[orchestrator]}" --http "http://$http" \
    --service-metrics "embedder=http://${metrics[embedder]}" \
    --service-metrics "retriever=http://${metrics[retriever]}" \
    --service-metrics "finetuned-classifier=http://${metrics[finetuned]}" \
    --service-metrics "orchestrator=http://${metrics[orchestrator]}" \
    --out "$OUT/load.json" "$@"
  echo "bench: report in $OUT/load.json"
  stop_services
}

# 256 REST clients on kNN against `serve all` (default 300 s, DURATION=…):
# answers per status, accepted p99, refused p99, and the process's resident
# memory before and after the soak.
run_overload() {
  local lextral tmp grpc http metrics rss_before rss_after
  lextral="$(build)"
  LEXTRAL_EMBED_MODEL="$(scripts/setup-model.sh | tail -1)"
  export LEXTRAL_EMBED_MODEL
  tmp="$(mktemp -d)"
  STACK_TMP="$tmp"
  trap stop_services EXIT
  grpc="127.0.0.1:$(free_port)"
  http="127.0.0.1:$(free_port)"
  metrics="127.0.0.1:$(free_port)"
  "$lextral" serve all --grpc "$grpc" --http "$http" --metrics "$metrics" \
    --store embedded --store-path "$tmp/store" >"$tmp/all.log" 2>&1 &
  STACK_PIDS+=($!)
  for _ in $(seq 1 240); do
    curl -fs "http://$http/readyz" >/dev/null 2>&1 && break
    sleep 0.5
  done
  curl -fs "http://$http/readyz" >/dev/null || { tail -n 20 "$tmp/all.log" >&2; exit 1; }
  "$lextral" index --data "$DATA" --splits train --server "http://$grpc" >&2
  rss() { curl -fs "http://$metrics/metrics" | awk '$1 == "process_resident_memory_bytes" { print $2 }'; }
  # A short untimed run first, so the soak starts from warm allocations.
  "$lextral" bench load --data "$DATA/validation.jsonl" --strategies knn --protocols rest \
    --concurrency 256 --duration 10 --warmup 0 --server "http://$grpc" --http "http://$http" >/dev/null
  rss_before="$(rss)"
  mkdir -p "$OUT"
  echo "== overload: 256 REST clients on knn for ${DURATION:-300} s (lextral bench load)"
  "$lextral" bench load --data "$DATA/validation.jsonl" --strategies knn --protocols rest \
    --concurrency 256 --duration "${DURATION:-300}" --warmup 0 --timeout-s 30 \
    --server "http://$grpc" --http "http://$http" --service-metrics "all=http://$metrics" \
    --out "$OUT/overload.json" "$@"
  rss_after="$(rss)"
  awk -v a="$rss_before" -v b="$rss_after" 'BEGIN { printf "resident memory: %.0f MiB before, %.0f MiB after (ratio %.3f)\n", a/1048576, b/1048576, b/a }'
  echo "bench: report in $OUT/overload.json"
  stop_services
}

# The crash loop at length: CYCLES (default 25) SIGKILLs of `serve all`
# mid-ingest per store (embedded and PostgreSQL), checking after each
# restart that every acknowledged batch is whole and none is partial.
run_crash() {
  LEXTRAL_EMBED_MODEL="$(scripts/setup-model.sh | tail -1)"
  LEXTRAL_TEST_DATABASE_URL="${LEXTRAL_TEST_DATABASE_URL:-$(scripts/dev-db.sh start | tail -n 1)}"
  export LEXTRAL_EMBED_MODEL LEXTRAL_TEST_DATABASE_URL
  LEXTRAL_CRASH_CYCLES="${CYCLES:-25}" \
    cargo test --release -p lextral-cli --test crash -- --nocapture "$@"
}

# The fault test on the release build, with its figures printed.
run_faults() {
  LEXTRAL_EMBED_MODEL="$(scripts/setup-model.sh | tail -1)"
  export LEXTRAL_EMBED_MODEL
  cargo test --release -p lextral-cli --test faults -- --nocapture "$@"
}

case "$what" in
  embed) run_embed "$@" ;;
  retriever) run_retriever retriever --pg-search hnsw "$@" ;;
  retriever-codes) run_retriever retriever-codes --pg-search codes "$@" ;;
  retriever-embedded) run_retriever_embedded "$@" ;;
  stack) run_stack "$@" ;;
  overload) run_overload "$@" ;;
  crash) run_crash "$@" ;;
  faults) run_faults "$@" ;;
  all)
    run_embed
    run_retriever retriever --pg-search hnsw
    run_retriever retriever-codes --pg-search codes
    run_retriever_embedded
    run_stack
    ;;
  *)
    echo "usage: bench/run.sh embed|retriever|retriever-codes|retriever-embedded|stack|overload|crash|faults|all [options]" >&2
    exit 2
    ;;
esac
