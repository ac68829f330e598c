#!/usr/bin/env bash
# guest-server-failure.sh — host driver: memory servers die under guest I/O.
#
# Usage: qemu/tests/guest-server-failure.sh [RECORDS]
#   RECORDS  4 KiB records the guest writes (default ${MEMX_FAILURE_RECORDS:-1500})
#
# Runs memx-vhost on ${MEMX_SERVERS:-3} memory servers with 2 replicas per page group and
# a 1 MiB cache (so reads go to the servers), and the guest's "records" scenario (one
# O_DIRECT write + flush per record, then every record read back and compared). When the
# guest reports progress >= 200, server 1 gets SIGKILL; once memx-vhost logs that
# re-replication has nothing left to copy (and the guest is 300 records further), server 2
# gets SIGKILL too, so only server 3 is left. The guest must finish with MEMX-RESULT PASS,
# every record verified, and no I/O errors in dmesg.
# Final line: "PASS guest-server-failure" or "FAIL guest-server-failure: <reason>".
set -euo pipefail
NAME=guest-server-failure
export MEMX_BACKEND=memx-remote
export MEMX_SERVERS="${MEMX_SERVERS:-3}"
export MEMX_CACHE="${MEMX_CACHE:-1M}"
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RECORDS="${1:-${MEMX_FAILURE_RECORDS:-1500}}"
(( SERVER_COUNT >= 3 )) || fail "needs at least 3 servers (MEMX_SERVERS=${SERVER_COUNT})"

progress() {
    { grep -a -o 'MEMX-PROGRESS [0-9]*' "${GUEST_LOG}" 2>/dev/null || true; } \
        | awk '{ if ($2 > m) m = $2 } END { print m + 0 }'
}

kill_server() { # index (0-based)
    kill -KILL "${SERVER_PIDS[$1]}" 2>/dev/null || true
    wait "${SERVER_PIDS[$1]}" 2>/dev/null || true
    note "kill -9 of memory server $(( $1 + 1 )) (${SERVER_ADDRESSES[$1]}) at guest progress $(progress)"
}

EXTRA_BACKEND_ARGS=(--replicas 2)
start_backend 1
start_guest --test records --arg "${RECORDS}" --smp 1 --queues 1 || fail "could not start the guest"

stage=0
second_at=0
repair_started=${SECONDS}
while guest_running; do
    p="$(progress)"
    if (( stage == 0 && p >= 200 )); then
        kill_server 0
        stage=1
        second_at=$((p + 300))
        repair_started=${SECONDS}
    elif (( stage == 1 && p >= second_at )) && grep -aq ' 0 to go' "${BACKEND_LOG}"; then
        note "re-replication done within $((SECONDS - repair_started)) s: $(grep -a -c 're-replicated page group' "${BACKEND_LOG}") group(s) copied"
        kill_server 1
        stage=2
    fi
    sleep 0.1
done
rc=0
wait_guest || rc=$?
[[ "${rc}" -ne 124 ]] || fail "guest timed out after ${GUEST_TIMEOUT} s"
check_guest_log records
[[ "${rc}" -eq 0 ]] || fail "run-guest.sh exited with status ${rc}"
(( stage == 2 )) || fail "the guest finished before both servers were killed (stage ${stage}; raise RECORDS)"
grep -aq 'is down' "${BACKEND_LOG}" || fail "memx-vhost never noticed a server was down"
note "guest survived 2 of 3 memory servers dying; all ${RECORDS} records verified"
stop_backend
pass
