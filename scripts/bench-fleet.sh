#!/usr/bin/env bash
# Elastic scale-out and faults (issue 9), on the VQA variant that scripts/demo.sh made (run it first):
# fleet-harness copies .fleet/azurite, starts its own Azurite and GPU-tagged silo processes on 127.0.0.1,
# and drives closed-loop load through the SDK while a second silo joins, the first is SIGKILLed, Azurite
# restarts and a third silo joins. Output: .fleet/harness/report.md, timeline.csv, timeline.svg.
# Options go to the harness (see --help), e.g. scripts/bench-fleet.sh --phase 30 --callers 96.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
[[ -d .fleet/azurite && -d .fleet/data/images/test ]] || { echo "run scripts/demo.sh first (it makes the variant this measures)"; exit 1; }
dotnet build EfficientVlm.Fleet.sln -c Release -nologo -clp:ErrorsOnly
# the demo's Azurite must not write to the folder while the harness copies it
if [[ -f .fleet/azurite/azurite.pid ]] && kill -0 "$(cat .fleet/azurite/azurite.pid)" 2>/dev/null; then
  echo "the demo's Azurite is running: stop it first (AZURITE_DIR=.fleet/azurite scripts/azurite.sh stop)"; exit 1
fi
exec dotnet bench/EfficientVlm.Harness/bin/Release/net10.0/fleet-harness.dll "$@"
