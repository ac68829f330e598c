#!/usr/bin/env bash
# guest-migration.sh — host driver: live migration of a running guest between two
# vhost-user-blk backends that serve the same disk.
#
# Usage: MEMX_BACKEND=qsd|memx-remote qemu/tests/guest-migration.sh [RECORDS]
#   RECORDS  4 KiB records the guest writes (default ${MEMX_MIGRATION_RECORDS:-2500}: the guest
#            must still be writing when the last migration starts)
#
# Two backends serve one disk:
#   qsd          two qemu-storage-daemon processes export the SAME raw file in /dev/shm
#                (file driver with locking=off), one socket each;
#   memx-remote  two memx-vhost processes on the same 2 memory servers with the same
#                --volume/--size/--serial; backend B is started with --standby (it answers
#                the handshake and GET_CONFIG, and takes the volume's lease only when
#                QEMU starts the rings) and its own --pool-directory, so its cache file
#                does not collide with A's on one host.
# (MEMX_BACKEND=memx cannot work: the embedded pool is locked by one process.)
#
# The guest runs the "migrate" scenario the whole time (one O_DIRECT write + flush per
# record, a read-back of the last 25 records every 25, MEMX-PROGRESS and MEMX-READLAT
# lines). Every QEMU has the same machine and device options and a QMP socket; a
# destination is started with -incoming unix:... and its console goes to its own log.
#   a. QEMU-A boots on backend A; QEMU-B waits with -incoming on backend B.
#   b. At progress >= 100: migrate A -> B, poll query-migrate until completed; record
#      total-time and downtime; the guest must go on on B.
#   c. Fenced source (memx-remote only): "cont" on QEMU-A (postmigrate): its VM resumes
#      and its rings restart on backend A, which must refuse to serve: its log says
#      "... another backend opened it since ... refusing to serve it", and the guest copy
#      on A fails with an I/O error, while the guest on B goes on; then "quit" QEMU-A.
#      qsd has no fencing (two qsd processes on one file would both write it), so this
#      step is skipped with qsd.
#   d. Cancel: QEMU-C -incoming on backend A (a new connection to it); max-bandwidth
#      low on B, migrate B -> C, migrate_cancel after ~1 s: query-migrate must say
#      cancelled and the guest goes on on B; quit QEMU-C.
#   e. Destination dies: QEMU-D -incoming on backend A; migrate B -> D (low bandwidth),
#      kill -9 QEMU-D mid-migration: B must report failed and keep running.
#   f. Migrate back: QEMU-E -incoming on backend A, bandwidth restored, migrate B -> E;
#      the guest finishes on E with MEMX-RESULT PASS, every record verified, and no
#      I/O errors in its dmesg.
# Both backends must then stop cleanly on SIGTERM (exit 0, socket removed).
#
# MEMX_MIGRATION_MODE=bench runs a, b and f only (f right after b; the guest still has to
# finish on E with every record verified) and prints one machine-readable line per
# migration for Benchmarks/migration.sh:
#   MIGRATION-RESULT backend=B step=b|f total_ms=T downtime_ms=D readlat_us=L base_readlat_us=M
# (readlat_us: the guest's first full 25-record read-back on the destination; base: the
# median read-back on the source before the migration).
#
# Environment (besides qemu/tests/lib.sh's):
#   MEMX_MIGRATION_RECORDS   records (default 2500; bench mode 1000)
#   MEMX_MIGRATION_MODE      full (default) | bench
#   MEMX_MIGRATION_FAST_BW   max-bandwidth in bytes/s for the measured migrations b and f
#                            (default 4 GiB/s, i.e. not the throttle: QEMU's own default
#                            is 32 MiB/s)
#   MEMX_MIGRATION_SLOW_BW   max-bandwidth for the cancelled and killed ones (default 4 MiB/s)
#   MEMX_ARGS                extra memx-vhost flags for both backends (memx-remote)
#   MEMX_QEMU_ARGS           extra QEMU arguments for every QEMU (after run-guest.sh's --),
#                            e.g. "-trace vhost_user_* -D /tmp/trace.log" or "-cpu qemu64"
#   MEMX_MIGRATION_RAMCHECK=1  start destinations with -S; after each measured migration
#                            compare the guest RAM of the stopped source and the paused
#                            destination (their memfds, via /proc/PID/fd) page by page,
#                            then cont: a page that differs is one the source backend wrote
#                            without logging it (or after GET_VRING_BASE). Costs ~1 s each.
# Final line: "PASS guest-migration" or "FAIL guest-migration: <reason>".
set -euo pipefail
NAME=guest-migration
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# A command that set -e would end the run on gets a FAIL line instead of a silent exit.
set -E
trap 'rc=$?; [[ "${BASHPID}" != "$$" ]] || fail "unexpected status ${rc} at line ${LINENO}: ${BASH_COMMAND}"' ERR

