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

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DURATION=${1:-20}
TP_PORT=${TP_PORT:-18452}
POOL_PORT=${POOL_PORT:-44264}
TPROXY_PORT=${TPROXY_PORT:-44265}
WORK=$(mktemp -d /tmp/hashpool-translator-interop.XXXXXX)
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

echo "== building devnet-tp, pool and translator"
(cd "$ROOT" && cargo build -q -p devnet-tp -p pool -p translator)
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
nbits = 0x1e020000
TOML

cat > "$WORK/pool.toml" <<TOML
network = "devnet"
listen_address = "127.0.0.1:$POOL_PORT"
authority_public_key = "$POOL_PUB"
authority_secret_key = "$POOL_SEC"
tp_address = "127.0.0.1:$TP_PORT"
tp_authority_public_key = "$TP_PUB"
coinbase_reward_script = "51"
unit_bits = 20
stats_log_interval_secs = 5
TOML

sed -e "s|^listen_address = .*|listen_address = \"127.0.0.1:$TPROXY_PORT\"|" \
    -e "s|^data_dir = .*|data_dir = \"$WORK/translator\"|" \
    -e "s|^nominal_hashrate = .*|nominal_hashrate = 50000.0|" \
    -e "s|^address = .*|address = \"127.0.0.1:$POOL_PORT\"|" \
    "$ROOT/config/translator.toml" > "$WORK/translator.toml"

echo "== starting devnet-tp, pool, translator (logs in $WORK)"
"$BIN/devnet-tp" --config "$WORK/devnet-tp.toml" > "$WORK/devnet-tp.log" 2>&1 & PIDS+=($!)
wait_for "$WORK/devnet-tp.log" "listening" 20
"$BIN/pool" --config "$WORK/pool.toml" > "$WORK/pool.log" 2>&1 & PIDS+=($!)
wait_for "$WORK/pool.log" "connected to the template provider" 20
"$BIN/translator" --config "$WORK/translator.toml" > "$WORK/translator.log" 2>&1 & TPROXY_PID=$!; PIDS+=($TPROXY_PID)
wait_for "$WORK/translator.log" "connected to the pool" 20

echo "== mining through the translator for ${DURATION}s"
python3 "$ROOT/test/interop/sv1_miner.py" 127.0.0.1 "$TPROXY_PORT" "cpu0" "$DURATION" > "$WORK/miner.log" 2>&1 || true
sleep 6 # one more "pool stats" line

strip() { sed 's/\x1b\[[0-9;]*m//g' "$1"; }
echo "== translator"
strip "$WORK/translator.log" | grep -E "listening|connected to the pool|channel opened|WARN|ERROR" | head -8
echo "== pool: last stats line"
strip "$WORK/pool.log" | grep "pool stats" | tail -1
echo "== SV1 miner"
grep -E "subscribed|authorized|rejected|summary" "$WORK/miner.log" | head -8

ACCEPTED=$(grep -c "share accepted" "$WORK/miner.log" || true)
REJECTED=$(grep -c "share rejected" "$WORK/miner.log" || true)
ALIVE=yes; kill -0 "$TPROXY_PID" 2>/dev/null || ALIVE=no
echo "RESULT: miner shares accepted: $ACCEPTED, rejected: $REJECTED; translator still running: $ALIVE"
if [ "$ACCEPTED" -gt 0 ] && [ "$ALIVE" = yes ]; then
  echo "INTEROP OK"
else
  echo "INTEROP FAILED (logs in $WORK)"; exit 1
fi
