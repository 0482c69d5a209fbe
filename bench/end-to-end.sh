#!/usr/bin/env bash
# End-to-end benchmark: the load generator's real shares through translator
# -> pool -> mint, each role its own process (release build). Prints
# accepted shares/s, share-to-minted-ehash latency p50/p99, and CPU and RSS
# per role.
#
#   bench/end-to-end.sh [miners=20] [shares/s per miner=5] [seconds=30] [hashes per share=20000]
#   JD=1 bench/end-to-end.sh ...   through jd-client (declared jobs)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec cargo bench --locked -p hashpool-tests --bench end_to_end -- "${1:-20}" "${2:-5}" "${3:-30}" "${4:-20000}"