MODE="${MEMX_MIGRATION_MODE:-full}"
case "${MODE}" in
    full) DEFAULT_RECORDS=2500 ;;
    bench) DEFAULT_RECORDS=1000 ;;
    *) fail "MEMX_MIGRATION_MODE must be full or bench, got '${MODE}'" ;;
esac
RECORDS="${1:-${MEMX_MIGRATION_RECORDS:-${DEFAULT_RECORDS}}}"
[[ "${RECORDS}" =~ ^[0-9]+$ ]] || fail "RECORDS must be a number, got '${RECORDS}'"
RECORDS=$(((RECORDS + 24) / 25 * 25))       # the scenario rounds up to whole read-backs
MIGRATE_AT=100
FAST_BW="${MEMX_MIGRATION_FAST_BW:-4294967296}"
SLOW_BW="${MEMX_MIGRATION_SLOW_BW:-4194304}"
# What memx-vhost logs (a warning) when QEMU restarts the rings on a backend that handed the
# volume off and another backend opened it since (LeasedPageStore.activate).
FENCE_PATTERN="volume '${VOLUME}' here after handing it off, but another backend opened it since .*refusing to serve it"
read -r -a USER_ARGS <<<"${MEMX_ARGS:-}"
RAMCHECK="${MEMX_MIGRATION_RAMCHECK:-0}"
read -r -a QEMU_EXTRA <<<"${MEMX_QEMU_ARGS:-}"
(( RECORDS >= MIGRATE_AT + 300 )) || fail "RECORDS=${RECORDS} too small (need >= $((MIGRATE_AT + 300)))"

case "${BACKEND}" in
    qsd) QSD_FILE_OPTIONS=",locking=off" ;;   # two qsd processes open one file
    memx-remote)
        [[ -x "${MEMX_VHOST}" ]] || fail "memx-vhost binary not found at ${MEMX_VHOST}"
        help="$("${MEMX_VHOST}" --help 2>&1 || true)"   # not piped into grep -q: SIGPIPE + pipefail
        [[ "${help}" == *--standby* ]] \
            || fail "${MEMX_VHOST} has no --standby flag (needed for the destination backend); use MEMX_BACKEND=qsd"
        ;;
    *) fail "MEMX_BACKEND=${BACKEND}: migration needs two backends on one disk: use qsd or memx-remote" ;;
esac

# Backend A is lib.sh's backend (SOCK, BACKEND_LOG, BACKEND_PID); backend B has its own.
SOCK_A="${SOCK}"
SOCK_B="${WORK}/vu-b.sock"
LOG_B="${WORK}/backend-b.log"
PID_B=""
POOL_B="/dev/shm/memx-migration-standby-$$-${RANDOM}"   # backend B's --pool-directory
EXTRA_LOGS=("${LOG_B}")

declare -A RG_PID=()     # QEMU label -> run-guest.sh pid
declare -A SHOW_PIDS=()  # QEMU label -> console follower pid

stop_extras() {
    local label
    for label in "${!RG_PID[@]}"; do
        kill -TERM "${RG_PID[${label}]}" 2>/dev/null || true
        wait "${RG_PID[${label}]}" 2>/dev/null || true
    done
    RG_PID=()
    for label in "${!SHOW_PIDS[@]}"; do
        kill -TERM "${SHOW_PIDS[${label}]}" 2>/dev/null || true
        wait "${SHOW_PIDS[${label}]}" 2>/dev/null || true
    done
    SHOW_PIDS=()
    if [[ -n "${PID_B}" ]]; then
        kill -TERM "${PID_B}" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "${PID_B}" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "${PID_B}" 2>/dev/null || true
        wait "${PID_B}" 2>/dev/null || true
        PID_B=""
    fi
    rm -rf "${POOL_B}"
}

