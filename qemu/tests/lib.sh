#!/usr/bin/env bash
# lib.sh — shared helpers for the host-side guest scenario drivers in qemu/tests/.
#
# Usage (in a driver):
#   NAME=guest-foo
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   start_backend 1; start_guest --test integrity ...; wait_guest; check_guest_log integrity
#   stop_backend; pass
#
# Environment:
#   MEMX_BACKEND        memx (default: embedded pool) | memx-remote (pages on memx-server
#                       processes on loopback) | qsd
#   MEMX_SERVER         memx-server binary (default <repo>/.build/debug/memx-server)
#   MEMX_SERVERS        memx-server processes for memx-remote (default 2)
#   MEMX_CACHE          memx-vhost --cache for memx-remote (default 4M: far smaller than the data)
#   MEMX_TRANSPORT      tcp (default) | udp: how memx-vhost reaches the memx-servers (memx-remote)
#   MEMX_VHOST          memx-vhost binary (default <repo>/.build/debug/memx-vhost)
#   MEMX_DISK_SIZE      disk size (default 256M)
#   MEMX_EXPECT_SERIAL  serial the guest must see (default: the --serial passed
#                       to memx-vhost; "vhost_user_blk" for qsd, which hard-codes it)
#   MEMX_GUEST_TIMEOUT  per-boot timeout in seconds (default 180)
#   MEMX_VERBOSE=1      show the whole guest console, not just the memx lines
#   MEMX_KEEP=1         keep the work directory (logs) after the run
#
# Every driver prints a final line "PASS <name>" or "FAIL <name>: <reason>" and
# exits 0 only on PASS. The EXIT trap kills every process the driver started
# and removes the work directory, the qsd image and /dev/shm/memx-*<volume>*.

set -euo pipefail

TESTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
QEMU_DIR="$(dirname "${TESTS_DIR}")"
REPO_DIR="$(dirname "${QEMU_DIR}")"

: "${NAME:?driver must set NAME before sourcing lib.sh}"
BACKEND="${MEMX_BACKEND:-memx}"
MEMX_VHOST="${MEMX_VHOST:-${REPO_DIR}/.build/debug/memx-vhost}"
MEMX_SERVER="${MEMX_SERVER:-${REPO_DIR}/.build/debug/memx-server}"
SERVER_COUNT="${MEMX_SERVERS:-2}"
CACHE_SIZE="${MEMX_CACHE:-4M}"
TRANSPORT="${MEMX_TRANSPORT:-tcp}"
SERVER_PIDS=()
SERVER_ADDRESSES=()
DISK_SIZE="${MEMX_DISK_SIZE:-256M}"
GUEST_TIMEOUT="${MEMX_GUEST_TIMEOUT:-180}"

SERIAL="mx${$}${RANDOM}"
SERIAL="${SERIAL:0:20}"          # virtio-blk serials are at most 20 bytes
# shellcheck disable=SC2034  # EXPECT_SERIAL is used by the drivers
case "${BACKEND}" in
    qsd) EXPECT_SERIAL="${MEMX_EXPECT_SERIAL:-vhost_user_blk}" ;;
    memx | memx-remote) EXPECT_SERIAL="${MEMX_EXPECT_SERIAL:-${SERIAL}}" ;;
    *) echo "FAIL ${NAME}: MEMX_BACKEND must be memx, memx-remote or qsd, got '${BACKEND}'"; exit 1 ;;
esac

WORK="$(mktemp -d "/tmp/memx-${NAME}.XXXXXX")"
SOCK="${WORK}/vu.sock"
BACKEND_LOG="${WORK}/backend.log"
GUEST_LOG="${WORK}/guest.log"
VOLUME="${NAME#guest-}-$$-${RANDOM}"
QSD_IMAGE="/dev/shm/memx-qsd-${VOLUME}.img"
BACKEND_PID=""
BACKEND_ARGS=()
EXTRA_BACKEND_ARGS=()   # drivers may add memx-vhost flags (memx-remote)
QSD_FILE_OPTIONS=""     # drivers may add qsd file-driver options, e.g. ",locking=off"
EXTRA_LOGS=()           # drivers may add logs to show (last 20 lines each) on failure
GUEST_PID=""
SHOW_PID=""
T0=${SECONDS}

note() { echo "[${NAME} +$((SECONDS - T0))s] $*"; }

