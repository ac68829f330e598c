#!/usr/bin/env bash
# run-guest.sh — boot the MemX test guest (TCG) against a vhost-user-blk socket.
#
# Usage: qemu/run-guest.sh --socket PATH --test NAME [--arg X] [--serial S]
#            [--smp N] [--queues N] [--mem 256M] [--log FILE] [--timeout SEC]
#            [--reconnect SEC] [--tools] [--no-build] [--incoming URI] [--qmp PATH]
#            [-- EXTRA-QEMU-ARGS...]
#
#   --socket PATH     vhost-user-blk backend socket (the backend listens, QEMU connects)
#   --test NAME       guest scenario: integrity | multiqueue | records | fio | migrate;
#                     NAME1,NAME2 runs several in one boot (the result names the list)
#   --arg X           scenario argument (kernel cmdline memx.arg=X); X1,X2 with several
#   --serial S        expected virtio-blk serial (memx.serial=S; checked by "integrity")
#   --smp N           vCPUs (default 1)
#   --queues N        vhost-user-blk num-queues (default: same as --smp)
#   --mem SIZE        guest RAM, memfd share=on (default 256M)
#   --log FILE        console log (default: a temp file, removed on exit)
#   --timeout SEC     kill QEMU and fail after SEC seconds (default 300)
#   --reconnect SEC   add reconnect=SEC to the chardev (backend restart support)
#   --tools           attach GUEST_DIR/tools.img (fio; built when the host has fio) as a
#                     read-only virtio-blk disk with serial memx-tools, after the MemX
#                     disk; the guest mounts it on /tools (needed by the fio scenario)
#   --no-build        do not run build-guest.sh first
#   --incoming URI    live-migration destination: start QEMU with -incoming URI (e.g.
#                     unix:/tmp/mig.sock); it connects to the backend and answers
#                     GET_CONFIG but does not boot: it waits for the migration stream,
#                     then the guest runs on (its console goes to this --log)
#   --qmp PATH        QMP monitor on a unix socket (-qmp unix:PATH,server=on,wait=off),
#                     e.g. to run "migrate", "query-migrate", "cont" or "quit"
#   -- ARGS...        extra QEMU arguments, e.g. -- -trace 'vhost_user_*' -D /tmp/qemu-trace.log
#
# The console goes to the log file and to stdout. Exit status: 0 iff the log
# contains "MEMX-RESULT PASS <test>"; 1 on a guest FAIL or missing result;
# 124 on timeout; 2 on usage errors.
# Environment: MEMX_GUEST_DIR (guest build dir), MEMX_QEMU (qemu-system-x86_64 binary).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}
die() { echo "run-guest: error: $*" >&2; exit 2; }

SOCKET="" TEST="" ARG="" SERIAL="" SMP=1 QUEUES="" MEM=256M LOG="" TIMEOUT=300 RECONNECT="" BUILD=1 TOOLS=0
EXTRA=()
INCOMING="" QMP=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --socket) SOCKET="${2:?}"; shift 2 ;;
        --test) TEST="${2:?}"; shift 2 ;;
        --arg) ARG="${2:?}"; shift 2 ;;
        --serial) SERIAL="${2:?}"; shift 2 ;;
        --smp) SMP="${2:?}"; shift 2 ;;
        --queues) QUEUES="${2:?}"; shift 2 ;;
        --mem) MEM="${2:?}"; shift 2 ;;
        --log) LOG="${2:?}"; shift 2 ;;
        --timeout) TIMEOUT="${2:?}"; shift 2 ;;
        --reconnect) RECONNECT="${2:?}"; shift 2 ;;
        --tools) TOOLS=1; shift ;;
        --no-build) BUILD=0; shift ;;
        --incoming) INCOMING="${2:?}"; shift 2 ;;
        --qmp) QMP="${2:?}"; shift 2 ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) usage ;;
        *) echo "run-guest: unknown argument: $1" >&2; usage ;;
    esac
done
[[ -n "${SOCKET}" && -n "${TEST}" ]] || usage
QUEUES="${QUEUES:-${SMP}}"
[[ "${TEST}" =~ ^[a-z0-9_-]+(,[a-z0-9_-]+)*$ ]] || die "bad test name: ${TEST}"
[[ "${SERIAL}${ARG}" != *[[:space:]]* ]] || die "--arg/--serial must not contain whitespace"
[[ -S "${SOCKET}" ]] || die "socket ${SOCKET} does not exist (start the backend first)"

QEMU="${MEMX_QEMU:-qemu-system-x86_64}"
command -v "${QEMU}" >/dev/null || die "${QEMU} not found (apt-get install qemu-system-x86)"

GUEST_DIR="${MEMX_GUEST_DIR:-/var/tmp/memx-guest}"
if [[ "${BUILD}" -eq 1 ]]; then
    "${SCRIPT_DIR}/build-guest.sh" "${GUEST_DIR}" >/dev/null
fi
[[ -f "${GUEST_DIR}/vmlinuz" && -f "${GUEST_DIR}/initrd.gz" ]] \
    || die "no guest in ${GUEST_DIR}; run qemu/build-guest.sh"
