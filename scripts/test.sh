#!/usr/bin/env bash
# Runs every check and test of the workspace: formatting, lints, then all
# unit, property and cross-role integration tests. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line for the whole run (cargo's last line is often an empty doc-test run).
awk '/^test result:/ { passed += $4; failed += $6 }
     END { printf "all tests: %d passed, %d failed\n", passed, failed }' "$log"