_tail_logs() {
    local shown=0
    if [[ -s "${BACKEND_LOG}" ]]; then
        echo "--- backend log (${BACKEND}), last 20 lines:"
        tail -n 20 "${BACKEND_LOG}"
        shown=1
    fi
    if [[ -s "${GUEST_LOG}" ]]; then
        echo "--- guest console, last 25 lines:"
        tail -n 25 "${GUEST_LOG}" | tr -d '\r'
        shown=1
    fi
    local log
    for log in "${EXTRA_LOGS[@]}"; do
        [[ -s "${log}" ]] || continue
        echo "--- ${log##*/}, last 20 lines:"
        tail -n 20 "${log}" | tr -d '\r'
        shown=1
    done
    if [[ "${shown}" -eq 1 ]]; then echo "---"; fi
}

# Stop everything we started (idempotent): the guest (run-guest.sh kills its
# QEMU on SIGTERM), the console follower and the backend.
_stop_all() {
    # A driver that starts more processes (more guests or backends) defines stop_extras.
    if declare -F stop_extras >/dev/null; then stop_extras; fi
    if [[ -n "${GUEST_PID}" ]]; then
        kill -TERM "${GUEST_PID}" 2>/dev/null || true
        wait "${GUEST_PID}" 2>/dev/null || true
        GUEST_PID=""
    fi
    if [[ -n "${SHOW_PID}" ]]; then
        kill -TERM "${SHOW_PID}" 2>/dev/null || true
        wait "${SHOW_PID}" 2>/dev/null || true
        SHOW_PID=""
    fi
    if [[ -n "${BACKEND_PID}" ]]; then
        kill -TERM "${BACKEND_PID}" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "${BACKEND_PID}" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "${BACKEND_PID}" 2>/dev/null || true
        wait "${BACKEND_PID}" 2>/dev/null || true
        BACKEND_PID=""
    fi
    local pid
    for pid in "${SERVER_PIDS[@]}"; do
        kill -KILL "${pid}" 2>/dev/null || true
        wait "${pid}" 2>/dev/null || true
    done
    SERVER_PIDS=()
}

fail() {
    trap - INT TERM
    _stop_all
    _tail_logs
    echo "FAIL ${NAME}: $*"
    exit 1
}

pass() {
    note "done in $((SECONDS - T0)) s (backend ${BACKEND})"
    echo "PASS ${NAME}"
    exit 0
}

# shellcheck disable=SC2317  # invoked by the EXIT trap
_cleanup() {
    local rc=$?
    _stop_all
    rm -f "${QSD_IMAGE}"
    rm -f /dev/shm/memx-*"${VOLUME}"*
    if [[ -n "${MEMX_KEEP:-}" ]]; then
        echo "[${NAME}] kept ${WORK}" >&2
    else
        rm -rf "${WORK}"
    fi
    exit "${rc}"
}
trap _cleanup EXIT
trap 'fail "interrupted"' INT TERM

# True if a process is listening on the unix socket path $1 (without connecting to it).
socket_listening() {
    awk -v p="$1" '$NF == p && $4 == "00010000" { found = 1 } END { exit !found }' /proc/net/unix
}