# start_backend_b — backend B on SOCK_B (lib.sh's start_backend with B's socket and log).
start_backend_b() {
    local SOCK="${SOCK_B}" BACKEND_LOG="${LOG_B}" BACKEND_PID=""
    local EXTRA_BACKEND_ARGS=("${USER_ARGS[@]}")
    if [[ "${BACKEND}" == memx-remote ]]; then
        mkdir -p "${POOL_B}"
        EXTRA_BACKEND_ARGS=(--standby --pool-directory "${POOL_B}" "${USER_ARGS[@]}")
    fi
    start_backend 1
    PID_B="${BACKEND_PID}"
}

# stop_backend_b — SIGTERM backend B; it must exit 0 and remove its socket.
stop_backend_b() {
    local SOCK="${SOCK_B}" BACKEND_LOG="${LOG_B}" BACKEND_PID="${PID_B}"
    PID_B=""
    stop_backend
}

# qemu_start LABEL SOCKET [--incoming] — run-guest.sh (same guest, same machine and
# device options) on SOCKET with a QMP socket and its own console log; with --incoming
# it waits for a migration on unix:WORK/mig-LABEL.sock. Returns when QMP answers
# (running, or inmigrate for a destination).
qemu_start() {
    local label="$1" socket="$2" incoming="${3:-}" args want extra=("${QEMU_EXTRA[@]}")
    args=(--socket "${socket}" --log "${WORK}/guest-${label}.log" --qmp "${WORK}/qmp-${label}.sock"
        --no-build --timeout "${GUEST_TIMEOUT}" --test migrate --arg "${RECORDS}" --smp 1 --queues 1)
    want=running
    if [[ -n "${incoming}" ]]; then
        args+=(--incoming "unix:${WORK}/mig-${label}.sock")
        want=inmigrate
        [[ "${RAMCHECK}" == 1 ]] && extra+=(-S)
    fi
    "${QEMU_DIR}/run-guest.sh" "${args[@]}" -- -pidfile "${WORK}/qemu-${label}.pid" "${extra[@]}" \
        </dev/null >"${WORK}/run-guest-${label}.out" 2>&1 &
    RG_PID[${label}]=$!
    local pattern='memx|MEMX-(PROGRESS|RESULT|IOERR)|run-guest: (PASS|FAIL)'
    [[ -n "${MEMX_VERBOSE:-}" ]] && pattern='.'
    tail -n +1 -f --pid="${RG_PID[${label}]}" "${WORK}/run-guest-${label}.out" 2>/dev/null \
        | sed -u 's/\r//g; s/^.*\(memx-init: \)/\1/' | grep -a --line-buffered -E "${pattern}" \
        | sed -u "s/^/    [QEMU-${label}] /" &
    SHOW_PIDS[${label}]=$!
    local i status=""
    for ((i = 0; i < 300; i++)); do
        kill -0 "${RG_PID[${label}]}" 2>/dev/null \
            || fail "QEMU-${label} exited at start: $(tail -n 3 "${WORK}/run-guest-${label}.out" | tr '\n' ' ')"
        if [[ -S "${WORK}/qmp-${label}.sock" ]]; then
            status="$(qmp "${WORK}/qmp-${label}.sock" '{"execute": "query-status"}' 2>/dev/null | qmp_field status)" \
                || status=""
            [[ "${status}" == "${want}" ]] && break
        fi
        sleep 0.1
    done
    [[ "${status}" == "${want}" ]] || fail "QEMU-${label} is '${status}' after 30 s, not ${want}"
    note "QEMU-${label} (pid $(cat "${WORK}/qemu-${label}.pid")) ${want} on $(basename "${socket}")"
}

# q LABEL JSON... — QMP commands to QEMU-LABEL; the replies go to QREPLY. Fails the test on
# an error reply (so never call it in a command substitution: fail would end only that).
q() {
    local label="$1"
    shift
    QREPLY="$(qmp "${WORK}/qmp-${label}.sock" "$@" 2>&1)" || fail "QMP to QEMU-${label} failed: $* -> ${QREPLY}"
}

