#!/bin/sh
# shellcheck shell=dash
# lib.sh — helpers sourced by the guest scenario scripts (/memx/test-*.sh).
#
# Usage: . /memx/lib.sh
#
# Scenario contract: exit 0 on success; on failure call `fail "reason"`, which
# records the reason in /tmp/memx-reason (read by /init) and exits 1.

MiB=1048576
DEV=/dev/vda

say() { printf 'memx: %s\n' "$*"; }

fail() {
    printf '%s\n' "$*" > /tmp/memx-reason
    say "FAIL: $*"
    exit 1
}

# Flush dirty data and drop the page cache so the next read hits the device.
drop_caches() {
    sync
    echo 3 > /proc/sys/vm/drop_caches
}

# Size of /dev/vda in bytes.
disk_bytes() {
    echo $(($(cat /sys/block/vda/size) * 512))
}

# md5 of a file.
md5_of() {
    md5sum "$1" | cut -d' ' -f1
}

# md5 of LEN bytes of /dev/vda at byte offset OFF, read with O_DIRECT.
# Both must be multiples of 4096.
md5_dev() {
    dd if="$DEV" bs=4096 skip="$(($1 / 4096))" count="$(($2 / 4096))" iflag=direct 2>/dev/null \
        | md5sum | cut -d' ' -f1
}

# Write FILE to /dev/vda at byte offset OFF (multiple of 4096) with O_DIRECT and
# a final flush. BS is the request size (default 64K).
write_dev() {
    dd if="$1" of="$DEV" bs="${3:-65536}" seek="$(($2 / ${3:-65536}))" oflag=direct conv=fsync,notrunc 2>/tmp/dd.err \
        || fail "dd write of $1 at offset $2 failed: $(tr '\n' ' ' < /tmp/dd.err)"
}

# Fill FILE with MIB MiB of random data.
random_file() {
    dd if=/dev/urandom of="$1" bs=$MiB count="$2" 2>/dev/null || fail "cannot create $1"
}

# If MEMX_SERIAL is set, /sys/block/vda/serial must equal it.
check_serial() {
    [ -n "${MEMX_SERIAL:-}" ] || { say "no memx.serial given; serial not checked"; return 0; }
    [ -r /sys/block/vda/serial ] || fail "/sys/block/vda/serial missing"
    got="$(cat /sys/block/vda/serial 2>/dev/null || true)"
    [ "$got" = "$MEMX_SERIAL" ] || fail "serial mismatch: got '$got', want '$MEMX_SERIAL'"
    say "serial ok: '$got'"
}

# Print per-hardware-queue "run" counters (blk-mq debugfs), one "N count" per line.
hctx_runs() {
    for d in /sys/kernel/debug/block/vda/hctx*; do
        [ -r "$d/run" ] || continue
        echo "${d##*hctx} $(cat "$d/run")"
    done
}

# prepare_records R TAG — the record region of the "records" and "migrate" scenarios: checks
# the disk holds R records of 4 KiB from block BASE (1 MiB), writes their contents to
# /tmp/records (record k is 256 lines "R<k:08d>.<line:03d>.TAG\n", so a lost, stale or
# misplaced record is detected) and zeroes the region on the disk.
BASE=256
prepare_records() {
    [ "$(disk_bytes)" -ge $(((BASE + $1) * 4096)) ] || fail "disk too small for $1 records"
    awk -v n="$1" -v tag="$2" 'BEGIN { for (k = 0; k < n; k++) for (l = 0; l < 256; l++) printf "R%08d.%03d.%s\n", k, l, tag }' \
        > /tmp/records
    [ "$(wc -c < /tmp/records)" -eq $(($1 * 4096)) ] || fail "record file has wrong size"
    dd if=/dev/zero of="$DEV" bs=4096 seek="$BASE" count="$1" oflag=direct conv=fsync,notrunc 2>/tmp/dd.err \
        || fail "zeroing the record region failed: $(tr '\n' ' ' < /tmp/dd.err)"
    drop_caches
}

# verify_records R — drops caches, reads the R records back from the disk (O_DIRECT) and
# compares them with /tmp/records; fails naming the first bad records.
verify_records() {
    drop_caches
    dd if="$DEV" of=/tmp/readback bs=4096 skip="$BASE" count="$1" iflag=direct 2>/tmp/dd.err \
        || fail "read-back failed: $(tr '\n' ' ' < /tmp/dd.err)"
    if ! cmp -s /tmp/records /tmp/readback; then
        bad="$(cmp -l /tmp/records /tmp/readback 2>/dev/null | awk '{ r = int(($1 - 1) / 4096); if (!(r in s)) { s[r] = 1; n++; if (n <= 5) l = l " " r } } END { printf "%d bad record(s), first:%s", n, l }')"
        fail "record verification failed: $bad"
    fi
}
