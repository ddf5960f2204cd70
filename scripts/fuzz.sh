#!/usr/bin/env bash
# Fuzzes vaultd's parsers with cargo-fuzz (libFuzzer) on the nightly toolchain.
#
#   scripts/fuzz.sh                      every target in fuzz/, FUZZ_SECONDS each
#   scripts/fuzz.sh envelope grpc        only these
#   FUZZ_SECONDS=60 scripts/fuzz.sh      a short run (default: 600 s per target)
#
# New inputs that reach new code are added to fuzz/corpus/<target>/; commit the small
# ones (keep each corpus under ~2 MB: `cargo +nightly fuzz cmin <target>` shrinks it).
# A crash, timeout or out-of-memory input is written to fuzz/artifacts/<target>/ (the
# run's log is fuzz/logs/<target>.log), and the script exits 1 after running the
# other targets.
# Reproduce one with `cargo +nightly fuzz run <target> <artifact>`, minimise it with
# `cargo +nightly fuzz tmin <target> <artifact>`, and add it to the corpus once fixed:
# the stable `cargo test` then replays it for good (tests/blackbox/corpora.rs).
#
# Environment: FUZZ_SECONDS (default 600), FUZZ_TOOLCHAIN (default nightly),
# FUZZ_ARGS (extra libFuzzer flags, e.g. "-max_len=4096").
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-600}"
toolchain="${FUZZ_TOOLCHAIN:-nightly}"

if ! cargo "+$toolchain" fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz for $toolchain" >&2
    cargo "+$toolchain" install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo "+$toolchain" fuzz list)
fi

failed=0
for target in "${targets[@]}"; do
    artifacts="fuzz/artifacts/$target"
    mkdir -p "$artifacts" fuzz/logs
    log="fuzz/logs/$target.log"
    before=$(find "$artifacts" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l)
    status=0
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    cargo "+$toolchain" fuzz run "$target" -- \
        -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
        ${FUZZ_ARGS:-} >"$log" 2>&1 || status=$?
    after=$(find "$artifacts" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l)
    crashes=$((after - before))
    runs=$(awk '/^stat::number_of_executed_units:/ {print $2}' "$log" | tail -n 1)
    corpus=$(find "fuzz/corpus/$target" -type f 2>/dev/null | wc -l)
    size=$(du -sh "fuzz/corpus/$target" 2>/dev/null | cut -f1)
    if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        # libFuzzer did not finish and wrote nothing: a build error or a harness panic
        # at start-up. Count it, so it is not mistaken for a clean run.
        crashes=1
    fi
    printf '%-10s runs=%-10s crashes=%-3s corpus=%s files (%s) exit=%s log=%s\n' \
        "$target" "${runs:-0}" "$crashes" "$corpus" "${size:-0}" "$status" "$log"
    if [ "$crashes" -ne 0 ]; then
        failed=1
    fi
done
exit "$failed"