qemu_status() {
    qmp "${WORK}/qmp-$1.sock" '{"execute": "query-status"}' 2>/dev/null | qmp_field status
}

# qemu_wait_exit LABEL [SECONDS] — wait for run-guest.sh of LABEL to end; sets RG_RC.
qemu_wait_exit() {
    local label="$1" limit="${2:-15}" i
    for ((i = 0; i < limit * 10; i++)); do
        kill -0 "${RG_PID[${label}]}" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "${RG_PID[${label}]}" 2>/dev/null && fail "QEMU-${label} did not exit within ${limit} s"
    RG_RC=0
    wait "${RG_PID[${label}]}" || RG_RC=$?
    unset "RG_PID[${label}]"
    wait "${SHOW_PIDS[${label}]}" 2>/dev/null || true
    unset "SHOW_PIDS[${label}]"
}

# qemu_quit LABEL — "quit" over QMP (if QEMU still runs) and wait for it to exit.
qemu_quit() {
    local label="$1"
    if kill -0 "${RG_PID[${label}]}" 2>/dev/null; then
        qmp "${WORK}/qmp-${label}.sock" '{"execute": "quit"}' >/dev/null 2>&1 || true
    fi
    qemu_wait_exit "${label}"
    note "QEMU-${label} quit (run-guest.sh status ${RG_RC})"
}

# progress LABEL — highest MEMX-PROGRESS in QEMU-LABEL's console (0 if none).
progress() {
    { grep -a -o 'MEMX-PROGRESS [0-9]*' "${WORK}/guest-$1.log" 2>/dev/null || true; } \
        | awk '{ if ($2 > m) m = $2 } END { print m + 0 }'
}

# wait_progress LABEL TARGET [SECONDS] — until QEMU-LABEL's guest reports progress >= TARGET.
wait_progress() {
    local label="$1" target="$2" limit="${3:-60}" i
    for ((i = 0; i < limit * 10; i++)); do
        (( $(progress "${label}") >= target )) && return 0
        kill -0 "${RG_PID[${label}]}" 2>/dev/null \
            || fail "QEMU-${label} exited before guest progress ${target} (at $(progress "${label}"))"
        sleep 0.1
    done
    fail "guest on QEMU-${label} did not reach progress ${target} within ${limit} s (at $(progress "${label}"))"
}

# guest_goes_on LABEL [FROM] — the guest on QEMU-LABEL gets 50 records past FROM (default:
# its progress now; after a switchover, the source's last progress).
guest_goes_on() {
    local label="$1" p
    p="$(progress "${label}")"
    if [[ -n "${2:-}" ]] && (( $2 > p )); then p="$2"; fi
    wait_progress "${label}" $((p + 50)) 30
    [[ "$(qemu_status "${label}")" == running ]] || fail "QEMU-${label} is not running"
    note "guest goes on on QEMU-${label}: progress ${p} -> $(progress "${label}")"
}

# migrate FROM TO — start a migration from QEMU-FROM to QEMU-TO's incoming socket.
migrate() {
    q "$1" "{\"execute\": \"migrate\", \"arguments\": {\"uri\": \"unix:${WORK}/mig-$2.sock\"}}"
}

set_bandwidth() {
    q "$1" "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"max-bandwidth\": $2}}"
}

# migration_wait FROM [SECONDS] — poll query-migrate on FROM until it is completed, failed or
# cancelled; sets MIG_STATUS, MIG_TOTAL (ms), MIG_DOWNTIME (ms) and MIG_REPLY.
migration_wait() {
    local label="$1" limit="${2:-60}" i
    MIG_STATUS=""
    for ((i = 0; i < limit * 20; i++)); do
        q "${label}" '{"execute": "query-migrate"}'
        MIG_REPLY="${QREPLY}"
        MIG_STATUS="$(qmp_field status <<<"${MIG_REPLY}")"
        case "${MIG_STATUS}" in completed | failed | cancelled) break ;; esac
        sleep 0.05
    done
    MIG_TOTAL="$(qmp_field total-time <<<"${MIG_REPLY}")"
    MIG_DOWNTIME="$(qmp_field downtime <<<"${MIG_REPLY}")"
}

# migration_status FROM — query-migrate's status now, in MIG_STATUS.
migration_status() {
    q "$1" '{"execute": "query-migrate"}'
    MIG_STATUS="$(qmp_field status <<<"${QREPLY}")"
}

