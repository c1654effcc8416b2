#!/usr/bin/env bash
# Installs everything Tandem needs to build, run the virtual rack and run its tests on
# Debian 12, as root. Idempotent: running it again changes nothing that is already there.
set -euo pipefail

packages=(
  # DPDK 22.11 runtime, tools (dpdk-testpmd, dpdk-devbind.py) and headers for bindgen/cc
  dpdk dpdk-dev libdpdk-dev
  # bindgen needs libclang; cc builds the C shim
  clang libclang-dev llvm-dev pkg-config build-essential
  # DPDK's af_xdp PMD links libbpf/libxdp; numa for EAL
  libbpf-dev libnuma-dev libelf-dev zlib1g-dev libpcap-dev
  # the virtual rack: namespaces, veth, bridges, ping, sysctl
  iproute2 iputils-ping procps kmod ethtool tcpdump
  # TLS for the sync link; openssl for deploy/make-certs.sh; python for small rack helpers
  libssl-dev ca-certificates python3 openssl
  # drills over ssh (tandem-rack drill --rack FILE; the ssh drill test runs its own sshd on
  # loopback); systemd-analyze verifies the units in deploy/systemd
  openssh-client openssh-server systemd
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all apt packages present"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; Tandem needs a Rust toolchain (rustup) on PATH" >&2
  exit 1
fi

# hugetlbfs is not required (the rack runs DPDK with --no-huge), but mount it if possible
mountpoint -q /dev/hugepages 2>/dev/null || { mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages 2>/dev/null || true; }
echo "setup: done"