TOOLS_SERIAL=memx-tools
if [[ "${TOOLS}" -eq 1 && ! -f "${GUEST_DIR}/tools.img" ]]; then
    die "--tools: no ${GUEST_DIR}/tools.img; it needs fio on the host (apt-get install fio), then qemu/build-guest.sh"
fi

KEEP_LOG=1
if [[ -z "${LOG}" ]]; then
    LOG="$(mktemp "${TMPDIR:-/tmp}/memx-guest-${TEST}.XXXXXX.log")"
    KEEP_LOG=0
fi
: > "${LOG}"

APPEND="console=ttyS0 quiet panic=-1 memx.test=${TEST}"
[[ -n "${ARG}" ]] && APPEND+=" memx.arg=${ARG}"
[[ -n "${SERIAL}" ]] && APPEND+=" memx.serial=${SERIAL}"
[[ "${TOOLS}" -eq 1 ]] && APPEND+=" memx.tools=${TOOLS_SERIAL}"
CHARDEV="socket,id=vu0,path=${SOCKET}"
[[ -n "${RECONNECT}" ]] && CHARDEV+=",reconnect=${RECONNECT}"
# Migration: both QEMUs get the same machine and device options (only the backend
# socket differs), so these go in front of the extra arguments.
[[ -n "${QMP}" ]] && EXTRA=(-qmp "unix:${QMP},server=on,wait=off" "${EXTRA[@]}")
[[ -n "${INCOMING}" ]] && EXTRA=(-incoming "${INCOMING}" "${EXTRA[@]}")

# shellcheck disable=SC2054  # commas belong to QEMU option values
CMD=("${QEMU}"
    -machine q35,accel=tcg -cpu max -m "${MEM}" -smp "${SMP}"
    -nographic -no-reboot -nic none
    -object "memory-backend-memfd,id=mem,size=${MEM},share=on" -numa node,memdev=mem
    -kernel "${GUEST_DIR}/vmlinuz" -initrd "${GUEST_DIR}/initrd.gz" -append "${APPEND}"
    -chardev "${CHARDEV}"
    -device "vhost-user-blk-pci,chardev=vu0,num-queues=${QUEUES}")
# The tools disk comes after the MemX disk on the command line, so it gets the next PCI
# slot and enumerates second (vdb); the guest finds it by serial and checks it is not vda.
if [[ "${TOOLS}" -eq 1 ]]; then
    CMD+=(-drive "file=${GUEST_DIR}/tools.img,if=none,id=tools,format=raw,readonly=on"
        -device "virtio-blk-pci,drive=tools,serial=${TOOLS_SERIAL}")
fi
CMD+=("${EXTRA[@]}")

QEMU_PID=""
TAIL_PID=""
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local pid
    for pid in "${QEMU_PID}" "${TAIL_PID}"; do
        if [[ -n "${pid}" ]]; then kill "${pid}" 2>/dev/null || true; fi
    done
    [[ "${KEEP_LOG}" -eq 1 ]] || rm -f "${LOG}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "run-guest: ${CMD[*]}" >&2
START=${SECONDS}
"${CMD[@]}" </dev/null >>"${LOG}" 2>&1 &
QEMU_PID=$!
tail -n +1 -f --pid="${QEMU_PID}" "${LOG}" &
TAIL_PID=$!

TIMED_OUT=0
while kill -0 "${QEMU_PID}" 2>/dev/null; do
    if (( SECONDS - START >= TIMEOUT )); then
        TIMED_OUT=1
        echo "run-guest: TIMEOUT: no result after ${TIMEOUT} s; killing QEMU (pid ${QEMU_PID})" >&2
        kill -TERM "${QEMU_PID}" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "${QEMU_PID}" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL "${QEMU_PID}" 2>/dev/null || true
        break
    fi
    sleep 0.2
done
QEMU_RC=0
wait "${QEMU_PID}" || QEMU_RC=$?
QEMU_PID=""
wait "${TAIL_PID}" 2>/dev/null || true
TAIL_PID=""
ELAPSED=$((SECONDS - START))

if [[ "${TIMED_OUT}" -eq 1 ]]; then
    KEEP_LOG=1
    echo "run-guest: FAIL ${TEST}: timed out after ${TIMEOUT} s (log: ${LOG})" >&2
    exit 124
fi
if grep -aqE "MEMX-RESULT PASS ${TEST}([[:space:]]|$)" "${LOG}"; then
    echo "run-guest: PASS ${TEST} in ${ELAPSED} s (qemu exit ${QEMU_RC})" >&2
    exit 0
fi
KEEP_LOG=1
RESULT="$(grep -a -o 'MEMX-RESULT FAIL.*' "${LOG}" | tr -d '\r' | head -n 1 || true)"
echo "run-guest: FAIL ${TEST} in ${ELAPSED} s: ${RESULT:-no MEMX-RESULT line (qemu exit ${QEMU_RC})} (log: ${LOG})" >&2
exit 1
