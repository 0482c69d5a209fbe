#!/usr/bin/env bash
# Interop check of our job declarator (the pool's [jds]) with the SRI job
# declaration client (jd_client_sv2 0.6.0): devnet-tp with its mempool on +
# our pool with [jds] + the SRI JDC in full-template mode (its templates from
# devnet-tp) + the SRI translator (translator_sv2 0.6.0) on the JDC +
# sv1_miner.py.
#
# The JDC declares devnet-tp's templates, transactions included, at our JDS
# (AllocateMiningJobToken, DeclareMiningJob, ProvideMissingTransactions if
# asked), sets each declared job on its work-selecting channel at our pool
# (SetCustomMiningJob, no key commitment: the channel has no locking key)
# and sends the miner's shares on it; blocks it finds go to devnet-tp
# through its own template distribution connection. Any DeclareMiningJob
# error but stale-chain-tip, or a refused custom job, sends it to its
# fallback (solo mining): there must be none. Nor any stale-chain-tip
# refusal, which it ignores without declaring that tip's job again (see
# README.md).
#
# Needs: jd_client_sv2 0.6.0 and translator_sv2 0.6.0 in $SRI_BIN (default
# $HOME/.cache/hashpool/sri/bin), or JD_CLIENT=..., TRANSLATOR=...
#   cargo install jd_client_sv2 --version 0.6.0 --root $HOME/.cache/hashpool/sri   (~15 min)
#   cargo install translator_sv2 --version 0.6.0 --root $HOME/.cache/hashpool/sri
# and python3. Not part of .ci/run (too slow to build).
#
# Usage: test/interop/sri-jd-client.sh [seconds]   (default 90)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

DURATION=${1:-90}
SRI_BIN=${SRI_BIN:-$HOME/.cache/hashpool/sri/bin}
JD_CLIENT=${JD_CLIENT:-$(command -v jd_client_sv2 || echo "$SRI_BIN/jd_client_sv2")}
TRANSLATOR=${TRANSLATOR:-$(command -v translator_sv2 || echo "$SRI_BIN/translator_sv2")}
ports 18472 24284 24285
JDS_PORT=${JDS_PORT:-24286}
JDC_PORT=${JDC_PORT:-24287}
# The JDC's own Noise keys (SRI's example keys, devnet only).
JDC_PUB=9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72
JDC_SEC=mkDLTBBRxdBv998612qipDYoTK3YUrqLe8uWw7gu3iXbSrn2n
WORK=$(work_dir sri-jd-client)

[ -x "$JD_CLIENT" ] || { echo "jd_client_sv2 not found (set JD_CLIENT=...)"; exit 2; }
[ -x "$TRANSLATOR" ] || { echo "translator_sv2 not found (set TRANSLATOR=...)"; exit 2; }

ports_free "$TP_PORT" "$POOL_PORT" "$TPROXY_PORT" "$JDS_PORT" "$JDC_PORT"
build devnet-tp pool
# ~2^22 hashes a block: one every few seconds of the Python miner, so the
# wallet is funded and templates carry transactions early in the run.
write_devnet_tp_config 0x1e040000
add_devnet_tp_mempool 120
# A template only on a new tip: while the mempool is still empty a refreshed
# template would be the same job again, and sv1_miner.py would hash the same
# headers (duplicate shares) instead of finding the block that funds it.
echo "template_refresh_secs = 0" >> "$WORK/devnet-tp.toml"
write_pool_config 10
cat >> "$WORK/pool.toml" <<TOML
# The JDC's user_identity is a plain name: no locking key, no key commitment.
require_locking_key = false
shares_per_minute = 30.0

[jds]
listen_address = "127.0.0.1:$JDS_PORT"
TOML

cat > "$WORK/jdc.toml" <<TOML
listening_address = "127.0.0.1:$JDC_PORT"
max_supported_version = 2
min_supported_version = 2
authority_public_key = "$JDC_PUB"
authority_secret_key = "$JDC_SEC"
cert_validity_sec = 3600
shares_per_minute = 30.0
share_batch_size = 1
mode = "FULLTEMPLATE"
jdc_signature = "sri-jdc-interop"
# Only for solo mining, its fallback (which must not happen here).
coinbase_reward_script = "raw(52)"

[[upstreams]]
authority_pubkey = "$POOL_PUB"
pool_address = "127.0.0.1"
pool_port = $POOL_PORT
jds_address = "127.0.0.1"
jds_port = $JDS_PORT
user_identity = "sri-jdc"

[template_provider_type.Sv2Tp]
address = "127.0.0.1:$TP_PORT"
public_key = "$TP_PUB"
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
port = $JDC_PORT
authority_pubkey = "$JDC_PUB"
user_identity = "sri-translator"
TOML

echo "== starting devnet-tp, pool (+ JDS), SRI JDC, SRI translator (logs in $WORK)"
start_devnet_tp
start pool "$BIN/pool" --config "$WORK/pool.toml"; POOL_PID=${PIDS[-1]}
wait_for "$WORK/pool.log" "connected to the template provider" 20
start jdc "$JD_CLIENT" -c "$WORK/jdc.toml"; JDC_PID=${PIDS[-1]}
wait_for "$WORK/pool.log" "job declaration client connected" 30
wait_for "$WORK/pool.log" "SetupConnection accepted" 30
start translator "$TRANSLATOR" -c "$WORK/tproxy.toml"; TPROXY_PID=${PIDS[-1]}
sleep 2

