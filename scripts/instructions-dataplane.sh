#!/usr/bin/env bash
# Counts the instructions the real dataplane's worker lcore executes per frame on the
# whole-dataplane benchmark's traffic (net_pcap replaying the capture from memory, tx to
# /dev/null), under callgrind: everything the lcore runs from `tandem_dataplane::worker::run`
# down, the PMD, libpcap and libc included (testpmd runs those too), split by object. A
# measure that, unlike the benchmark's timings, does not move with whatever else the machine
# runs. Installs valgrind if it is missing (Debian, as root).
#
#   scripts/instructions-dataplane.sh [CONNS] [DATA_PER_CONN]    (default 1024 64)
#
# Valgrind slows the lcore ~60x while the worker's housekeeping stays every 10 ms of wall
# time, so time-driven work is overstated; per-frame work is not. With the defaults the table
# is in cache and the run takes ~2 minutes: 40 s of warm-up, then 30 s counted.
set -euo pipefail
cd "$(dirname "$0")/.."

conns="${1:-1024}"
data="${2:-64}"
warm_s=40
count_s=30

./scripts/ensure-valgrind.sh

cargo build --release --locked -p tandem-dataplane -p tandem-hw-tests >/dev/null 2>&1 ||
  { echo "instructions-dataplane: the release build failed" >&2; exit 1; }
dataplane=target/release/tandem-dataplane

work=$(mktemp -d /tmp/tandem-instr-XXXXXX)
vpid=""
prefix=""
cleanup() {
  if [ -n "$vpid" ] && kill -0 "$vpid" 2>/dev/null; then
    kill -INT "$vpid" 2>/dev/null || true
    sleep 2
    kill -KILL "$vpid" 2>/dev/null || true
  fi
  rm -rf "$work"
  # The dataplane's DPDK runtime directory (its --file-prefix).
  if [ -n "$prefix" ]; then rm -rf "/var/run/dpdk/$prefix"; fi
}
trap cleanup EXIT

config=$(target/release/tandem-rack bench-dataplane --conns "$conns" --data-per-conn "$data" \
  --work-dir "$work" --config-only)
stats="$work/dataplane.stats.json"
prefix=$(grep -o 'tandem-bench-dp-[0-9]*' "$config" | head -1 || true)
rx() {
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["total"]["rx_packets"])' "$stats"
}

valgrind --tool=callgrind --toggle-collect='tandem_dataplane::worker::run' \
  --callgrind-out-file="$work/cg" "$dataplane" --config "$config" >"$work/valgrind.log" 2>&1 &
vpid=$!
sleep "$warm_s"
[ -f "$stats" ] || { echo "instructions-dataplane: no stats after ${warm_s}s:" >&2; tail -20 "$work/valgrind.log" >&2; exit 1; }
callgrind_control -z "$vpid" >/dev/null
a=$(rx)
sleep "$count_s"
callgrind_control -d "$vpid" >/dev/null
b=$(rx)
sleep 1
kill -INT "$vpid"
wait "$vpid" 2>/dev/null || true
vpid=""
# callgrind_control -d wrote the counted window as cg.1 (cg is what came after it).
dump="$work/cg.1"
[ -f "$dump" ] || { echo "instructions-dataplane: no dump of the counted window" >&2; exit 1; }
frames=$((b - a))
[ "$frames" -gt 0 ] || { echo "instructions-dataplane: no frames counted" >&2; exit 1; }

# Instructions per frame, in total and by object (the dump's own costs, not inclusive).
python3 - "$dump" "$frames" "$conns" "$data" <<'EOF'
import collections, sys
path, frames = sys.argv[1], int(sys.argv[2])
by_obj = collections.Counter()
names = {}
ob, skip = "?", False
def object_name(spec):
    # Compressed names: "(id) /path" the first time (in an ob= or a cob= line), "(id)" after.
    spec = spec.strip()
    if spec.startswith("("):
        ob_id, _, name = spec.partition(" ")
        if name:
            names[ob_id] = name.split("/")[-1]
        return names.get(ob_id, ob_id)
    return spec.split("/")[-1]
for line in open(path):
    if line.startswith("ob="):
        ob = object_name(line[3:])
        continue
    if line.startswith("cob="):
        object_name(line[4:])
        continue
    if line.startswith("calls="):
        skip = True
        continue
    if line[:1].isdigit() or line.startswith(("+", "-", "*", "0x")):
        if skip:
            skip = False
            continue
        parts = line.split()
        if len(parts) >= 2:
            by_obj[ob] += int(parts[-1])
total = sum(by_obj.values())
print(f"dataplane worker lcore: {total / frames:.0f} instructions per frame "
      f"({frames} frames counted; capture of {sys.argv[3]} connections x {sys.argv[4]} data segments)")
for name, n in by_obj.most_common(8):
    print(f"  {n / frames:8.1f}  {name}")
EOF
