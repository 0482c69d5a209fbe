#!/usr/bin/env bash
# Interop check with the SRI pool (pool_sv2 0.7.0): devnet-tp + the SRI pool +
# our translator + sv1_miner.py (the Python SV1 CPU miner).
#
# The SRI pool does not grant the ehash extension: the translator must mine
# without ehash, without errors (no closed connections, no refused shares).
#
# Needs: pool_sv2 0.7.0 on PATH or in $SRI_POOL
#   apt-get install capnproto libcapnp-dev
#   cargo install pool_sv2 --version 0.7.0 --root /work/sri-bin   (~15 min)
# and python3. Not part of .ci/run (too slow to build).
#
# Usage: test/interop/sri-pool.sh [seconds]   (default 30)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

DURATION=${1:-30}
SRI_POOL=${SRI_POOL:-$(command -v pool_sv2 || echo /work/sri-bin/bin/pool_sv2)}
ports 18462 24274 24275
WORK=$(work_dir sri-pool)

[ -x "$SRI_POOL" ] || { echo "pool_sv2 not found (set SRI_POOL=...)"; exit 2; }

ports_free "$TP_PORT" "$POOL_PORT" "$TPROXY_PORT"
build devnet-tp translator
write_devnet_tp_config 0x1d200000

cat > "$WORK/sri-pool.toml" <<TOML
listen_address = "127.0.0.1:$POOL_PORT"
authority_public_key = "$POOL_PUB"
authority_secret_key = "$POOL_SEC"
cert_validity_sec = 3600
coinbase_reward_script = "raw(51)"
pool_signature = "sri-interop"
shares_per_minute = 6.0
# acknowledge every share (the translator answers the miner when the pool does)
share_batch_size = 1

[template_provider_type.Sv2Tp]
address = "127.0.0.1:$TP_PORT"
public_key = "$TP_PUB"
TOML

write_translator_config

echo "== starting devnet-tp, SRI pool, translator (logs in $WORK)"
start_devnet_tp
start sri-pool "$SRI_POOL" -c "$WORK/sri-pool.toml"; POOL_PID=${PIDS[-1]}
sleep 3
start translator "$BIN/translator" --config "$WORK/translator.toml"; TPROXY_PID=${PIDS[-1]}
wait_for "$WORK/translator.log" "connected to the pool" 30

echo "== mining through the translator for ${DURATION}s"
sv1_miner "cpu0" || true

echo "== translator"
strip "$WORK/translator.log" | grep -E "connected to the pool|channel opened|WARN|ERROR" | grep -v "cannot fetch quote\|wallet recovery" | head -10
echo "== SRI pool: errors (none expected)"
strip "$WORK/sri-pool.log" | grep -iE "error|warn" | head -10 || true
miner_summary

LOST=$(strip "$WORK/translator.log" | grep -c "pool connection down" || true)
ALIVE=yes; kill -0 "$TPROXY_PID" 2>/dev/null || ALIVE=no
POOL_ALIVE=yes; kill -0 "$POOL_PID" 2>/dev/null || POOL_ALIVE=no
echo "RESULT: shares accepted by the SRI pool: $ACCEPTED, rejected: $REJECTED; pool connections lost: $LOST; translator running: $ALIVE; SRI pool running: $POOL_ALIVE"
if [ "$ACCEPTED" -gt 0 ] && [ "$REJECTED" -eq 0 ] && [ "$LOST" -eq 0 ] && [ "$ALIVE" = yes ] && [ "$POOL_ALIVE" = yes ]; then
  echo "INTEROP OK"
else
  echo "INTEROP FAILED (logs in $WORK)"; exit 1
fi
