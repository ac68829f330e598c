#!/bin/sh
# shellcheck shell=dash
# init.sh — /init of the MemX test guest (busybox ash, installed by build-guest.sh).
#
# Usage (kernel command line):
#   memx.test=NAME      scenario to run: /memx/test-NAME.sh (integrity, multiqueue, records,
#                       fio, migrate); NAME1,NAME2,... runs several in turn in one boot
#   memx.arg=X          optional scenario argument (exported as MEMX_ARG); with several
#                       scenarios, X1,X2,... gives the i-th one the i-th field (may be empty)
#   memx.serial=S       optional expected virtio-blk serial (exported as MEMX_SERIAL)
#   memx.tools=SERIAL   a read-only tools disk with this serial is attached (run-guest.sh
#                       --tools): wait for it and mount it on /tools. It must not be vda,
#                       which every scenario uses as the MemX disk.
#
# Mounts proc/sys/devtmpfs, loads the modules listed in /memx/modules.list in
# order, waits for /dev/vda (and the tools disk), runs the scenarios until one
# fails, checks dmesg for I/O errors on vda, prints exactly one line
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
ARGS=""
MEMX_SERIAL=""
TOOLS_SERIAL=""
read -r cmdline < /proc/cmdline
for word in $cmdline; do
    case "$word" in
        memx.test=*) TEST="${word#memx.test=}" ;;
        memx.arg=*) ARGS="${word#memx.arg=}" ;;
        memx.serial=*) MEMX_SERIAL="${word#memx.serial=}" ;;
        memx.tools=*) TOOLS_SERIAL="${word#memx.tools=}" ;;
    esac
done
export MEMX_SERIAL

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
SCENARIOS="$(printf '%s' "$TEST" | tr ',' ' ')"
for name in $SCENARIOS; do
    [ -f "/memx/test-$name.sh" ] || finish FAIL "unknown scenario $name (no /memx/test-$name.sh)"
done

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

# The tools disk (fio and its libraries): found by its serial, never by its name, and
# it must not have taken vda, the disk the scenarios test.
if [ -n "$TOOLS_SERIAL" ]; then
    i=0
    while :; do
        tools=""
        for d in /sys/block/vd*; do
            if [ "$(cat "$d/serial" 2>/dev/null)" = "$TOOLS_SERIAL" ]; then tools="${d##*/}"; fi
        done
        if [ -n "$tools" ] && [ -b "/dev/$tools" ]; then break; fi
        i=$((i + 1))
        [ "$i" -le 200 ] || finish FAIL "no disk with serial $TOOLS_SERIAL (the tools disk) after 20 s"
        sleep 0.1
    done
    [ "$tools" != vda ] || finish FAIL "the tools disk enumerated as vda; the MemX disk must be vda"
    mkdir -p /tools
    out="$(mount -t ext4 -o ro "/dev/$tools" /tools 2>&1)" \
        || finish FAIL "cannot mount the tools disk /dev/$tools: $out"
    say "tools disk $tools ($(($(cat "/sys/block/$tools/size") / 2048)) MiB) on /tools: $(cat /tools/fio-version 2>/dev/null)"
fi

say "kernel $(uname -r), $(nproc) cpu(s), vda $(cat /sys/block/vda/size) sectors, test $TEST arg '${ARGS}'"

# Run the scenarios in turn; the first failure ends the run. With one scenario it gets
# memx.arg whole; with several, the i-th gets the i-th comma-separated field.
status=PASS
reason=""
count=0
for name in $SCENARIOS; do count=$((count + 1)); done
i=0
for name in $SCENARIOS; do
    i=$((i + 1))
    if [ "$count" -eq 1 ]; then
        MEMX_ARG="$ARGS"
    else
        MEMX_ARG="$(printf '%s\n' "$ARGS" | awk -F, -v i="$i" '{ print $i }')"
        say "scenario $i of $count: $name arg '$MEMX_ARG'"
    fi
    export MEMX_ARG
    rm -f /tmp/memx-reason
    start="$(cut -d' ' -f1 /proc/uptime)"
    if sh "/memx/test-$name.sh"; then
        ok=1
    else
        ok=0
    fi
    label=scenario
    [ "$count" -eq 1 ] || label="scenario $name"
    say "$label took $(awk -v s="$start" '{printf "%.1f", $1 - s}' /proc/uptime) s"
    if [ "$ok" -eq 0 ]; then
        status=FAIL
        reason="$(cat /tmp/memx-reason 2>/dev/null || true)"
        reason="${reason:-scenario exited non-zero}"
        [ "$count" -eq 1 ] || reason="$name: $reason"
        break
    fi
done

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
