#!/usr/bin/env bash
# libvirt-lifecycle.sh — host driver: a libvirt domain with a MemX disk, through a real libvirtd.
#
# Usage: qemu/tests/libvirt-lifecycle.sh
#
# Starts 1 memx-server and memx-vhost (--log-level debug, 2 queues) on a socket, makes sure a
# libvirtd answers on qemu:///system (starting virtlogd and libvirtd itself if none runs; see
# below), writes a domain derived from qemu/libvirt-domain.xml (its name, the test's socket,
# the guest built in ${MEMX_LIBVIRT_GUEST_DIR:-/var/tmp/memx-guest-libvirt}, the serial
# console to a file), and then:
#   1. virsh define + virsh start: the domain runs, memx-vhost logs QEMU's connection and both
#      queues starting, and the guest runs the example's scenario (multiqueue) to
#      MEMX-RESULT PASS and powers off (on_poweroff=destroy);
#   2. virsh start again, and virsh destroy once the guest's queues run: memx-vhost must
#      survive it and keep listening (a third QEMU could connect);
#   3. virsh undefine; memx-vhost stops cleanly on SIGTERM (status 0, socket removed).
#
# libvirtd: if `virsh -c qemu:///system` gets no answer, the script (as root) starts
# `virtlogd` (unless its socket listens) and `libvirtd` in the background, logging into its
# work directory, and stops both at the end. If the libvirt-qemu user or group does not exist
# (libvirt-daemon-system is not installed, as in CI) it creates them as system accounts, as
# that package does: libvirt's QEMU driver does not load without them, whatever qemu.conf
# says. Nothing else is configured: an already running or configured libvirt is used as it
# is, and QEMU runs as qemu.conf's user (libvirt-qemu by default). So the socket and guest
# files are made accessible to any user: the work directory 0755, the socket 0666.
#
# Exit status: 0 on PASS, 1 on FAIL, 77 with a "SKIP libvirt-lifecycle: <reason>" line only
# when libvirt cannot run here (no libvirtd answering and either not root or libvirtd /
# virtlogd / virsh not installed).
#
# Environment (besides qemu/tests/lib.sh's):
#   MEMX_LIBVIRT_GUEST_DIR  guest build used by the domain (default /var/tmp/memx-guest-libvirt:
#                           libvirt chowns the kernel and initrd while the domain runs, so it
#                           does not share the other drivers' /var/tmp/memx-guest)
#   MEMX_LIBVIRT_NEGATIVE=no-backend  self-check: stop memx-vhost before `virsh start`; the
#                           script must then FAIL
# Final line: "PASS libvirt-lifecycle", "FAIL libvirt-lifecycle: <reason>" or the SKIP line.
set -euo pipefail
NAME=libvirt-lifecycle
export MEMX_BACKEND=memx-remote
export MEMX_SERVERS=1
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

GUEST_DIR="${MEMX_LIBVIRT_GUEST_DIR:-/var/tmp/memx-guest-libvirt}"
EXAMPLE_XML="${QEMU_DIR}/libvirt-domain.xml"
DOMAIN="memx-lifecycle-$$"
DOMAIN_XML="${WORK}/domain.xml"
LIBVIRTD_LOG="${WORK}/libvirtd.log"
URI=qemu:///system
DOMAIN_DEFINED=0
LIBVIRTD_PID=""
VIRTLOGD_PID=""
QUEUES=2          # the example domain: 2 vCPUs, queues='2'

virsh_() { timeout 120 virsh -q -c "${URI}" "$@"; }

skip() {
    echo "SKIP ${NAME}: $*"
    exit 77
}

# fail, with libvirt's side of the story first (its QEMU log for the domain, libvirtd's log).
lfail() {
    local qemu_log="/var/log/libvirt/qemu/${DOMAIN}.log"
    if [[ -s "${qemu_log}" ]]; then
        echo "--- libvirt's QEMU log ${qemu_log}, last 15 lines:"
        tail -n 15 "${qemu_log}"
    fi
    if [[ -s "${LIBVIRTD_LOG}" ]]; then
        # (without D-Bus and DMI, as in containers, libvirtd always logs the errors left out)
        echo "--- libvirtd log (started by this script), last 15 lines:"
        grep -v -e '^$' -e virGDBusGetSystemBus -e networkStateInitialize -e udevGetDMIData -e dmidecode \
            "${LIBVIRTD_LOG}" | tail -n 15
    fi
    fail "$@"
}