# first_readlat LABEL — µs of the guest's first read-back that started on QEMU-LABEL
# (the first MEMX-READLAT after a MEMX-PROGRESS line in its console; a destination's
# console starts at the switchover). Empty if none yet.
first_readlat() {
    tr -d '\r' <"${WORK}/guest-$1.log" 2>/dev/null \
        | awk '/^MEMX-PROGRESS / { p = 1 } p && /^MEMX-READLAT / { print $2; exit }'
}

# median_readlat LABEL — median µs of QEMU-LABEL's read-backs so far.
median_readlat() {
    tr -d '\r' <"${WORK}/guest-$1.log" 2>/dev/null | awk '/^MEMX-READLAT / { print $2 }' | sort -n \
        | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'
}

# wait_readlat LABEL — until QEMU-LABEL's guest printed its first full read-back (≤ 20 s).
wait_readlat() {
    local i
    for ((i = 0; i < 200; i++)); do
        [[ -n "$(first_readlat "$1")" ]] && return 0
        sleep 0.1
    done
    fail "no MEMX-READLAT on QEMU-$1 within 20 s"
}

# ram_file LABEL — /proc/PID/fd/N of QEMU-LABEL's guest RAM (the memfd of the RAM's size).
ram_file() {
    local pid f size
    pid="$(cat "${WORK}/qemu-$1.pid")"
    size="$(numfmt --from=iec "${MEMX_GUEST_MEM:-256M}")"
    for f in /proc/"${pid}"/fd/*; do
        [[ "$(readlink "${f}" 2>/dev/null)" == /memfd:* ]] || continue
        [[ "$(stat -L -c %s "${f}" 2>/dev/null)" == "${size}" ]] && { echo "${f}"; return 0; }
    done
    return 1
}

# ram_check FROM TO STEP — with the destination paused (-S), compare both QEMUs' guest RAM
# page by page; note the differing pages (guest-physical addresses) and fail if any.
ram_check() {
    local from="$1" to="$2" step="$3" i a b diff
    for ((i = 0; i < 100; i++)); do
        [[ "$(qemu_status "${to}")" == paused ]] && break
        sleep 0.1
    done
    [[ "$(qemu_status "${to}")" == paused ]] || fail "QEMU-${to} (-S) is '$(qemu_status "${to}")' after the migration, not paused"
    a="$(ram_file "${from}")" || fail "no guest RAM memfd in QEMU-${from}"
    b="$(ram_file "${to}")" || fail "no guest RAM memfd in QEMU-${to}"
    diff="$({ cmp -l "${a}" "${b}" 2>/dev/null || true; } | awk '
        { p = int(($1 - 1) / 4096); if (!(p in s)) { s[p] = 1; n++; if (n <= 40) l = l sprintf(" 0x%x", p * 4096) } }
        END { printf "%d", n; if (n) printf " page(s) differ:%s", l }')"
    if [[ "${diff}" != 0 && -n "${MEMX_KEEP:-}" ]]; then
        cp "${a}" "${WORK}/ram-${from}.bin" || true
        cp "${b}" "${WORK}/ram-${to}.bin" || true
    fi
    q "${to}" '{"execute": "cont"}'
    if [[ "${diff}" != 0 ]]; then
        fail "step ${step}: guest RAM of QEMU-${to} after the migration differs from QEMU-${from}'s: ${diff}"
    fi
    note "step ${step}: guest RAM of QEMU-${from} and QEMU-${to} identical at the switchover"
}

# vq_check FROM STEP — on the stopped source, queue 0's last-avail-idx (what the backend
# answered to GET_VRING_BASE, which the destination's SET_VRING_BASE gets) must equal used-idx
# (read from guest RAM): the backend drained, so every request it took is completed. A smaller
# last-avail-idx makes the destination run completed requests again (their buffers may be
# reused by then); a larger one loses requests. Skipped if this QEMU lacks the x- commands.
vq_check() {
    local from="$1" step="$2" sock="${WORK}/qmp-$1.sock" path reply last used avail
    path="$(qmp "${sock}" '{"execute": "x-query-virtio"}' 2>/dev/null \
        | grep -o '"path": "[^"]*"' | head -n 1 | sed 's/^"path": "//; s/"$//')" || path=""
    [[ -n "${path}" ]] || { note "step ${step}: x-query-virtio unavailable; ring indices not checked"; return 0; }
    reply="$(qmp "${sock}" "{\"execute\": \"x-query-virtio-queue-status\", \"arguments\": {\"path\": \"${path}\", \"queue\": 0}}" 2>&1)" \
        || fail "x-query-virtio-queue-status on QEMU-${from}: ${reply}"
    last="$(qmp_field last-avail-idx <<<"${reply}")"
    used="$(qmp_field used-idx <<<"${reply}")"
    avail="$(qmp_field shadow-avail-idx <<<"${reply}")"
    note "step ${step}: QEMU-${from} stopped with last-avail-idx ${last}, used-idx ${used}, avail-idx ${avail:-?}"
    [[ "${last}" == "${used}" ]] \
        || fail "step ${step}: the source backend answered GET_VRING_BASE with ${last} but the used ring is at ${used}: the destination starts from a wrong index (${reply})"
}

# measured_migration FROM TO STEP — migrate at full bandwidth, check it completed and the
# guest goes on on TO; records the numbers as STEP.
declare -A TOTAL_MS=() DOWN_MS=() READLAT=() BASE_READLAT=()
measured_migration() {
    local from="$1" to="$2" step="$3" p
    p="$(progress "${from}")"
    BASE_READLAT[${step}]="$(median_readlat "${from}")"
    set_bandwidth "${from}" "${FAST_BW}"
    note "step ${step}: migrate QEMU-${from} -> QEMU-${to} at guest progress ${p}"
    migrate "${from}" "${to}"
    migration_wait "${from}" 60
    [[ "${MIG_STATUS}" == completed ]] \
        || fail "migration ${from} -> ${to}: query-migrate says '${MIG_STATUS}' (${MIG_REPLY})"
    TOTAL_MS[${step}]="${MIG_TOTAL}"
    DOWN_MS[${step}]="${MIG_DOWNTIME}"
    [[ "$(qemu_status "${from}")" == postmigrate ]] || fail "QEMU-${from} is '$(qemu_status "${from}")', not postmigrate"
    GUEST_LOG="${WORK}/guest-${to}.log"
    note "step ${step}: migration ${from} -> ${to} completed: total ${MIG_TOTAL} ms, downtime ${MIG_DOWNTIME} ms"
    vq_check "${from}" "${step}"
    [[ "${RAMCHECK}" != 1 ]] || ram_check "${from}" "${to}" "${step}"
    guest_goes_on "${to}" "$(progress "${from}")"
    wait_readlat "${to}"
    READLAT[${step}]="$(first_readlat "${to}")"
    note "step ${step}: first read-back on QEMU-${to}: ${READLAT[${step}]} us (median on QEMU-${from} before: ${BASE_READLAT[${step}]} us)"
}

# ------------------------------------------------------------------ the run

"${QEMU_DIR}/build-guest.sh" >/dev/null || fail "build-guest.sh failed"

note "a: backends A and B (${BACKEND}), QEMU-A boots on A, QEMU-B waits on B (${RECORDS} records)"
if [[ "${BACKEND}" == memx-remote ]]; then EXTRA_BACKEND_ARGS=("${USER_ARGS[@]}"); fi
start_backend 1
start_backend_b
qemu_start A "${SOCK_A}"
GUEST_LOG="${WORK}/guest-A.log"
qemu_start B "${SOCK_B}" --incoming
wait_progress A "${MIGRATE_AT}" 90

measured_migration A B b

if [[ "${MODE}" == full ]]; then
    if [[ "${BACKEND}" == memx-remote ]]; then
        mark=$(($(wc -l <"${BACKEND_LOG}") + 1))
        note "step c: cont on QEMU-A (postmigrate): backend A must refuse to serve"
        q A '{"execute": "cont"}'
        fenced=""
        for ((i = 0; i < 150; i++)); do
            fenced="$(tail -n +"${mark}" "${BACKEND_LOG}" | grep -a -m 1 -E "${FENCE_PATTERN}" || true)"
            [[ -n "${fenced}" ]] && break
            sleep 0.1
        done
        [[ -n "${fenced}" ]] || fail "step c: backend A's log has no /${FENCE_PATTERN}/ within 15 s of cont on QEMU-A"
        note "step c: backend A: ${fenced}"
        # The guest copy on A writes a record next: it must fail, not land on the disk.
        for ((i = 0; i < 150; i++)); do
            grep -aq 'MEMX-RESULT FAIL' "${WORK}/guest-A.log" && break
            sleep 0.1
        done
        grep -aq 'MEMX-RESULT FAIL' "${WORK}/guest-A.log" \
            || fail "step c: the guest copy on the fenced QEMU-A did not fail within 15 s"
        note "step c: the guest copy on QEMU-A: $(grep -a -o 'MEMX-RESULT FAIL.*' "${WORK}/guest-A.log" | tr -d '\r' | head -n 1)"
        guest_goes_on B
    else
        note "step c: skipped: qsd has no fencing (both qsd processes would write the file)"
    fi
fi
# A backend serves one QEMU at a time: the next destination on backend A waits for this.
qemu_quit A

if [[ "${MODE}" == full ]]; then

    note "step d: QEMU-C waits on backend A; migrate B -> C at ${SLOW_BW} B/s, cancel after 1 s"
    qemu_start C "${SOCK_A}" --incoming
    set_bandwidth B "${SLOW_BW}"
    migrate B C
    sleep 1
    migration_status B
    [[ "${MIG_STATUS}" == active ]] || fail "step d: migration B -> C is '${MIG_STATUS}' after 1 s, not active"
    q B '{"execute": "migrate_cancel"}'
    migration_wait B 30
    [[ "${MIG_STATUS}" == cancelled ]] || fail "step d: after migrate_cancel query-migrate says '${MIG_STATUS}'"
    note "step d: migration cancelled"
    guest_goes_on B
    qemu_quit C

    note "step e: QEMU-D waits on backend A; migrate B -> D, kill -9 QEMU-D after 1 s"
    qemu_start D "${SOCK_A}" --incoming
    migrate B D
    sleep 1
    migration_status B
    [[ "${MIG_STATUS}" == active ]] || fail "step e: migration B -> D is '${MIG_STATUS}' after 1 s, not active"
    kill -KILL "$(cat "${WORK}/qemu-D.pid")"
    note "step e: QEMU-D killed"
    migration_wait B 30
    [[ "${MIG_STATUS}" == failed ]] || fail "step e: after QEMU-D died query-migrate says '${MIG_STATUS}'"
    note "step e: migration failed, as it must"
    qemu_wait_exit D
    guest_goes_on B
fi

kill -0 "${RG_PID[B]}" 2>/dev/null \
    || fail "the guest finished before the migration back (raise MEMX_MIGRATION_RECORDS, now ${RECORDS})"
(( $(progress B) < RECORDS )) \
    || fail "the guest wrote all its records before the migration back (raise MEMX_MIGRATION_RECORDS, now ${RECORDS})"
qemu_start E "${SOCK_A}" --incoming
measured_migration B E f
qemu_quit B

note "waiting for the guest to finish on QEMU-E"
qemu_wait_exit E "${GUEST_TIMEOUT}"
check_guest_log migrate
[[ "${RG_RC}" -eq 0 ]] || fail "run-guest.sh of QEMU-E exited with status ${RG_RC}"
grep -aq "migrate ok: ${RECORDS} records verified" "${GUEST_LOG}" \
    || fail "QEMU-E's console lacks 'migrate ok: ${RECORDS} records verified'"
note "guest finished on QEMU-E: all ${RECORDS} records verified, no I/O errors"

stop_backend
stop_backend_b

for step in b f; do
    echo "MIGRATION-RESULT backend=${BACKEND} step=${step} total_ms=${TOTAL_MS[${step}]} downtime_ms=${DOWN_MS[${step}]} readlat_us=${READLAT[${step}]} base_readlat_us=${BASE_READLAT[${step}]}"
done
note "summary (${BACKEND}): A->B total ${TOTAL_MS[b]} ms, downtime ${DOWN_MS[b]} ms, first read-back ${READLAT[b]} us;" \
    "B->E total ${TOTAL_MS[f]} ms, downtime ${DOWN_MS[f]} ms, first read-back ${READLAT[f]} us"
pass
