#!/usr/bin/env bash
# run-all.sh — run every QEMU guest scenario driver in sequence.
#
# Usage: MEMX_BACKEND=memx|qsd qemu/tests/run-all.sh
#
# Runs guest-integrity.sh, guest-multiqueue.sh and guest-reconnect.sh (same
# environment; see qemu/tests/lib.sh), prints each result with its duration and
# a summary line "N passed, M failed"; exits non-zero if any failed.
set -euo pipefail

TESTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SCENARIOS=(guest-integrity guest-multiqueue guest-reconnect)

# Build the guest once up front so the first scenario's timing is not skewed.
"$(dirname "${TESTS_DIR}")/build-guest.sh" >/dev/null

passed=0
failed=0
summary=()
start_all=${SECONDS}
for s in "${SCENARIOS[@]}"; do
    echo "=== ${s} (backend ${MEMX_BACKEND:-memx})"
    t0=${SECONDS}
    if "${TESTS_DIR}/${s}.sh"; then
        passed=$((passed + 1))
        summary+=("PASS ${s} ($((SECONDS - t0)) s)")
    else
        failed=$((failed + 1))
        summary+=("FAIL ${s} ($((SECONDS - t0)) s)")
    fi
done
echo "=== summary (backend ${MEMX_BACKEND:-memx}, $((SECONDS - start_all)) s)"
printf '%s\n' "${summary[@]}"
echo "${passed} passed, ${failed} failed"
[[ "${failed}" -eq 0 ]]
