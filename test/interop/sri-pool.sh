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

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DURATION=${1:-30}
SRI_POOL=${SRI_POOL:-$(command -v pool_sv2 || echo /work/sri-bin/bin/pool_sv2)}
TP_PORT=${TP_PORT:-18462}
POOL_PORT=${POOL_PORT:-44274}
TPROXY_PORT=${TPROXY_PORT:-44275}
WORK=$(mktemp -d /tmp/hashpool-sri-pool.XXXXXX)
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

[ -x "$SRI_POOL" ] || { echo "pool_sv2 not found (set SRI_POOL=...)"; exit 2; }

echo "== building devnet-tp and translator"
(cd "$ROOT" && cargo build -q -p devnet-tp -p translator)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug

wait_for() { # file pattern seconds
  for _ in $(seq 1 $(( $3 * 10 ))); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1"; tail -20 "$1"; exit 1
}

# DEVNET ONLY keys (config/*.toml).
POOL_PUB=9cGDAZn9tTT7kjuAuu8KGgeG4N4TB1tDK1vgq9rte85NgN3Q1GS
POOL_SEC=68P61KGyRfXaGyFMTJM5VDWzL2oAJonTveBmYhNESX6BarASm
TP_PUB=9bdyeVkC5fwmkbE4kjccrPTFc5A3KkbEefiVna1Y1QqtG1BThwg
TP_SEC=Yjp4a7Gdp4rn14jbVLzcJQp3wtpBqLDLdoodFYn8xQSiWQCBz

cat > "$WORK/devnet-tp.toml" <<TOML
listen_address = "127.0.0.1:$TP_PORT"
authority_public_key = "$TP_PUB"
authority_secret_key = "$TP_SEC"
state_dir = "$WORK/tp-state"
nbits = 0x1d200000
TOML

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

sed -e "s|^listen_address = .*|listen_address = \"127.0.0.1:$TPROXY_PORT\"|" \
    -e "s|^data_dir = .*|data_dir = \"$WORK/translator\"|" \
    -e "s|^nominal_hashrate = .*|nominal_hashrate = 50000.0|" \
    -e "s|^address = .*|address = \"127.0.0.1:$POOL_PORT\"|" \
    "$ROOT/config/translator.toml" > "$WORK/translator.toml"

echo "== starting devnet-tp, SRI pool, translator (logs in $WORK)"
"$BIN/devnet-tp" --config "$WORK/devnet-tp.toml" > "$WORK/devnet-tp.log" 2>&1 & PIDS+=($!)
wait_for "$WORK/devnet-tp.log" "listening" 20
"$SRI_POOL" -c "$WORK/sri-pool.toml" > "$WORK/sri-pool.log" 2>&1 & POOL_PID=$!; PIDS+=($POOL_PID)
sleep 3
"$BIN/translator" --config "$WORK/translator.toml" > "$WORK/translator.log" 2>&1 & TPROXY_PID=$!; PIDS+=($TPROXY_PID)
wait_for "$WORK/translator.log" "connected to the pool" 30

echo "== mining through the translator for ${DURATION}s"
python3 "$ROOT/test/interop/sv1_miner.py" 127.0.0.1 "$TPROXY_PORT" "cpu0" "$DURATION" > "$WORK/miner.log" 2>&1 || true

strip() { sed 's/\x1b\[[0-9;]*m//g' "$1"; }
echo "== translator"
strip "$WORK/translator.log" | grep -E "connected to the pool|channel opened|WARN|ERROR" | grep -v "cannot fetch quote\|wallet recovery" | head -10
echo "== SRI pool: errors (none expected)"
strip "$WORK/sri-pool.log" | grep -iE "error|warn" | head -10 || true
echo "== SV1 miner"
grep -E "subscribed|authorized|rejected|summary" "$WORK/miner.log" | head -8

ACCEPTED=$(grep -c "share accepted" "$WORK/miner.log" || true)
REJECTED=$(grep -c "share rejected" "$WORK/miner.log" || true)
LOST=$(strip "$WORK/translator.log" | grep -c "pool connection down" || true)
ALIVE=yes; kill -0 "$TPROXY_PID" 2>/dev/null || ALIVE=no
POOL_ALIVE=yes; kill -0 "$POOL_PID" 2>/dev/null || POOL_ALIVE=no
echo "RESULT: shares accepted by the SRI pool: $ACCEPTED, rejected: $REJECTED; pool connections lost: $LOST; translator running: $ALIVE; SRI pool running: $POOL_ALIVE"
if [ "$ACCEPTED" -gt 0 ] && [ "$REJECTED" -eq 0 ] && [ "$LOST" -eq 0 ] && [ "$ALIVE" = yes ] && [ "$POOL_ALIVE" = yes ]; then
  echo "INTEROP OK"
else
  echo "INTEROP FAILED (logs in $WORK)"; exit 1
fi
