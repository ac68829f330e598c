#!/bin/sh
# shellcheck shell=dash
# init.sh — /init of the MemX test guest (busybox ash, installed by build-guest.sh).
#
# Usage (kernel command line):
#   memx.test=NAME      scenario to run: /memx/test-NAME.sh (integrity, multiqueue, records)
#   memx.arg=X          optional scenario argument (exported as MEMX_ARG)
#   memx.serial=S       optional expected virtio-blk serial (exported as MEMX_SERIAL)
#
# Mounts proc/sys/devtmpfs, loads the modules listed in /memx/modules.list in
# order, waits for /dev/vda, runs the scenario, checks dmesg for I/O errors on
# vda, prints exactly one line
#   MEMX-RESULT PASS <name>            or
#   MEMX-RESULT FAIL <name> <reason>
# on the console and powers off (-no-reboot makes QEMU exit).
# A scenario fails by writing its reason to /tmp/memx-reason and exiting non-zero.

export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
exec 0</dev/console 1>/dev/console 2>&1
mkdir -p /dev/pts /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true

TEST=""
MEMX_ARG=""
MEMX_SERIAL=""
read -r cmdline < /proc/cmdline
for word in $cmdline; do
    case "$word" in
        memx.test=*) TEST="${word#memx.test=}" ;;
        memx.arg=*) MEMX_ARG="${word#memx.arg=}" ;;
        memx.serial=*) MEMX_SERIAL="${word#memx.serial=}" ;;
    esac
done
export MEMX_ARG MEMX_SERIAL

finish() {
    # $1 = PASS|FAIL, $2 = reason (FAIL only). Prints the single result line.
    sync
    if [ "$1" = PASS ]; then
        printf '\nMEMX-RESULT PASS %s\n' "${TEST:-none}"
    else
        printf '\nMEMX-RESULT FAIL %s %s\n' "${TEST:-none}" "$(printf '%s' "$2" | tr '\n' ' ')"
    fi
    sleep 0.2
    poweroff -f
    sleep 10
}

say() { printf 'memx-init: %s\n' "$*"; }

[ -n "$TEST" ] || finish FAIL "no memx.test= on the kernel command line"
[ -f "/memx/test-$TEST.sh" ] || finish FAIL "unknown scenario (no /memx/test-$TEST.sh)"

# Load modules in dependency order (the list is built from modules.dep).
while read -r name path optional; do
    if ! out="$(insmod "$path" 2>&1)"; then
        if [ "$optional" = 1 ]; then
            say "optional module $name not loaded: $out"
        else
            finish FAIL "insmod $name failed: $out"
        fi
    fi
done < /memx/modules.list

i=0
while [ ! -b /dev/vda ]; do
    i=$((i + 1))
    [ "$i" -le 200 ] || finish FAIL "no /dev/vda after 20 s"
    sleep 0.1
done
say "kernel $(uname -r), $(nproc) cpu(s), vda $(cat /sys/block/vda/size) sectors, test $TEST arg '${MEMX_ARG}'"

rm -f /tmp/memx-reason
start="$(cut -d' ' -f1 /proc/uptime)"
if sh "/memx/test-$TEST.sh"; then
    status=PASS
else
    status=FAIL
fi
say "scenario took $(awk -v s="$start" '{printf "%.1f", $1 - s}' /proc/uptime) s"

reason=""
[ "$status" = PASS ] || reason="$(cat /tmp/memx-reason 2>/dev/null || true)"
reason="${reason:-scenario exited non-zero}"

ioerr="$(dmesg | grep -E 'I/O error|blk_update_request|critical medium error|EXT4-fs error' | grep vda || true)"
if [ -n "$ioerr" ]; then
    echo "$ioerr" | sed 's/^/memx-init: dmesg: /'
    printf '\nMEMX-IOERR\n'
    if [ "$status" = PASS ]; then
        finish FAIL "I/O errors on vda in dmesg"
    fi
    finish FAIL "I/O errors on vda in dmesg; scenario: $reason"
fi

if [ "$status" = PASS ]; then
    finish PASS
fi
finish FAIL "$reason"
