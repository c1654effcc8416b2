#!/usr/bin/env bash
# Installs valgrind (Debian, as root) unless it is there: what the instruction-count scripts
# (scripts/instructions.sh, scripts/instructions-dataplane.sh) run under.
set -euo pipefail
if ! command -v valgrind >/dev/null 2>&1; then
  echo "installing valgrind"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends valgrind
fi
