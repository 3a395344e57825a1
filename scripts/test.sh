#!/usr/bin/env bash
# The test command: installs the pinned Azurite if missing, builds, and runs every test.
# Tests that need storage start their own Azurite on free ports (or use one already running).
# Extra arguments go to `dotnet test` (e.g. --filter "FullyQualifiedName~Executor").
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [[ ! -x node_modules/.bin/azurite ]]; then
  echo "test: installing the pinned Azurite (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi
dotnet build EfficientVlm.Fleet.sln -c Debug -nologo -clp:ErrorsOnly
dotnet test EfficientVlm.Fleet.sln -c Debug --no-build -nologo "$@"
