#!/usr/bin/env bash
# Sets everything up on a fresh Debian 12 machine (as root) and runs the whole test suite:
# formatting, lints, unit/property tests, the real-EAL tests (net_ring/net_null vdevs), the
# real dataplane binary, and the virtual-rack tests (network namespaces + AF_XDP).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

# A one-off run gains nothing from incremental caches, which would double the target directory.
export CARGO_INCREMENTAL=0

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo build (the rack tests run the real binaries)"
cargo build --workspace --bins --locked

echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo prints one per test binary, the last often a
# doc-test binary with nothing in it).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
if [ "$status" -eq 0 ]; then
    # Every parser's fuzz target, a fixed number of inputs from a fixed seed (repeatable);
    # longer runs: ./scripts/fuzz.sh SECONDS.
    echo "== fuzz targets"
    FUZZ_RUNS=100000 ./scripts/fuzz.sh || status=$?
fi
du -sh target 2>/dev/null | awk '{ print "target directory: " $1 }'
exit "$status"