# start_backend QUEUES — start (or restart with the same arguments) the backend
# on ${SOCK} and wait until it listens.
start_backend() {
    local queues="$1"
    case "${BACKEND}" in
        qsd)
            command -v qemu-storage-daemon >/dev/null || fail "qemu-storage-daemon not found (apt-get install qemu-utils)"
            [[ -f "${QSD_IMAGE}" ]] || truncate -s "${DISK_SIZE}" "${QSD_IMAGE}"
            BACKEND_ARGS=(qemu-storage-daemon
                --blockdev "driver=file,node-name=f,filename=${QSD_IMAGE}${QSD_FILE_OPTIONS}"
                --export "type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=${SOCK},writable=on,num-queues=${queues}")
            ;;
        memx | memx-remote)
            [[ -x "${MEMX_VHOST}" ]] \
                || fail "memx-vhost binary not found at ${MEMX_VHOST} (build it, set MEMX_VHOST, or use MEMX_BACKEND=qsd)"
            BACKEND_ARGS=("${MEMX_VHOST}" --socket "${SOCK}" --size "${DISK_SIZE}" --volume "${VOLUME}"
                --queues "${queues}" --serial "${SERIAL}")
            if [[ "${BACKEND}" == memx-remote ]]; then
                (( ${#SERVER_ADDRESSES[@]} > 0 )) || start_servers
                local address
                for address in "${SERVER_ADDRESSES[@]}"; do BACKEND_ARGS+=(--server "${address}"); done
                BACKEND_ARGS+=(--cache "${CACHE_SIZE}" --transport "${TRANSPORT}" "${EXTRA_BACKEND_ARGS[@]}")
            fi
            ;;
    esac
    echo "### $(date +%T) start: ${BACKEND_ARGS[*]}" >> "${BACKEND_LOG}"
    "${BACKEND_ARGS[@]}" </dev/null >>"${BACKEND_LOG}" 2>&1 &
    BACKEND_PID=$!
    local i rc
    for ((i = 0; i < 200; i++)); do
        if ! kill -0 "${BACKEND_PID}" 2>/dev/null; then
            rc=0
            wait "${BACKEND_PID}" || rc=$?
            BACKEND_PID=""
            fail "backend exited (status ${rc}) before listening on ${SOCK}"
        fi
        if [[ -S "${SOCK}" ]] && socket_listening "${SOCK}"; then
            note "backend ${BACKEND} pid ${BACKEND_PID} listening on ${SOCK}"
            return 0
        fi
        sleep 0.1
    done
    fail "backend did not listen on ${SOCK} within 20 s"
}

# start_servers — start ${SERVER_COUNT} memx-server processes on loopback ports (once; they
# outlive backend restarts, as memory servers on other hosts would).
start_servers() {
    [[ -x "${MEMX_SERVER}" ]] || fail "memx-server binary not found at ${MEMX_SERVER} (build it or set MEMX_SERVER)"
    local i port log
    for ((i = 1; i <= SERVER_COUNT; i++)); do
        log="${WORK}/server${i}.log"
        : > "${log}"   # exists before the first grep below, even if the server has not opened it yet
        "${MEMX_SERVER}" --listen 127.0.0.1:0 --memory 1G --transport "${TRANSPORT}" </dev/null >"${log}" 2>&1 &
        SERVER_PIDS+=($!)
        port=""
        for ((t = 0; t < 100; t++)); do
            port="$(grep -aoE '127\.0\.0\.1:[0-9]+' "${log}" | head -1 | cut -d: -f2 || true)"
            [[ -n "${port}" && "${port}" != 0 ]] && break
            kill -0 "${SERVER_PIDS[-1]}" 2>/dev/null || fail "memx-server ${i} exited: $(tail -3 "${log}")"
            sleep 0.1
        done
        [[ -n "${port}" && "${port}" != 0 ]] || fail "memx-server ${i} did not report its port"
        SERVER_ADDRESSES+=("127.0.0.1:${port}")
    done
    note "memx-servers listening on ${SERVER_ADDRESSES[*]}"
}

# kill_backend — SIGKILL the backend (simulated crash); leaves its socket file behind.
kill_backend() {
    kill -KILL "${BACKEND_PID}" 2>/dev/null || true
    wait "${BACKEND_PID}" 2>/dev/null || true
    echo "### $(date +%T) killed with SIGKILL" >> "${BACKEND_LOG}"
    BACKEND_PID=""
}

# stop_backend — SIGTERM; the backend must exit 0 within 10 s and remove its socket.
stop_backend() {
    [[ -n "${BACKEND_PID}" ]] || fail "stop_backend: backend not running"
    kill -0 "${BACKEND_PID}" 2>/dev/null || fail "backend died before the end of the test"
    kill -TERM "${BACKEND_PID}"
    local i rc=0
    for ((i = 0; i < 100; i++)); do
        kill -0 "${BACKEND_PID}" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "${BACKEND_PID}" 2>/dev/null && fail "backend did not exit within 10 s of SIGTERM"
    wait "${BACKEND_PID}" || rc=$?
    BACKEND_PID=""
    echo "### $(date +%T) exited with status ${rc} after SIGTERM" >> "${BACKEND_LOG}"
    [[ "${rc}" -eq 0 ]] || fail "backend exited with status ${rc} after SIGTERM"
    [[ ! -e "${SOCK}" ]] || fail "backend did not remove its socket ${SOCK}"
    note "backend stopped cleanly"
}

# start_guest ARGS... — start qemu/run-guest.sh on ${SOCK} in the background
# (sets GUEST_PID); its console goes to ${GUEST_LOG} and, filtered to the memx
# lines (everything with MEMX_VERBOSE=1), to our stdout. With --tools the guest
# also gets the read-only tools disk (fio), which needs fio on this host.
start_guest() {
    local arg
    for arg in "$@"; do
        if [[ "${arg}" == --tools && -z "${MEMX_FIO:-}" ]] && ! command -v fio >/dev/null; then
            fail "this test runs fio in the guest, from a tools disk built from the host's fio: apt-get install fio"
        fi
    done
    # The file exists before tail starts: tail -f on a missing file gives up at once, and the
    # console would silently not be shown.
    : > "${WORK}/run-guest.out"
    "${QEMU_DIR}/run-guest.sh" --socket "${SOCK}" --log "${GUEST_LOG}" --timeout "${GUEST_TIMEOUT}" "$@" \
        </dev/null >>"${WORK}/run-guest.out" 2>&1 &
    GUEST_PID=$!
    local pattern='memx|MEMX|run-guest'
    [[ -n "${MEMX_VERBOSE:-}" ]] && pattern='.'
    tail -n +1 -f --pid="${GUEST_PID}" "${WORK}/run-guest.out" 2>/dev/null \
        | sed -u 's/\r//g; s/^.*\(memx-init: \)/\1/' | grep -a --line-buffered -E "${pattern}" &
    SHOW_PID=$!
}

# wait_guest — wait for run-guest.sh; prints nothing, returns its exit status.
wait_guest() {
    local rc=0
    wait "${GUEST_PID}" || rc=$?
    GUEST_PID=""
    wait "${SHOW_PID}" 2>/dev/null || true
    SHOW_PID=""
    return "${rc}"
}

# guest_running — true while run-guest.sh is still running.
guest_running() {
    [[ -n "${GUEST_PID}" ]] && kill -0 "${GUEST_PID}" 2>/dev/null
}

# Fail unless the guest log has the PASS line for test $1 and no MEMX-IOERR.
check_guest_log() {
    grep -aq "MEMX-IOERR" "${GUEST_LOG}" && fail "guest saw I/O errors on vda"
    grep -aqE "MEMX-RESULT PASS $1([[:space:]]|$)" "${GUEST_LOG}" \
        || fail "guest: $(grep -a -o 'MEMX-RESULT FAIL.*' "${GUEST_LOG}" | tr -d '\r' | head -n 1 || echo 'no MEMX-RESULT line')"
    return 0
}

# qmp SOCKET JSON... — send QMP commands to the QEMU monitor on the unix socket SOCKET
# (qmp_capabilities first) and print each reply, one line each ({"return": ...} or
# {"error": ...}); asynchronous events are skipped. Returns 1 if the socket cannot be
# reached, any reply is an error, or no reply comes within 10 s. Written in perl because
# perl-base is essential on Debian: no socat or python needed.
qmp() {
    perl -e '
        use strict; use warnings; use IO::Socket::UNIX; use Socket;
        my $path = shift @ARGV;
        $SIG{ALRM} = sub { print STDERR "qmp: no reply from $path within 10 s\n"; exit 1 };
        alarm 10;
        my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $path)
            or do { print STDERR "qmp: cannot connect to $path: $!\n"; exit 1 };
        $s->autoflush(1);
        my $line = <$s>;
        (defined $line && $line =~ /"QMP"/) or do { print STDERR "qmp: no greeting on $path\n"; exit 1 };
        my $rc = 0;
        my $first = 1;
        for my $cmd (q({"execute": "qmp_capabilities"}), @ARGV) {
            print $s "$cmd\n";
            while (defined($line = <$s>)) { last if $line =~ /^\s*\{\s*"(return|error)"/; }
            defined $line or do { print STDERR "qmp: $path closed before replying to $cmd\n"; exit 1 };
            $line =~ s/\r?\n$//;
            $rc = 1 if $line =~ /^\s*\{\s*"error"/;
            print "$line\n" unless $first;
            $first = 0;
        }
        exit $rc;
    ' "$@"
}

# qmp_field KEY — the first scalar value of "KEY" in the JSON text on stdin (quotes
# stripped; empty if absent), e.g. qmp "${QMP}" '{"execute": "query-status"}' | qmp_field status
qmp_field() {
    { grep -o "\"$1\": *\"\{0,1\}[^\",}]*" || true; } | head -n 1 | sed 's/^[^:]*: *"\{0,1\}//'
}