# shellcheck disable=SC2317  # called from the EXIT trap
_stop_daemon() { # PID: SIGTERM, then SIGKILL after 10 s
    local pid="$1"
    kill -TERM "${pid}" 2>/dev/null || return 0
    for _ in $(seq 1 50); do
        kill -0 "${pid}" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL "${pid}" 2>/dev/null || true
    wait "${pid}" 2>/dev/null || true
}

# shellcheck disable=SC2317  # invoked by the EXIT trap
_libvirt_cleanup() {
    local rc=$?
    set +e    # clean up everything, whatever fails; and (exit rc) below must not end the trap
    if [[ "${DOMAIN_DEFINED}" -eq 1 ]]; then
        virsh_ destroy "${DOMAIN}" >/dev/null 2>&1 || true
        virsh_ undefine "${DOMAIN}" >/dev/null 2>&1 || true
    fi
    rm -f "/var/log/libvirt/qemu/${DOMAIN}.log"*
    if [[ -n "${LIBVIRTD_PID}" ]]; then _stop_daemon "${LIBVIRTD_PID}"; fi
    if [[ -n "${VIRTLOGD_PID}" ]]; then _stop_daemon "${VIRTLOGD_PID}"; fi
    (exit "${rc}")
    _cleanup
}
trap _libvirt_cleanup EXIT

libvirt_answers() { timeout 20 virsh -c "${URI}" uri >/dev/null 2>&1; }

# virtlogd's socket is /run/libvirt/virtlogd-sock (/var/run is a link to /run).
virtlogd_listening() {
    socket_listening /run/libvirt/virtlogd-sock || socket_listening /var/run/libvirt/virtlogd-sock
}

# libvirt's QEMU driver resolves its built-in user and group, libvirt-qemu, before it reads
# qemu.conf (even with user = "root" there) and does not load without them. The
# libvirt-daemon-system package creates them; without it (CI installs only libvirt-daemon),
# create them here the same way, as system accounts.
ensure_qemu_account() {
    if ! getent group libvirt-qemu >/dev/null; then
        groupadd --system libvirt-qemu || lfail "groupadd libvirt-qemu failed"
        note "created the system group libvirt-qemu (libvirt-daemon-system is not installed)"
    fi
    if ! getent passwd libvirt-qemu >/dev/null; then
        useradd --system --gid libvirt-qemu --home-dir /var/lib/libvirt --no-create-home \
            --shell /usr/sbin/nologin --comment "Libvirt Qemu" libvirt-qemu || lfail "useradd libvirt-qemu failed"
        note "created the system user libvirt-qemu (libvirt-daemon-system is not installed)"
    fi
}

ensure_libvirtd() {
    if libvirt_answers; then
        note "libvirtd already answers on ${URI}; using it as it is"
        return 0
    fi
    [[ "${EUID}" -eq 0 ]] || skip "no libvirtd answers on ${URI}, and starting one needs root"
    local tool
    for tool in libvirtd virtlogd virsh; do
        command -v "${tool}" >/dev/null \
            || skip "${tool} is not installed (apt-get install libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients)"
    done
    ensure_qemu_account
    if ! virtlogd_listening; then
        virtlogd </dev/null >"${WORK}/virtlogd.log" 2>&1 &
        VIRTLOGD_PID=$!
        for _ in $(seq 1 100); do
            virtlogd_listening && break
            kill -0 "${VIRTLOGD_PID}" 2>/dev/null || lfail "virtlogd exited at start: $(tail -n 3 "${WORK}/virtlogd.log")"
            sleep 0.1
        done
        virtlogd_listening || lfail "virtlogd did not listen within 10 s"
        note "started virtlogd (pid ${VIRTLOGD_PID})"
    fi
    libvirtd </dev/null >"${LIBVIRTD_LOG}" 2>&1 &
    LIBVIRTD_PID=$!
    for _ in $(seq 1 60); do
        libvirt_answers && break
        kill -0 "${LIBVIRTD_PID}" 2>/dev/null || { LIBVIRTD_PID=""; lfail "libvirtd exited at start: $(tail -n 3 "${LIBVIRTD_LOG}")"; }
        sleep 0.5
    done
    libvirt_answers || lfail "libvirtd (pid ${LIBVIRTD_PID}) does not answer on ${URI} after 30 s"
    note "started libvirtd (pid ${LIBVIRTD_PID}), $(virsh -c "${URI}" version --daemon 2>/dev/null | grep -i 'daemon' | head -n 1)"
}

