#!/usr/bin/env bash
# Starts or stops a Tansu Kafka broker (in-memory storage) on a free loopback port, for manual runs and CI.
#   scripts/tansu.sh start [STATE_DIR]   -> prints 127.0.0.1:PORT once the broker accepts connections
#   scripts/tansu.sh stop  [STATE_DIR]   -> stops it (also when it is already gone); always exits 0
#   scripts/tansu.sh run -- CMD...       -> starts, runs CMD with TEMPONET_BROKERS set, always stops, exits with CMD's status
# The binary comes from $TEMPONET_TANSU, else .tools/tansu (installed by scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
TANSU=${TEMPONET_TANSU:-$(pwd)/.tools/tansu}
cmd=${1:-}
STATE=${2:-${TMPDIR:-/tmp}/temponet-tansu}
[ "$cmd" = run ] && STATE=$(mktemp -d)

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start() {
  [ -x "$TANSU" ] || { echo "tansu.sh: no broker binary at $TANSU (run scripts/setup.sh)" >&2; exit 1; }
  mkdir -p "$STATE"
  if [ -f "$STATE/pid" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
    echo "tansu.sh: already running (pid $(cat "$STATE/pid")) at $(cat "$STATE/brokers")" >&2
    cat "$STATE/brokers"; return 0
  fi
  local port url
  port=$(free_port)
  url="tcp://127.0.0.1:$port"
  "$TANSU" broker --listener-url "$url" --advertised-listener-url "$url" --storage-engine memory://tansu/ \
    >"$STATE/log" 2>&1 &
  echo $! >"$STATE/pid"
  echo "127.0.0.1:$port" >"$STATE/brokers"
  for _ in $(seq 1 200); do
    if ! kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
      echo "tansu.sh: broker exited; log:" >&2; cat "$STATE/log" >&2; rm -f "$STATE/pid"; exit 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      sleep 0.3   # the port opens ~0.15 s before the broker serves requests
      echo "127.0.0.1:$port"; return 0
    fi
    sleep 0.05
  done
  echo "tansu.sh: broker not ready after 10 s" >&2; stop; exit 1
}

stop() {
  if [ -f "$STATE/pid" ]; then
    local pid; pid=$(cat "$STATE/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$STATE/pid" "$STATE/brokers"
  fi
  return 0
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  run)
    shift; [ "${1:-}" = "--" ] && shift
    TEMPONET_BROKERS=$(start) ; export TEMPONET_BROKERS
    trap 'stop; rm -rf "$STATE"' EXIT
    "$@" ;;
  *) echo "usage: $0 start|stop [STATE_DIR] | run -- CMD..." >&2; exit 2 ;;
esac
