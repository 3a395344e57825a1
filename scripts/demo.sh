#!/usr/bin/env bash
# The main job: starts Azurite and one silo on this machine, drives the fleet through the
# command-line tool (built on the client SDK), prints what it did, and stops what it started.
# Everything it writes goes under .fleet/ (logs, Azurite data).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
state="$root/.fleet"; mkdir -p "$state"
started_azurite=0; silo_pid=""
cleanup() {
  if [[ -n "$silo_pid" ]] && kill -0 "$silo_pid" 2>/dev/null; then kill "$silo_pid"; wait "$silo_pid" 2>/dev/null || true; fi
  if [[ $started_azurite == 1 ]]; then AZURITE_DIR="$state/azurite" scripts/azurite.sh stop >/dev/null; fi
}
trap cleanup EXIT
t0=$(date +%s)

echo "== build (Release)"
[[ -x node_modules/.bin/azurite ]] || npm ci --no-audit --no-fund --loglevel=error
dotnet build EfficientVlm.Fleet.sln -c Release -nologo -clp:ErrorsOnly

echo "== storage"
if AZURITE_DIR="$state/azurite" scripts/azurite.sh status >/dev/null 2>&1; then
  echo "using the Azurite already answering on 127.0.0.1:10000-10002"
else
  AZURITE_DIR="$state/azurite" scripts/azurite.sh start; started_azurite=1
fi

echo "== silo"
http_port="${FLEET_DEMO_HTTP_PORT:-8080}"
Urls="http://127.0.0.1:$http_port" Fleet__ClusterId="efficientvlm-demo" Fleet__Silo__FastFailureDetection=true \
  dotnet silo/EfficientVlm.Silo/bin/Release/net10.0/EfficientVlm.Silo.dll > "$state/silo.log" 2>&1 &
silo_pid=$!
for _ in $(seq 1 240); do
  if curl -sf "http://127.0.0.1:$http_port/ready" > /dev/null; then break; fi
  kill -0 "$silo_pid" 2>/dev/null || { echo "silo exited; log:"; cat "$state/silo.log"; exit 1; }
  sleep 0.5
done
curl -sf "http://127.0.0.1:$http_port/ready" > /dev/null || { echo "silo not ready after 120 s; log:"; tail -50 "$state/silo.log"; exit 1; }
echo "silo ready (pid $silo_pid, http $http_port, log .fleet/silo.log)"

echo "== client"
fleet() { Fleet__ClusterId="efficientvlm-demo" dotnet client/EfficientVlm.Cli/bin/Release/net10.0/fleet.dll "$@"; }
fleet probe
fleet models register --id compact-demo --preset demo
fleet models list

echo "== done in $(( $(date +%s) - t0 )) s"
