#!/usr/bin/env bash
# Runs the SIGKILL crash test for many cycles (default 1000): a child writing secrets
# is killed at random moments; every acknowledged write must survive every reopen.
#   scripts/crash-loop.sh [CYCLES]
set -euo pipefail
cd "$(dirname "$0")/.."
cycles="${1:-1000}"
VAULTD_CRASH_CYCLES="$cycles" cargo test --release --locked --test blackbox -- \
    crash::acknowledged_writes_survive_sigkill --exact --nocapture
