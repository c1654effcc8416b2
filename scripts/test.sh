#!/usr/bin/env bash
# Sets everything up on a fresh Debian 12 machine (as root) and runs the whole test suite:
# formatting, lints, unit/property tests, the real-EAL tests (net_ring/net_null vdevs), the
# real dataplane binary, and the virtual-rack tests (network namespaces + AF_XDP).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo build (the rack tests run the real binaries)"
cargo build --workspace --bins --locked

echo "== cargo test"
cargo test --workspace --locked
