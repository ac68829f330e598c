#!/usr/bin/env bash
# guest-multiqueue.sh — host driver: 2 vCPUs, 2 virtqueues; the guest requires
# 2 blk-mq hardware queues and runs two verified O_DIRECT jobs pinned to CPU 0
# and CPU 1 on disjoint regions ("multiqueue" scenario).
#
# Usage: MEMX_BACKEND=memx|qsd qemu/tests/guest-multiqueue.sh [MIB]
#   MIB  data per job (default 8)
# See qemu/tests/lib.sh for the other environment variables.
# Final line: "PASS guest-multiqueue" or "FAIL guest-multiqueue: <reason>".
set -euo pipefail
NAME=guest-multiqueue
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MIB="${1:-8}"
start_backend 2
start_guest --test multiqueue --arg "${MIB}" --smp 2 --queues 2 || fail "could not start the guest"
rc=0
wait_guest || rc=$?
[[ "${rc}" -ne 124 ]] || fail "guest timed out after ${GUEST_TIMEOUT} s"
check_guest_log multiqueue
[[ "${rc}" -eq 0 ]] || fail "run-guest.sh exited with status ${rc}"
stop_backend
pass
