#!/usr/bin/env bash
# guest-reconnect.sh — host driver: backend crash and restart under guest I/O.
#
# Usage: MEMX_BACKEND=memx|qsd qemu/tests/guest-reconnect.sh [KILLS] [RECORDS]
#   KILLS    number of kill -9 / restart cycles (default ${MEMX_RECONNECT_KILLS:-2})
#   RECORDS  4 KiB records the guest writes (default ${MEMX_RECONNECT_RECORDS:-1000})
#
# QEMU runs with "-chardev socket,...,reconnect=1" and the guest runs the
# "records" scenario (one O_DIRECT write + flush per record, MEMX-PROGRESS every
# 50). When the guest reports progress >= 100 the backend gets SIGKILL (its
# socket file is left behind, as after a real crash), ~1 s later it is
# restarted with the same arguments on the same socket path; the next kill
# happens 200 records after the previous one. The guest must still finish with
# MEMX-RESULT PASS, every record verified, and no I/O errors in dmesg.
# Set MEMX_RECONNECT_UNLINK=1 to delete the stale socket before restarting.
# See qemu/tests/lib.sh for the other environment variables.
# Final line: "PASS guest-reconnect" or "FAIL guest-reconnect: <reason>".
set -euo pipefail
NAME=guest-reconnect
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KILLS="${1:-${MEMX_RECONNECT_KILLS:-2}}"
RECORDS="${2:-${MEMX_RECONNECT_RECORDS:-1000}}"
FIRST_KILL_AT=100
KILL_STEP=200
(( RECORDS >= FIRST_KILL_AT + KILLS * KILL_STEP )) \
    || fail "RECORDS=${RECORDS} too small for ${KILLS} kill(s) (need >= $((FIRST_KILL_AT + KILLS * KILL_STEP)))"

# Highest MEMX-PROGRESS value in the guest console so far (0 if none).
progress() {
    { grep -a -o 'MEMX-PROGRESS [0-9]*' "${GUEST_LOG}" 2>/dev/null || true; } \
        | awk '{ if ($2 > m) m = $2 } END { print m + 0 }'
}

start_backend 1
start_guest --test records --arg "${RECORDS}" --smp 1 --queues 1 --reconnect 1 \
    || fail "could not start the guest"

kills=0
target=${FIRST_KILL_AT}
while guest_running; do
    if (( kills < KILLS )); then
        p="$(progress)"
        if (( p >= target )); then
            kill_backend
            kills=$((kills + 1))
            note "kill -9 #${kills} of the backend at guest progress ${p}"
            sleep 1
            [[ -z "${MEMX_RECONNECT_UNLINK:-}" ]] || rm -f "${SOCK}"
            start_backend 1
            target=$((p + KILL_STEP))
        fi
    fi
    sleep 0.1
done
rc=0
wait_guest || rc=$?
[[ "${rc}" -ne 124 ]] || fail "guest timed out after ${GUEST_TIMEOUT} s"
check_guest_log records
[[ "${rc}" -eq 0 ]] || fail "run-guest.sh exited with status ${rc}"
(( kills == KILLS )) \
    || fail "only ${kills} of ${KILLS} backend kills happened before the guest finished (raise RECORDS)"
note "guest survived ${kills} backend kill(s); all ${RECORDS} records verified"
stop_backend
pass
