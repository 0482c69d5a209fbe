# Set-up shared by the interop scripts; sourced, not run. A script sets
# DURATION, its ports (see ports) and WORK (see work_dir) before using these.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# DEVNET ONLY keys (config/*.toml).
POOL_PUB=9cGDAZn9tTT7kjuAuu8KGgeG4N4TB1tDK1vgq9rte85NgN3Q1GS
POOL_SEC=68P61KGyRfXaGyFMTJM5VDWzL2oAJonTveBmYhNESX6BarASm
TP_PUB=9bdyeVkC5fwmkbE4kjccrPTFc5A3KkbEefiVna1Y1QqtG1BThwg
TP_SEC=Yjp4a7Gdp4rn14jbVLzcJQp3wtpBqLDLdoodFYn8xQSiWQCBz
MINT_PUB=9b9oyp3LfkcRiY43QM4ZvBviGwCRiggXmXfxsCwKykUzNYaacVd
MINT_SEC=kaEBavE3GDF58RVUYTmAv3cG8miPAZ2cucwLnYAZf6XHTp3Ba
POOL_ID_PUB=9agtKxDCNZ7BwrfFkX7pNY7qRvDcXaCqoW928MhFP8LE4yen9Sm
POOL_ID_SEC=26bdgVp9Mmen3tAeM3BJo7WYvkkhw9rnibaAh2YCdiL4NT9smp

# Each script has its own default ports, so that they can run side by side;
# the environment overrides them. The defaults are below Linux's ephemeral
# range (32768 and up), where an outgoing connection could take one meanwhile.
ports() { # tp pool tproxy
  TP_PORT=${TP_PORT:-$1}
  POOL_PORT=${POOL_PORT:-$2}
  TPROXY_PORT=${TPROXY_PORT:-$3}
}

# Stops the run before anything starts if one of the ports is taken.
ports_free() { # port...
  local p
  for p in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "port $p on 127.0.0.1 is in use: stop what listens there or set its *_PORT"
      exit 2
    fi
  done
}

work_dir() { # name
  mktemp -d "/tmp/hashpool-$1.XXXXXX"
}

build() { # package...
  local names=("$@") last=${*: -1}
  local list=${names[*]:0:$#-1}
  echo "== building ${list// /, }${list:+ and }$last"
  local args=()
  for p in "$@"; do args+=(-p "$p"); done
  (cd "$ROOT" && cargo build -q "${args[@]}")
}

wait_for() { # file pattern seconds
  for _ in $(seq 1 $(( $3 * 10 ))); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1"; tail -20 "$1"; exit 1
}

start() { # name command...: runs in the background, logging to $WORK/name.log
  local name=$1; shift
  "$@" > "$WORK/$name.log" 2>&1 & PIDS+=($!)
}

strip() { sed 's/\x1b\[[0-9;]*m//g' "$1"; }

write_devnet_tp_config() { # nbits
  cat > "$WORK/devnet-tp.toml" <<TOML
listen_address = "127.0.0.1:$TP_PORT"
authority_public_key = "$TP_PUB"
authority_secret_key = "$TP_SEC"
state_dir = "$WORK/tp-state"
nbits = $1
TOML
}

# devnet-tp's mempool on (README "Mempool"): each coinbase funds its wallet,
# which spends it from the next block on (coinbase_maturity = 1).
add_devnet_tp_mempool() { # transactions per minute
  cat >> "$WORK/devnet-tp.toml" <<TOML
coinbase_maturity = 1
mempool_tx_per_minute = $1
TOML
}

write_pool_config() { # unit_bits
  cat > "$WORK/pool.toml" <<TOML
network = "devnet"
listen_address = "127.0.0.1:$POOL_PORT"
authority_public_key = "$POOL_PUB"
authority_secret_key = "$POOL_SEC"
tp_address = "127.0.0.1:$TP_PORT"
tp_authority_public_key = "$TP_PUB"
coinbase_reward_script = "51"
unit_bits = $1
stats_log_interval_secs = 5
TOML
}

# Our translator: config/translator.toml pointed at the pool on $POOL_PORT.
write_translator_config() {
  sed -e "s|^listen_address = .*|listen_address = \"127.0.0.1:$TPROXY_PORT\"|" \
      -e "s|^data_dir = .*|data_dir = \"$WORK/translator\"|" \
      -e "s|^nominal_hashrate = .*|nominal_hashrate = 50000.0|" \
      -e "s|^address = .*|address = \"127.0.0.1:$POOL_PORT\"|" \
      "$ROOT/config/translator.toml" > "$WORK/translator.toml"
}

start_devnet_tp() {
  start devnet-tp "$BIN/devnet-tp" --config "$WORK/devnet-tp.toml"
  wait_for "$WORK/devnet-tp.log" "listening" 20
}

sv1_miner() { # user: mines on the translator for $DURATION seconds
  python3 "$ROOT/test/interop/sv1_miner.py" 127.0.0.1 "$TPROXY_PORT" "$1" "$DURATION" > "$WORK/miner.log" 2>&1
}

# Prints what the miner saw and sets ACCEPTED and REJECTED from its log.
miner_summary() {
  echo "== SV1 miner"
  grep -E "subscribed|authorized|rejected|summary" "$WORK/miner.log" | head -8 || true
  ACCEPTED=$(grep -c "share accepted" "$WORK/miner.log" || true)
  REJECTED=$(grep -c "share rejected" "$WORK/miner.log" || true)
}