# The domain: qemu/libvirt-domain.xml with this test's name, socket, guest and console file.
write_domain_xml() {
    sed -e "s|<name>memx-test</name>|<name>${DOMAIN}</name>|" \
        -e "s|/run/memx/vol1.sock|${SOCK}|" \
        -e "s|/var/tmp/memx-guest/|${GUEST_DIR}/|g" \
        -e "s|<serial type='pty'>|<serial type='file'>\n      <source path='${GUEST_LOG}' append='on'/>|" \
        "${EXAMPLE_XML}" > "${DOMAIN_XML}"
    local needle
    for needle in "<name>${DOMAIN}</name>" "path='${SOCK}'" "<kernel>${GUEST_DIR}/vmlinuz</kernel>" \
        "<initrd>${GUEST_DIR}/initrd.gz</initrd>" "<source path='${GUEST_LOG}' append='on'/>" \
        "memx.test=multiqueue" "queues='${QUEUES}'" "<disk type='vhostuser' device='disk'>"; do
        grep -qF "${needle}" "${DOMAIN_XML}" \
            || fail "qemu/libvirt-domain.xml changed: the derived domain lacks ${needle} (update this script)"
    done
    if command -v virt-xml-validate >/dev/null; then
        virt-xml-validate "${DOMAIN_XML}" domain >/dev/null 2>&1 \
            || fail "the derived domain does not validate: $(virt-xml-validate "${DOMAIN_XML}" domain 2>&1 | tail -n 2)"
    fi
}

count() { grep -a -c -F "$1" "${BACKEND_LOG}" || true; }

# wait_count TEXT N SECONDS: until memx-vhost's log has N lines containing TEXT.
wait_count() {
    local deadline=$((SECONDS + $3))
    while (( $(count "$1") < $2 )); do
        (( SECONDS < deadline )) || return 1
        kill -0 "${BACKEND_PID}" 2>/dev/null || lfail "memx-vhost died (waiting for \"$1\")"
        sleep 0.2
    done
}

domstate() { virsh_ domstate "${DOMAIN}" 2>/dev/null | head -n 1 || true; }

# virsh start, after checking memx-vhost listens: libvirt does not start the backend, and a
# QEMU whose reconnecting vhost-user socket has no listener waits in device realize.
start_domain() {
    if [[ -z "${BACKEND_PID}" ]] || ! kill -0 "${BACKEND_PID}" 2>/dev/null || ! socket_listening "${SOCK}"; then
        lfail "memx-vhost is not listening on ${SOCK} before virsh start (libvirt never starts the backend: start memx-vhost first)"
    fi
    local out
    out="$(virsh_ start "${DOMAIN}" 2>&1)" || lfail "virsh start failed: ${out}"
    [[ "$(domstate)" == running ]] || lfail "domain is '$(domstate)' right after virsh start, not running"
    local pid
    pid="$(cat "/run/libvirt/qemu/${DOMAIN}.pid" 2>/dev/null || true)"
    note "virsh start: ${DOMAIN} running (QEMU pid ${pid:-?}, user $(stat -c %U "/proc/${pid:-0}" 2>/dev/null || echo '?'))"
}

# --- setup
ensure_libvirtd
MEMX_GUEST_DIR="${GUEST_DIR}" "${QEMU_DIR}/build-guest.sh" "${GUEST_DIR}" >"${WORK}/build-guest.log" 2>&1 \
    || fail "qemu/build-guest.sh ${GUEST_DIR} failed: $(tail -n 3 "${WORK}/build-guest.log")"
