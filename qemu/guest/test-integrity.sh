#!/bin/sh
# shellcheck shell=dash
# test-integrity.sh — guest scenario "integrity".
#
# Usage: memx.test=integrity [memx.arg=MIB] [memx.serial=S]   (run by /init)
#
#  1. checks /sys/block/vda/serial against memx.serial (if given);
#  2. writes MIB MiB (default 16) of random data at offset 0 with O_DIRECT,
#     drops caches, reads back and compares md5;
#  3. does the same for the last MiB of the disk, then re-checks the first region;
#  4. mkfs.ext4, mount, writes files with known md5s, sync, umount,
#     e2fsck -fn must be clean, drop caches, mount again, verify md5s, umount,
#     e2fsck -fn again.
# shellcheck source=lib.sh
. /memx/lib.sh

N="${MEMX_ARG:-16}"
case "$N" in ''|*[!0-9]*) fail "memx.arg must be a number of MiB, got '$N'" ;; esac

check_serial

size="$(disk_bytes)"
say "disk size $size bytes; raw region $N MiB"
[ "$size" -ge $(((N + 2) * MiB)) ] || fail "disk too small ($size bytes) for $N MiB + tail"

# --- raw head region
random_file /tmp/head "$N"
want_head="$(md5_of /tmp/head)"
write_dev /tmp/head 0 "$MiB"
drop_caches
got="$(md5_dev 0 $((N * MiB)))"
[ "$got" = "$want_head" ] || fail "head region md5 mismatch: got $got want $want_head"
say "head region ok ($want_head)"

# --- raw tail region: the last MiB of the disk (4 KiB aligned)
tail_off=$(((size - MiB) / 4096 * 4096))
random_file /tmp/tail 1
want_tail="$(md5_of /tmp/tail)"
write_dev /tmp/tail "$tail_off" 4096
drop_caches
got="$(md5_dev "$tail_off" "$MiB")"
[ "$got" = "$want_tail" ] || fail "tail region (offset $tail_off) md5 mismatch: got $got want $want_tail"
got="$(md5_dev 0 $((N * MiB)))"
[ "$got" = "$want_head" ] || fail "head region changed after tail write: got $got want $want_head"
say "tail region ok at offset $tail_off ($want_tail)"
rm -f /tmp/head /tmp/tail

# --- ext4
mkfs.ext4 -F -q -L memxtest "$DEV" > /tmp/mkfs.log 2>&1 || fail "mkfs.ext4 failed: $(tr '\n' ' ' < /tmp/mkfs.log)"
mount -t ext4 "$DEV" /mnt || fail "mount ext4 failed"
mkdir -p /mnt/dir
dd if=/dev/urandom of=/mnt/small bs=4096 count=1 2>/dev/null
dd if=/dev/urandom of=/mnt/one-mib bs="$MiB" count=1 2>/dev/null
dd if=/dev/urandom of=/mnt/odd-size bs=1000 count=3333 2>/dev/null
dd if=/dev/urandom of=/mnt/dir/big bs="$MiB" count=4 2>/dev/null
i=0
while [ "$i" -lt 16 ]; do
    dd if=/dev/urandom of="/mnt/dir/f$i" bs=$((512 + i * 777)) count=1 2>/dev/null
    i=$((i + 1))
done
(cd /mnt && find . -type f ! -path './lost+found/*' | sort | xargs md5sum) > /tmp/sums \
    || fail "md5sum of ext4 files failed"
say "ext4: wrote $(wc -l < /tmp/sums) files"
sync
umount /mnt || fail "umount failed"

e2fsck -fn "$DEV" > /tmp/fsck.log 2>&1 || fail "e2fsck -fn not clean: $(tail -n 5 /tmp/fsck.log | tr '\n' ' ')"
drop_caches
mount -t ext4 "$DEV" /mnt || fail "second mount failed"
(cd /mnt && md5sum -c /tmp/sums) > /tmp/md5c.log 2>&1 \
    || fail "ext4 checksums differ after remount: $(grep -v ': OK' /tmp/md5c.log | head -n 3 | tr '\n' ' ')"
umount /mnt || fail "second umount failed"
e2fsck -fn "$DEV" > /tmp/fsck.log 2>&1 || fail "e2fsck -fn after remount not clean: $(tail -n 5 /tmp/fsck.log | tr '\n' ' ')"
say "ext4 ok: fsck clean, $(wc -l < /tmp/sums) files verified after remount"
