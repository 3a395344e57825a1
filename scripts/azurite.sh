#!/usr/bin/env bash
# Starts, stops or checks the development Azure Storage emulator (Azurite, pinned in package.json).
#   scripts/azurite.sh start    start on 127.0.0.1 (blob/queue/table ports below) and wait until it answers
#   scripts/azurite.sh stop     stop the instance this script started (by its PID file)
#   scripts/azurite.sh status   say whether it answers
# Settings (environment): AZURITE_DIR (data folder, default .azurite), AZURITE_BLOB_PORT (10000),
# AZURITE_QUEUE_PORT (10001), AZURITE_TABLE_PORT (10002).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${AZURITE_DIR:-$root/.azurite}"
blob="${AZURITE_BLOB_PORT:-10000}"; queue="${AZURITE_QUEUE_PORT:-10001}"; table="${AZURITE_TABLE_PORT:-10002}"
pidfile="$dir/azurite.pid"

answers() { # an unauthenticated request gets an HTTP status (403/400) once the port serves
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$1/" || true)
  [[ "$code" != "000" && -n "$code" ]]
}

case "${1:-}" in
  start)
    if answers "$blob" && answers "$table"; then echo "azurite: already answering on 127.0.0.1:$blob/$queue/$table"; exit 0; fi
    if [[ ! -x "$root/node_modules/.bin/azurite" ]]; then
      echo "azurite: installing the pinned version (npm ci)"; (cd "$root" && npm ci --no-audit --no-fund --loglevel=error)
    fi
    mkdir -p "$dir"
    nohup "$root/node_modules/.bin/azurite" --silent --location "$dir" --skipApiVersionCheck --loose \
      --blobHost 127.0.0.1 --blobPort "$blob" --queueHost 127.0.0.1 --queuePort "$queue" \
      --tableHost 127.0.0.1 --tablePort "$table" > "$dir/azurite.log" 2>&1 &
    echo $! > "$pidfile"
    for _ in $(seq 1 150); do
      if answers "$blob" && answers "$queue" && answers "$table"; then
        echo "azurite: ready on 127.0.0.1:$blob/$queue/$table (pid $(cat "$pidfile"), data $dir)"; exit 0
      fi
      if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then echo "azurite: exited; see $dir/azurite.log" >&2; cat "$dir/azurite.log" >&2; exit 1; fi
      sleep 0.2
    done
    echo "azurite: did not answer within 30 s; see $dir/azurite.log" >&2; exit 1 ;;
  stop)
    if [[ -f "$pidfile" ]]; then
      pid="$(cat "$pidfile")"
      if kill "$pid" 2>/dev/null; then
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        echo "azurite: stopped (pid $pid)"
      fi
      rm -f "$pidfile"
    else
      echo "azurite: no PID file in $dir; nothing started by this script"
    fi ;;
  status)
    if answers "$blob" && answers "$table"; then echo "azurite: answering on 127.0.0.1:$blob/$queue/$table"; else echo "azurite: not answering"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
