#!/usr/bin/env bash
# guest-fio.sh — host driver: fio writes and verifies data in the guest, nothing fails.
#
# Usage: MEMX_BACKEND=memx|memx-remote|qsd qemu/tests/guest-fio.sh [MIB]
#   MIB  MiB fio writes and verifies (default 32)
#
# 1 vCPU, 1 queue, the tools disk attached (--tools: needs fio on the host), the guest's
# "fio" scenario (qemu/guest/test-fio.sh). Not in run-all.sh or CI: the fio workload runs
# there inside guest-server-failure.sh, with memory servers dying under it; this driver
# runs it alone, e.g. against qemu-storage-daemon to check the scenario itself.
# See qemu/tests/lib.sh for the other environment variables.
set -euo pipefail
NAME=guest-fio
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MIB="${1:-32}"
start_backend 1
start_guest --test fio --arg "${MIB}" --tools --smp 1 --queues 1 || fail "could not start the guest"
rc=0
wait_guest || rc=$?
[[ "${rc}" -ne 124 ]] || fail "guest timed out after ${GUEST_TIMEOUT} s"
check_guest_log fio
[[ "${rc}" -eq 0 ]] || fail "run-guest.sh exited with status ${rc}"
note "${MIB} MiB written by fio and verified twice"
stop_backend
pass