chmod 0755 "${WORK}" "${GUEST_DIR}"      # QEMU may run as libvirt-qemu: it must reach the socket
EXTRA_BACKEND_ARGS=(--log-level debug)
start_backend "${QUEUES}"
chmod 0666 "${SOCK}"                     # connect(2) needs write permission on the socket
if virsh_ domstate "${DOMAIN}" >/dev/null 2>&1; then
    fail "a domain named ${DOMAIN} already exists"
fi
write_domain_xml
# A fresh libvirtd probes QEMU's capabilities on first use (here: define); under TCG on a busy
# 2-core machine that takes up to a minute, once (cached in /var/cache/libvirt/qemu).
out="$(virsh_ define "${DOMAIN_XML}" 2>&1)" || lfail "virsh define failed: ${out}"
DOMAIN_DEFINED=1
note "defined ${DOMAIN} from qemu/libvirt-domain.xml (socket ${SOCK}, guest ${GUEST_DIR})"

if [[ "${MEMX_LIBVIRT_NEGATIVE:-}" == no-backend ]]; then
    note "self-check MEMX_LIBVIRT_NEGATIVE=no-backend: stopping memx-vhost before virsh start"
    stop_backend
fi

# --- 1. start; QEMU connects to memx-vhost; the guest's scenario runs to PASS.
start_domain
wait_count "frontend connected" 1 30 || lfail "QEMU never connected to memx-vhost (no \"frontend connected\" in its log)"
# Queue 0 starts twice: first for the firmware (SeaBIOS drives virtio-blk with one queue), then
# for the guest's driver, which starts queue 1 as well.
wait_count "queue 1 started" 1 90 || lfail "the guest never started queue 1 (no \"queue 1 started\" in memx-vhost's log)"
(( $(count "queue 0 started") >= 1 )) || lfail "queue 1 started but queue 0 never did"
note "QEMU connected to memx-vhost; the firmware and then the guest's driver started its queues"
deadline=$((SECONDS + GUEST_TIMEOUT))
while [[ "$(domstate)" == running ]]; do
    (( SECONDS < deadline )) || lfail "guest did not power off within ${GUEST_TIMEOUT} s"
    sleep 0.5
done
[[ "$(domstate)" == "shut off" ]] || lfail "domain is '$(domstate)' after the guest powered off, not shut off"
check_guest_log multiqueue
note "guest: $(grep -a -o 'MEMX-RESULT PASS.*' "${GUEST_LOG}" | tr -d '\r' | head -n 1); domain shut off"

# --- 2. start again and virsh destroy while the guest's queues run: memx-vhost survives.
connected=$(count "frontend connected")
started=$(count "queue 1 started")
disconnected=$(count "frontend disconnected")
start_domain
wait_count "frontend connected" $((connected + 1)) 30 || lfail "QEMU did not connect again after the second virsh start"
wait_count "queue 1 started" $((started + 1)) 90 || lfail "the guest's driver did not start its queues after the second virsh start"
out="$(virsh_ destroy "${DOMAIN}" 2>&1)" || lfail "virsh destroy failed: ${out}"
[[ "$(domstate)" == "shut off" ]] || lfail "domain is '$(domstate)' after virsh destroy, not shut off"
wait_count "frontend disconnected" $((disconnected + 1)) 20 || lfail "memx-vhost did not see QEMU go away after virsh destroy"
sleep 1
kill -0 "${BACKEND_PID}" 2>/dev/null || lfail "memx-vhost died after virsh destroy"
socket_listening "${SOCK}" || lfail "memx-vhost no longer listens on ${SOCK} after virsh destroy"
note "virsh destroy of the running domain: memx-vhost survived and listens on ${SOCK}"

# --- 3. undefine; memx-vhost stops cleanly.
out="$(virsh_ undefine "${DOMAIN}" 2>&1)" || lfail "virsh undefine failed: ${out}"
DOMAIN_DEFINED=0
if virsh_ domstate "${DOMAIN}" >/dev/null 2>&1; then lfail "${DOMAIN} still exists after virsh undefine"; fi
note "virsh undefine: ${DOMAIN} is gone"
stop_backend
pass