echo "== mining through the translator and the JDC for ${DURATION}s"
# The translator opens its channel on the JDC, and the JDC its channel on
# the pool, when the first SV1 miner connects.
sv1_miner "cpu0" & MINER_PID=$!
wait_for "$WORK/pool.log" "extended channel opened" 30
MINER_RC=0
wait "$MINER_PID" || MINER_RC=$?
sleep 6 # one more "pool stats" line

count() { strip "$1" | grep -c "$2" || true; }

echo
echo "== pool: the JDC's connections"
strip "$WORK/pool.log" | grep -E "job declaration client|SetupConnection accepted|channel opened" | head -6 || true
echo "== pool: job declarator (first and last)"
strip "$WORK/pool.log" | grep -E "job declared|asking for missing|PushSolution" | sed -n '1,3p;$p'
echo "== pool: custom jobs (first and last)"
strip "$WORK/pool.log" | grep "custom job set" | sed -n '1,2p;$p'
echo "== pool: blocks found on custom jobs (the JDC publishes them, not the pool)"
strip "$WORK/pool.log" | grep -c "block found on a custom job" || true
echo "== pool: refusals, closed connections, other warnings (none expected)"
strip "$WORK/pool.log" | grep -E "refused|closing|WARN|ERROR" \
  | grep -vE "pool stats|block found on a custom job|is readable by group" | head -10 || true
echo "== pool: last stats line"
strip "$WORK/pool.log" | grep "pool stats" | tail -1
echo "== devnet-tp: blocks accepted (found through the JDC)"
strip "$WORK/devnet-tp.log" | grep -iE "block accepted|refused|rejected" | tail -4 || true
echo "== SRI JDC: declarations, custom jobs, shares"
echo "DeclareMiningJob.Success: $(count "$WORK/jdc.log" 'Received: DeclareMiningJobSuccess')," \
  "DeclareMiningJob.Error: $(count "$WORK/jdc.log" 'Received: DeclareMiningJobError')," \
  "ProvideMissingTransactions: $(count "$WORK/jdc.log" 'Received: ProvideMissingTransactions')," \
  "SetCustomMiningJob.Success: $(count "$WORK/jdc.log" 'SetCustomMiningJobSuccess')," \
  "SetCustomMiningJob.Error: $(count "$WORK/jdc.log" 'SetCustomMiningJobError')," \
  "SubmitShares.Success from the pool: $(count "$WORK/jdc.log" 'Received: SubmitSharesSuccess')," \
  "SubmitShares.Error from the pool: $(count "$WORK/jdc.log" 'Received: SubmitSharesError')"
echo "== SRI JDC: fallback, solo mining (none expected)"
FALLBACK_RE="fallback triggered|requested fallback|Starting fallback|preparing fallback|solo mining|connection dropped"
strip "$WORK/jdc.log" | grep -iE "$FALLBACK_RE" | head -10 || true
echo "== SRI JDC: refusals it takes as non-fatal (stale-chain-tip; none expected)"
strip "$WORK/jdc.log" | grep "non-fatal" | head -5 || true
echo "== SRI JDC: other errors (at most a stale share of its downstream at a tip change)"
strip "$WORK/jdc.log" | grep -E "ERROR" | grep -viE "$FALLBACK_RE" | head -5 || true
echo "== SRI translator: errors (a stale share at a tip change; the miner's disconnect at the end)"
strip "$WORK/translator.log" | grep -E "ERROR|WARN" | head -5 || true
miner_summary
echo

DECLARED=$(count "$WORK/pool.log" "job declared")
WITH_TXS=$(strip "$WORK/pool.log" | grep "job declared" | grep -cvE "transactions=0( |$)" || true)
SET=$(count "$WORK/pool.log" "custom job set")
REFUSED=$(strip "$WORK/pool.log" | grep -cE "declared job refused|custom job refused" || true)
STALE=$(strip "$WORK/pool.log" | grep -E "declared job refused|custom job refused" | grep -c "stale-chain-tip" || true)
SHARES=$(strip "$WORK/pool.log" | grep "pool stats" | tail -1 | sed -E 's/.*shares_accepted=([0-9]+).*/\1/')
SHARES=${SHARES:-0}
FALLBACKS=$(strip "$WORK/jdc.log" | grep -ciE "$FALLBACK_RE" || true)
BLOCKS=$(strip "$WORK/devnet-tp.log" | grep -ci "block accepted" || true)
ALIVE=yes
for pid in "$POOL_PID" "$JDC_PID" "$TPROXY_PID"; do kill -0 "$pid" 2>/dev/null || ALIVE=no; done
echo "RESULT: jobs declared: $DECLARED ($WITH_TXS with transactions); custom jobs set: $SET;" \
  "refused: $REFUSED ($STALE stale-chain-tip); shares accepted on custom jobs: $SHARES; blocks: $BLOCKS;" \
  "JDC fallbacks: $FALLBACKS; pool, JDC, translator running: $ALIVE;" \
  "SV1 shares accepted: $ACCEPTED, refused by the translator or the JDC: $REJECTED"
if [ "$DECLARED" -gt 0 ] && [ "$WITH_TXS" -gt 0 ] && [ "$SET" -gt 0 ] && [ "$REFUSED" -eq 0 ] \
  && [ "$SHARES" -gt 0 ] && [ "$FALLBACKS" -eq 0 ] && [ "$ALIVE" = yes ] && [ "$MINER_RC" -eq 0 ]; then
  echo "INTEROP OK"
else
  echo "INTEROP FAILED (logs in $WORK)"; exit 1
fi
