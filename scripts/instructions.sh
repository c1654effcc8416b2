#!/usr/bin/env bash
# Counts the instructions the engine executes per packet on one established path, the way the
# DPDK worker runs it (bursts of 32, the hinted prefetch passes, without the prefetch
# instruction itself), under callgrind: a measure that, unlike a timing, does not move with
# whatever else the machine runs. Installs valgrind if it is missing (Debian, as root).
#
#   scripts/instructions.sh ["NAT request"|"NAT reply"|TUN|DR] [ROUNDS]
#
# It runs the engine benchmark twice with 1 024 connections, for 1 and for ROUNDS+1 rounds of
# the path (default 50), and divides the difference by the packets of the extra rounds, so
# the setup (building the frames and the table, the SYNs) cancels out.
set -euo pipefail
cd "$(dirname "$0")/.."

path="${1:-NAT request}"
rounds="${2:-50}"
conns=1024

./scripts/ensure-valgrind.sh

bench=$(cargo bench -p tandem-core --bench engine --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "engine":
        print(m["executable"])')
[ -x "$bench" ] || { echo "instructions: the engine benchmark did not build" >&2; exit 1; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
total() {
  valgrind --tool=callgrind --callgrind-out-file="$out/cg.$1" "$bench" --conns "$conns" \
    --rounds "$1" --no-memory --bursts-only --no-warm --only "$path" >/dev/null 2>&1
  callgrind_annotate "$out/cg.$1" | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
}
a=$(total 1)
b=$(total $((rounds + 1)))
echo "$path: $(( (b - a) / (rounds * conns) )) instructions per packet (bursts of 32, hinted, $rounds rounds of $conns connections)"
