#!/usr/bin/env bash
# Side by side: SRI's pool_sv2 0.7.0 and our pool, each its own release
# process on the same devnet-tp, loaded in turn by the same SV2 load
# generator (test/benches/pool_load.rs: N extended channels, 4 shares in
# flight each, 8 s per step, at 100,000 shares a minute so shares are
# cheap). Our pool runs twice: without [mint], as SRI's has no ehash flow,
# then with its ehash flow on (a mint process following the same devnet-tp
# quotes every share; unit_bits 0, so each share is worth its ~16 hashes).
# Prints each pool's table, then shares/s and p99 side by side with
# ours/SRI.
#
# SRI's pool is installed once into $SRI_ROOT (default
# ~/.cache/hashpool/sri); building it needs Debian's capnproto and
# libcapnp-dev. Not part of .ci/run.
#
#   bench/side-by-side.sh            (POOL_LOAD_STEPS, POOL_LOAD_SECS as the bench takes)
#
# Steps default to 1 and 100 connections: at 1000, SRI's pool_sv2 0.7.0
# stopped completing Noise handshakes here (connect timeouts after ten
# tries each), so the step would end the run.
set -euo pipefail
export POOL_LOAD_STEPS="${POOL_LOAD_STEPS:-1,100}"
cd "$(dirname "$0")/.."
# Where cargo puts the release binaries (CARGO_TARGET_DIR, when set).
BIN="${CARGO_TARGET_DIR:-target}/release"
SRI_ROOT="${SRI_ROOT:-$HOME/.cache/hashpool/sri}"

if [ ! -x "$SRI_ROOT/bin/pool_sv2" ]; then
  if ! command -v capnp > /dev/null; then
    echo "installing capnproto and libcapnp-dev (SRI's pool needs them to build)"
    sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
    sudo_if_needed apt-get install -y -q capnproto libcapnp-dev
  fi
  echo "building SRI pool_sv2 0.7.0 into $SRI_ROOT (once; several minutes)"
  cargo install --locked --root "$SRI_ROOT" pool_sv2 --version 0.7.0
