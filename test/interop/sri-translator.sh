#!/usr/bin/env bash
# Interop check with software we did not write: devnet-tp + our pool + the SRI
# translator (translator_sv2 0.6.0) + a tiny Python SV1 CPU miner.
#
# Shows that the translator opens its extended channel on our pool, keeps its
# connection (it drops any upstream that sends a message it does not know)
# and gets shares accepted; blocks found through it move devnet-tp's tip.
#
# Needs: translator_sv2 0.6.0 on PATH, in $SRI_BIN (default
# $HOME/.cache/hashpool/sri/bin, as the other interop scripts) or $TRANSLATOR
#   cargo install translator_sv2 --version 0.6.0 --root $HOME/.cache/hashpool/sri   (~10 min)
# and python3. Not part of .ci/run (too slow to build).
#
# Usage: test/interop/sri-translator.sh [seconds]   (default 60)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

DURATION=${1:-60}
SRI_BIN=${SRI_BIN:-$HOME/.cache/hashpool/sri/bin}
TRANSLATOR=${TRANSLATOR:-$(command -v translator_sv2 || echo "$SRI_BIN/translator_sv2")}
ports 18442 24254 24255
MINT_LINK_PORT=${MINT_LINK_PORT:-24260}
MINT_HTTP_PORT=${MINT_HTTP_PORT:-23338}
LOCKING_KEY=0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798
WORK=$(work_dir interop)

[ -x "$TRANSLATOR" ] || { echo "translator_sv2 not found (set TRANSLATOR=...)"; exit 2; }

ports_free "$TP_PORT" "$POOL_PORT" "$TPROXY_PORT" "$MINT_LINK_PORT" "$MINT_HTTP_PORT"
build devnet-tp pool mint
# ~2^23 hashes per block: a block every few shares of the Python miner
write_devnet_tp_config 0x1e020000
write_pool_config 10
cat >> "$WORK/pool.toml" <<TOML
state_dir = "$WORK/pool-state"

# The ehash flow is on: the translator does not negotiate the extension, so
# it must never see 0xC0/0xC1, while its shares still become quotes.
[mint]
address = "127.0.0.1:$MINT_LINK_PORT"
authority_public_key = "$MINT_PUB"
identity_secret_key = "$POOL_ID_SEC"
stats_interval_secs = 2
TOML

cat > "$WORK/mint.toml" <<TOML
network = "devnet"
http_listen = "127.0.0.1:$MINT_HTTP_PORT"
link_listen = "127.0.0.1:$MINT_LINK_PORT"
authority_public_key = "$MINT_PUB"
authority_secret_key = "$MINT_SEC"
database = "$WORK/mint.sqlite"
mnemonic = "order shock flip tribe strong rigid planet deputy question matter decide little"
unit_bits = 10

[[pools]]
key = "$POOL_ID_PUB"
reward_script = "51"
TOML

cat > "$WORK/tproxy.toml" <<TOML
downstream_address = "127.0.0.1"
downstream_port = $TPROXY_PORT
max_supported_version = 2
min_supported_version = 2
downstream_extranonce2_size = 4
aggregate_channels = true
supported_extensions = []

[downstream_difficulty_config]
min_individual_miner_hashrate = 50_000.0
shares_per_minute = 30.0
enable_vardiff = false
job_keepalive_interval_secs = 60

[[upstreams]]
address = "127.0.0.1"
port = $POOL_PORT
authority_pubkey = "$POOL_PUB"
user_identity = "$LOCKING_KEY.sri-translator"
TOML

echo "== starting the mint, devnet-tp, pool, translator (logs in $WORK)"
start mint "$BIN/mint" --config "$WORK/mint.toml"
wait_for "$WORK/mint.log" "mint serving" 30
start_devnet_tp
start pool "$BIN/pool" --config "$WORK/pool.toml"
wait_for "$WORK/pool.log" "connected to the template provider" 20
wait_for "$WORK/pool.log" "mint link up" 20
start translator "$TRANSLATOR" -c "$WORK/tproxy.toml"; TPROXY_PID=${PIDS[-1]}
wait_for "$WORK/pool.log" "SetupConnection accepted" 30

echo "== mining through the translator for ${DURATION}s"
# The translator opens its upstream channel when the first SV1 miner connects.
sv1_miner "$LOCKING_KEY.cpu0" & MINER_PID=$!
wait_for "$WORK/pool.log" "extended channel opened" 30
MINER_RC=0
wait "$MINER_PID" || MINER_RC=$?
sleep 6 # one more "pool stats" line

echo
echo "== pool: channel opened by the translator"
strip "$WORK/pool.log" | grep -E "SetupConnection accepted|channel opened|RequestExtensions|closing downstream" | head -5
echo "== pool: last stats line"
strip "$WORK/pool.log" | grep "pool stats" | tail -1
echo "== pool: blocks"
strip "$WORK/pool.log" | grep -c "block found" | sed 's/^/blocks found by the pool: /'
echo "== devnet-tp: blocks accepted"
strip "$WORK/devnet-tp.log" | grep "block accepted" | tail -3
echo "== translator: upstream errors, fallbacks or reconnects (none expected)"
strip "$WORK/translator.log" | grep -iE "upstream|fallback|unknown message|unexpected" \
  | grep -iE "error|disconnect|fallback|unknown|unexpected|retry|reconnect" | head -10 || true
echo "== translator: upstream channel"
strip "$WORK/translator.log" | grep -iE "OpenExtendedMiningChannelSuccess|channel.*open|extranonce" | head -3 || true
echo "== translator: answers from our pool"
echo "SubmitShares.Success received: $(strip "$WORK/translator.log" | grep -c 'Received: SubmitSharesSuccess' || true)," \
  "SubmitShares.Error received: $(strip "$WORK/translator.log" | grep -c 'Received: SubmitSharesError' || true)," \
  "SetNewPrevHash received: $(strip "$WORK/translator.log" | grep -c 'Received: SetNewPrevHash' || true)"
echo "== mint: ehash quotes created for the translator's shares (locked to its user_identity key)"
# The mint's audit log holds an entry per quote.
QUOTES=$(python3 -c 'import json, sys, urllib.request
print(json.load(urllib.request.urlopen(sys.argv[1]))["entries"])' \
  "http://127.0.0.1:$MINT_HTTP_PORT/v1/ehash/audit" 2>/dev/null || echo 0)
echo "quotes created: $QUOTES"
echo "== SV1 miner"
grep -E "subscribed|authorized|summary" "$WORK/miner.log"
echo

ACCEPTED=$(strip "$WORK/pool.log" | grep "pool stats" | tail -1 | sed -E 's/.*shares_accepted=([0-9]+).*/\1/')
CLOSED=$(strip "$WORK/pool.log" | grep -c "closing downstream connection\|downstream disconnected" || true)
ALIVE=yes; kill -0 "$TPROXY_PID" 2>/dev/null || ALIVE=no
echo "RESULT: pool accepted ${ACCEPTED:-0} shares from the translator; mint quotes: $QUOTES; translator connections closed: $CLOSED; translator still running: $ALIVE"
if [ "${ACCEPTED:-0}" -gt 0 ] && [ "$QUOTES" -gt 0 ] && [ "$CLOSED" -eq 0 ] && [ "$ALIVE" = yes ] && [ "$MINER_RC" -eq 0 ]; then
  echo "INTEROP OK"
else
  echo "INTEROP FAILED (logs in $WORK)"; exit 1
fi
