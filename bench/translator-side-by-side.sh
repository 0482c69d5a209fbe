#!/usr/bin/env bash
# Side by side: SRI's translator_sv2 0.6.0 and our translator, each its own
# release process in front of the same pool, mint and devnet-tp, loaded in
# turn by the same SV1 load generator (test/benches/translator_side_by_side.rs).
# Prints each translator's accepted shares/s, CPU and RSS, and ours/SRI.
#
# SRI's translator is installed once into $SRI_ROOT (default
# ~/.cache/hashpool/sri). Not part of .ci/run.
#
# Then each translator's RSS per idle SV1 miner, at [idle] miners.
#
#   bench/translator-side-by-side.sh [miners=20] [shares/s per miner=10] [seconds=20] [H/s per miner=10] [idle=2000]
set -euo pipefail
cd "$(dirname "$0")/.."
SRI_ROOT="${SRI_ROOT:-$HOME/.cache/hashpool/sri}"
if [ ! -x "$SRI_ROOT/bin/translator_sv2" ]; then
  echo "building SRI translator_sv2 0.6.0 into $SRI_ROOT (once; several minutes)"
  cargo install --locked --root "$SRI_ROOT" translator_sv2 --version 0.6.0
fi
export TRANSLATOR_SV2="$SRI_ROOT/bin/translator_sv2"
# Two sockets per idle miner in this process, and as many in each translator.
ulimit -n 65536 2> /dev/null || ulimit -n "$(ulimit -Hn)"
exec cargo bench --locked -p hashpool-tests --bench translator_side_by_side -- "${1:-20}" "${2:-10}" "${3:-20}" "${4:-10}" "${5:-2000}"
