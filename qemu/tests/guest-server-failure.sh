#!/usr/bin/env bash
# guest-server-failure.sh — host driver: memory servers die under guest I/O.
#
# Usage: qemu/tests/guest-server-failure.sh [RECORDS [FIO_MIB]]
#   RECORDS  4 KiB records the guest writes (default ${MEMX_FAILURE_RECORDS:-600})
#   FIO_MIB  MiB fio writes and verifies (default ${MEMX_FAILURE_FIO_MIB:-96})
#
# Runs memx-vhost on ${MEMX_SERVERS:-3} memory servers with 2 replicas per page group and
# a 1 MiB cache (so reads go to the servers), and one guest boot that runs two scenarios in
# turn: "records" (one O_DIRECT write + flush per record, then every record read back and
# compared), then "fio" (fio from the tools disk: 4 KiB random writes at queue depth 16
# with a crc32c header per block, read back and verified, then a second verify-only run;
# see qemu/guest/test-fio.sh). When the guest reports records progress >= 200, the first
# server that stores pages of the volume (memxctl stat; placement decides which) gets
# SIGKILL. Once memx-vhost logs that re-replication has nothing left to copy and fio
# reports progress of its first run (at its first half-second tick, early in its writes),
# the next server gets SIGKILL too, so most of fio's writes, its read-back and its
# verify-only run are served by the last one alone; fio must report writing after that kill. The guest must
# finish with MEMX-RESULT PASS, every record and every fio block verified, and no I/O
# errors in dmesg. Needs fio on the host (the tools disk).
# Final line: "PASS guest-server-failure" or "FAIL guest-server-failure: <reason>".
set -euo pipefail
NAME=guest-server-failure
export MEMX_BACKEND=memx-remote
export MEMX_SERVERS="${MEMX_SERVERS:-3}"
export MEMX_CACHE="${MEMX_CACHE:-1M}"
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RECORDS="${1:-${MEMX_FAILURE_RECORDS:-600}}"
FIO_MIB="${2:-${MEMX_FAILURE_FIO_MIB:-96}}"
(( SERVER_COUNT >= 3 )) || fail "needs at least 3 servers (MEMX_SERVERS=${SERVER_COUNT})"

# Highest "MEMX-PROGRESS k" of the records scenario.
progress() {
    { grep -a -o -E 'MEMX-PROGRESS [0-9]+' "${GUEST_LOG}" 2>/dev/null || true; } \
        | awk '{ if ($2 > m) m = $2 } END { print m + 0 }'
}

# fio's first run (write, then read back) has reported progress: it is running.
fio_started() {
    grep -aq 'MEMX-PROGRESS fio write ' "${GUEST_LOG}" 2>/dev/null
}

# How many times fio's first run has reported that it is writing.
fio_writing() {
    grep -a -c 'MEMX-PROGRESS fio write writing' "${GUEST_LOG}" 2>/dev/null || true
}

MEMXCTL="${MEMXCTL:-$(dirname "${MEMX_VHOST}")/memxctl}"

# The first server (0-based index) that stores pages of the volume: placement decides which
# servers hold the records' page group, and killing one that holds none would test nothing.
holder() {
    local i pages
    for ((i = 0; i < SERVER_COUNT; i++)); do
        pages="$("${MEMXCTL}" --server "${SERVER_ADDRESSES[$i]}" --json stat "${VOLUME}" 2>/dev/null \
            | grep -o '"storedPages" *: *[0-9]*' | head -n 1 | grep -o '[0-9]*$' || true)"
        if [[ -n "${pages}" && "${pages}" -gt 0 ]]; then echo "${i}"; return 0; fi
    done
    return 1
}

kill_server() { # index (0-based), what the guest is doing
    kill -KILL "${SERVER_PIDS[$1]}" 2>/dev/null || true
    wait "${SERVER_PIDS[$1]}" 2>/dev/null || true
    note "kill -9 of memory server $(( $1 + 1 )) (${SERVER_ADDRESSES[$1]}) $2"
}

EXTRA_BACKEND_ARGS=(--replicas 2)
start_backend 1
start_guest --test records,fio --arg "${RECORDS},${FIO_MIB}" --tools --smp 1 --queues 1 \
    || fail "could not start the guest"

stage=0
repaired=0
writing_at_kill=0
repair_started=${SECONDS}
while guest_running; do
    if (( stage == 0 )) && (( $(progress) >= 200 )); then
        [[ -x "${MEMXCTL}" ]] || fail "memxctl not found at ${MEMXCTL} (set MEMXCTL)"
        first="$(holder)" || fail "no memory server stores pages of ${VOLUME} at records progress $(progress)"
        second=$(( (first + 1) % SERVER_COUNT ))
        kill_server "${first}" "at records progress $(progress)"
        stage=1
        repair_started=${SECONDS}
    elif (( stage == 1 && repaired == 0 )) && grep -aq ' 0 to go' "${BACKEND_LOG}"; then
        note "re-replication done within $((SECONDS - repair_started)) s: $(grep -a -c 're-replicated page group' "${BACKEND_LOG}") group(s) copied"
        repaired=1
    elif (( stage == 1 && repaired == 1 )) && fio_started; then
        kill_server "${second}" "while fio runs: $(grep -a -o 'MEMX-PROGRESS fio .*%' "${GUEST_LOG}" | tail -n 1 | tr -d '\r')"
        writing_at_kill="$(fio_writing)"
        stage=2
    fi
    sleep 0.1
done
rc=0
wait_guest || rc=$?
[[ "${rc}" -ne 124 ]] || fail "guest timed out after ${GUEST_TIMEOUT} s"
check_guest_log records,fio
[[ "${rc}" -eq 0 ]] || fail "run-guest.sh exited with status ${rc}"
(( stage == 2 )) || fail "the guest finished before both servers were killed (stage ${stage}; raise FIO_MIB)"
(( $(fio_writing) > writing_at_kill )) \
    || fail "fio did not report writing after server 2 was killed (raise FIO_MIB)"
note "fio reported writing $(( $(fio_writing) - writing_at_kill )) time(s) after server 2 was killed"
grep -aq 'is down' "${BACKEND_LOG}" || fail "memx-vhost never noticed a server was down"
note "guest survived 2 of 3 memory servers dying; ${RECORDS} records and ${FIO_MIB} MiB of fio blocks verified"
stop_backend
pass
