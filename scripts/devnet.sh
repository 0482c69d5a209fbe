#!/usr/bin/env bash
# Runs the whole devnet in one process: template provider, mint, pool,
# translator and a CPU miner hashing into ehash (`hashpool devnet`).
# Installs what it needs first, builds in release (the CPU miner is ~10x
# faster than in debug), then runs until Ctrl-C. Extra arguments go to
# `hashpool devnet` (e.g. --state-dir /tmp/devnet, --ephemeral-ports).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
echo "== building hashpool (release; the first build takes several minutes)"
cargo build --release --locked -p hashpool
exec ./target/release/hashpool devnet "$@"
