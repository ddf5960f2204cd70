#!/usr/bin/env bash
# Crash loops, for a person to run (long):
#   scripts/crash-loop.sh [CYCLES]           the store: a child writing secrets through the
#                                            vault is SIGKILLed at random moments (default 1000)
#   scripts/crash-loop.sh --daemon [CYCLES]  the real vaultd under mixed load (puts, rotations,
#                                            leases, transit, API-key issue and verify) from
#                                            vault-client, SIGKILLed at random moments; after
#                                            each restart every acknowledged write is there
#                                            and the audit chain verifies (default 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--daemon" ]; then
    cycles="${2:-1000}"
    VAULTD_DAEMON_CRASH_CYCLES="$cycles" cargo test --locked -p vault-client --test client -- \
        crash::acknowledged_work_survives_sigkill_of_the_daemon_under_mixed_load --exact --nocapture
    exit
fi
cycles="${1:-1000}"
VAULTD_CRASH_CYCLES="$cycles" cargo test --release --locked --test blackbox -- \
    crash::acknowledged_writes_survive_sigkill --exact --nocapture
