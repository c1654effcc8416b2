#!/usr/bin/env bash
# Sets everything up on a fresh Debian 12 machine (as root), builds Tandem, and runs the
# project's main job on its embedded default: the virtual-rack demo. Extra arguments go to
# `tandem-rack demo` (e.g. --json).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
cargo build --release --locked --workspace --bins
exec ./target/release/tandem-rack demo "$@"
