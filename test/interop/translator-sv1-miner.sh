#!/usr/bin/env bash
# Our translator with an SV1 miner we did not write for it: devnet-tp + our
# pool + our translator (binaries, real config files) + sv1_miner.py, the
# Python SV1 CPU miner also used against the SRI translator.
#
# Shows that a pipelining SV1 client (subscribe and authorize sent at once)
# mines through the translator and gets its shares accepted by the pool.
#
# Usage: test/interop/translator-sv1-miner.sh [seconds]   (default 20)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

DURATION=${1:-20}
ports 18452 24264 24265
WORK=$(work_dir translator-interop)

ports_free "$TP_PORT" "$POOL_PORT" "$TPROXY_PORT"
build devnet-tp pool translator
write_devnet_tp_config 0x1e020000
write_pool_config 20
write_translator_config

echo "== starting devnet-tp, pool, translator (logs in $WORK)"
start_devnet_tp
start pool "$BIN/pool" --config "$WORK/pool.toml"
wait_for "$WORK/pool.log" "connected to the template provider" 20
start translator "$BIN/translator" --config "$WORK/translator.toml"; TPROXY_PID=${PIDS[-1]}
wait_for "$WORK/translator.log" "connected to the pool" 20

echo "== mining through the translator for ${DURATION}s"
sv1_miner "cpu0" || true
sleep 6 # one more "pool stats" line

echo "== translator"
strip "$WORK/translator.log" | grep -E "listening|connected to the pool|channel opened|WARN|ERROR" | head -8
echo "== pool: last stats line"
strip "$WORK/pool.log" | grep "pool stats" | tail -1
miner_summary

ALIVE=yes; kill -0 "$TPROXY_PID" 2>/dev/null || ALIVE=no
echo "RESULT: miner shares accepted: $ACCEPTED, rejected: $REJECTED; translator still running: $ALIVE"
if [ "$ACCEPTED" -gt 0 ] && [ "$ALIVE" = yes ]; then
  echo "INTEROP OK"
else
  echo "INTEROP FAILED (logs in $WORK)"; exit 1
fi
