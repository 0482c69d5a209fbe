#!/usr/bin/env bash
# Installs what building and testing Hashpool needs on Debian, beyond the Rust
# toolchain: protoc (cdk's mint builds a gRPC signatory), OpenSSL headers
# (cdk-postgres's TLS), Chromium with its WebDriver (the dashboard tests open
# the stats services' pages headless), and PostgreSQL and Redis (the
# scale-out tests start throwaway servers of their own; the packages' default
# services are not used). Safe to run again.
set -euo pipefail

packages=(protobuf-compiler libssl-dev pkg-config chromium chromium-driver redis-server postgresql)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust with rustup first" >&2; exit 1; }
