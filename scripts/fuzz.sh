#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for SECONDS each (default 60), from its
# seeds (fuzz/seeds/<target>, if any) and the corpus it grew before (fuzz/corpus/<target>,
# not committed). Installs cargo-fuzz from crates.io when missing. A crash stops the run with
# the input saved under fuzz/artifacts/<target>/ (replay: cargo fuzz run <target> <file>).
#
#   ./scripts/fuzz.sh [SECONDS] [TARGET...]
#   FUZZ_RUNS=N ./scripts/fuzz.sh     # N inputs per target from seed 1 instead: repeatable
#                                     # (what scripts/test.sh does)
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi
# cargo-fuzz passes rustc flags that only nightly accepts; the machine has the stable
# toolchain only, which accepts them with RUSTC_BOOTSTRAP. The fuzzed code is safe Rust
# (tandem-core forbids unsafe), so no sanitizer: coverage guidance and panics are the point.
export RUSTC_BOOTSTRAP=1
cd fuzz
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    dirs=("corpus/$t")
    [ -d "seeds/$t" ] && dirs+=("seeds/$t")
    if [ -n "${FUZZ_RUNS:-}" ]; then
        budget=(-runs="$FUZZ_RUNS" -seed=1)
        echo "== fuzz $t: $FUZZ_RUNS inputs"
    else
        budget=(-max_total_time="$secs")
        echo "== fuzz $t for ${secs}s"
    fi
    status=0
    cargo fuzz run --sanitizer none --release "$t" "${dirs[@]}" -- \
        "${budget[@]}" -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    if [ "$status" -ne 0 ]; then
        tail -n 60 "$log"
        echo "fuzz $t: FAILED (exit $status); the input is under fuzz/artifacts/$t/"
        exit "$status"
    fi
    grep -E "^stat::(number_of_executed_units|new_units_added)|^Done" "$log" || true
done
