#!/usr/bin/env bash
# guest-integrity.sh — host driver: 1 vCPU guest runs the "integrity" scenario
# (raw O_DIRECT write/read-back at the start and end of the disk, serial check,
# ext4 mkfs/fsck/remount with checksums) against the selected backend.
#
# Usage: MEMX_BACKEND=memx|qsd qemu/tests/guest-integrity.sh [MIB]
#   MIB  raw data written by the guest (default 16)
# See qemu/tests/lib.sh for the other environment variables.
# Final line: "PASS guest-integrity" or "FAIL guest-integrity: <reason>".
set -euo pipefail
NAME=guest-integrity
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MIB="${1:-16}"
start_backend 1
start_guest --test integrity --arg "${MIB}" --serial "${EXPECT_SERIAL}" --smp 1 --queues 1 \
    || fail "could not start the guest"
rc=0
wait_guest || rc=$?
[[ "${rc}" -ne 124 ]] || fail "guest timed out after ${GUEST_TIMEOUT} s"
check_guest_log integrity
[[ "${rc}" -eq 0 ]] || fail "run-guest.sh exited with status ${rc}"
stop_backend
pass