fi
echo "building our devnet-tp, pool and mint (release)"
cargo build --locked --release -p devnet-tp -p pool -p mint
cargo bench --locked -p hashpool-tests --bench pool_load --no-run

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null || true; done
  wait 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 200); do
    if (echo > "/dev/tcp/127.0.0.1/$1") 2> /dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1: see $work/*.log" >&2
  exit 1
}

# The devnet keys of config/ (public, devnet only): the load generator's
# default authority key is the pool's, so both pools use it.
POOL_PUBLIC=9cGDAZn9tTT7kjuAuu8KGgeG4N4TB1tDK1vgq9rte85NgN3Q1GS
POOL_SECRET=68P61KGyRfXaGyFMTJM5VDWzL2oAJonTveBmYhNESX6BarASm
TP_PUBLIC=9bdyeVkC5fwmkbE4kjccrPTFc5A3KkbEefiVna1Y1QqtG1BThwg
SPM=100000.0

tp_port=$(free_port)
sed -e "s|^listen_address = .*|listen_address = \"127.0.0.1:$tp_port\"|" \
    -e "s|^state_dir = .*|state_dir = \"$work/tp\"|" \
    -e "s|^nbits = .*|nbits = 0x03000001|" \
    config/devnet-tp.toml > "$work/devnet-tp.toml"
"$BIN"/devnet-tp --config "$work/devnet-tp.toml" > "$work/devnet-tp.log" 2>&1 &
pids+=($!)
wait_port "$tp_port"

wait_log() { # file pattern: SRI's pool listens before it has a template
  for _ in $(seq 1 300); do
    if grep -q "$2" "$1"; then return 0; fi
    sleep 0.1
  done
  echo "no \"$2\" in $1" >&2
  exit 1
}

run_load() { # name address pid
  echo
  echo "== $1"
  POOL_LOAD_TARGET="$2" POOL_LOAD_PID="$3" POOL_LOAD_AUTHORITY_KEY="$POOL_PUBLIC" \
    cargo bench --locked -q -p hashpool-tests --bench pool_load | tee "$work/$1.txt"
}

sri_port=$(free_port)
cat > "$work/sri-pool.toml" << EOF
authority_public_key = "$POOL_PUBLIC"
authority_secret_key = "$POOL_SECRET"
cert_validity_sec = 3600
listen_address = "127.0.0.1:$sri_port"
coinbase_reward_script = "raw(51)"
server_id = 1
pool_signature = "hashpool side-by-side"
shares_per_minute = $SPM
share_batch_size = 1

[template_provider_type.Sv2Tp]
address = "127.0.0.1:$tp_port"
public_key = "$TP_PUBLIC"
EOF
"$SRI_ROOT/bin/pool_sv2" -c "$work/sri-pool.toml" > "$work/sri-pool.log" 2>&1 &
sri_pid=$!
pids+=("$sri_pid")
wait_port "$sri_port"
wait_log "$work/sri-pool.log" "ready to accept connections"
run_load sri "127.0.0.1:$sri_port" "$sri_pid"
kill "$sri_pid"

our_config() { # out port state mint-address-or-dash: config/pool.toml on this bench's ports
  python3 - "$@" "$tp_port" "$SPM" << 'EOF'
import sys
out, port, state, mint, tp, spm = sys.argv[1:]
lines, skip = [], False
for line in open("config/pool.toml"):
    if line.startswith("["):
        skip = line.strip() == "[stats]" or (line.strip() == "[mint]" and mint == "-")
    if skip:
        continue
    key = line.split("=")[0].strip()
    line = {
        "listen_address": f'listen_address = "127.0.0.1:{port}"\n',
        "tp_address": f'tp_address = "127.0.0.1:{tp}"\n',
        "state_dir": f'state_dir = "{state}"\n',
        "shares_per_minute": f"shares_per_minute = {spm}\n",
        "vardiff_interval_secs": "vardiff_interval_secs = 0\n",
        "unit_bits": "unit_bits = 0\n",
        "address": f'address = "{mint}"\n',
    }.get(key, line)
    lines.append(line)
open(out, "w").write("".join(lines))
EOF
}

our_port=$(free_port)
our_config "$work/pool.toml" "$our_port" "$work/pool" -
"$BIN"/pool --config "$work/pool.toml" > "$work/pool.log" 2>&1 &
our_pid=$!
pids+=("$our_pid")
wait_port "$our_port"
sleep 2 # its first template
run_load hashpool "127.0.0.1:$our_port" "$our_pid"
kill "$our_pid"

mint_port=$(free_port)
mint_http=$(free_port)
sed -e "s|^http_listen = .*|http_listen = \"127.0.0.1:$mint_http\"|" \
    -e "s|^link_listen = .*|link_listen = \"127.0.0.1:$mint_port\"|" \
    -e "s|^database = .*|database = \"$work/mint/mint.sqlite\"|" \
    -e "s|^unit_bits = .*|unit_bits = 0|" \
    -e "s|^tp_address = .*|tp_address = \"127.0.0.1:$tp_port\"|" \
    config/mint.toml > "$work/mint.toml"
"$BIN"/mint --config "$work/mint.toml" > "$work/mint.log" 2>&1 &
pids+=($!)
wait_port "$mint_port"
ehash_port=$(free_port)
our_config "$work/pool-ehash.toml" "$ehash_port" "$work/pool-ehash" "127.0.0.1:$mint_port"
"$BIN"/pool --config "$work/pool-ehash.toml" > "$work/pool-ehash.log" 2>&1 &
ehash_pid=$!
pids+=("$ehash_pid")
wait_port "$ehash_port"
sleep 2 # its first template
run_load hashpool-ehash "127.0.0.1:$ehash_port" "$ehash_pid"
kill "$ehash_pid"
python3 - "$mint_http" << 'EOF'
import json, sys, urllib.request
summary = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/v1/ehash/audit"))
print(f"the mint quoted {summary['quotes']} shares ({summary['ehash_quoted']} ehash) during the run")
EOF

side_by_side() { # ours-name label
  echo
  echo "== side by side, $2 ($(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(date -u +%F))"
  printf "%11s %14s %14s %8s %12s %12s\n" connections "SRI shares/s" "ours shares/s" "ours/SRI" "SRI p99 ms" "ours p99 ms"
  join <(awk '$1 ~ /^[0-9]+$/ {print $1, $2, $4}' "$work/sri.txt" | sort) \
       <(awk '$1 ~ /^[0-9]+$/ {print $1, $2, $4}' "$work/$1.txt" | sort) |
    sort -n | awk '{printf "%11d %14.0f %14.0f %8.2f %12.2f %12.2f\n", $1, $2, $4, ($2 > 0 ? $4 / $2 : 0), $3, $5}'
}
side_by_side hashpool "ours without its ehash flow"
side_by_side hashpool-ehash "ours with its ehash flow on (every share quoted by the mint)"
