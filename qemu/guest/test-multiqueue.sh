#!/bin/sh
# shellcheck shell=dash
# test-multiqueue.sh — guest scenario "multiqueue".
#
# Usage: memx.test=multiqueue [memx.arg=MIB]   (run by /init; boot with -smp 2, num-queues>=2)
#
# Requires at least 2 directories in /sys/block/vda/mq/ (prints the count), then
# runs two writer/reader jobs pinned to CPU 0 and CPU 1 (taskset) on disjoint
# regions of MIB MiB each (default 8), with O_DIRECT, and verifies both regions
# in the job and again after dropping caches. If blk-mq debugfs is available it
# also requires that hardware queues 0 and 1 were both run during the jobs.
# shellcheck source=lib.sh
. /memx/lib.sh

N="${MEMX_ARG:-8}"
case "$N" in ''|*[!0-9]*) fail "memx.arg must be a number of MiB, got '$N'" ;; esac

nq="$(find /sys/block/vda/mq -mindepth 1 -maxdepth 1 -type d | wc -l)"
say "vda has $nq hardware queue(s); $(nproc) cpu(s)"
[ "$nq" -ge 2 ] || fail "expected at least 2 queues in /sys/block/vda/mq, found $nq"
[ "$(nproc)" -ge 2 ] || fail "need at least 2 CPUs, found $(nproc)"
size="$(disk_bytes)"
[ "$size" -ge $((2 * N * MiB + MiB)) ] || fail "disk too small ($size bytes) for 2 x $N MiB"

# Region A at 0, region B at the middle of the disk.
off_a=0
off_b=$((size / 2 / MiB * MiB))
random_file /tmp/a "$N"
random_file /tmp/b "$N"
want_a="$(md5_of /tmp/a)"
want_b="$(md5_of /tmp/b)"

hctx_runs > /tmp/runs.before

# job NAME CPU FILE OFFSET — write with O_DIRECT in 64 KiB requests, read back.
job() {
    taskset -c "$2" sh -c "
        dd if=$3 of=$DEV bs=65536 seek=$(($4 / 65536)) oflag=direct conv=fsync,notrunc 2>/tmp/$1.err || exit 1
        dd if=$DEV bs=65536 skip=$(($4 / 65536)) count=$((N * 16)) iflag=direct 2>>/tmp/$1.err | md5sum | cut -d' ' -f1 > /tmp/$1.md5
    "
}
job a 0 /tmp/a "$off_a" &
pid_a=$!
job b 1 /tmp/b "$off_b" &
pid_b=$!
rc_a=0
rc_b=0
wait "$pid_a" || rc_a=$?
wait "$pid_b" || rc_b=$?
[ "$rc_a" -eq 0 ] || fail "job on cpu0 failed ($rc_a): $(tr '\n' ' ' < /tmp/a.err)"
[ "$rc_b" -eq 0 ] || fail "job on cpu1 failed ($rc_b): $(tr '\n' ' ' < /tmp/b.err)"
[ "$(cat /tmp/a.md5)" = "$want_a" ] || fail "cpu0 region read-back mismatch"
[ "$(cat /tmp/b.md5)" = "$want_b" ] || fail "cpu1 region read-back mismatch"

hctx_runs > /tmp/runs.after
if [ -s /tmp/runs.after ]; then
    busy=0
    while read -r q after; do
        before="$(awk -v q="$q" '$1 == q {print $2}' /tmp/runs.before)"
        delta=$((after - ${before:-0}))
        say "hctx$q run count +$delta"
        [ "$delta" -gt 0 ] && busy=$((busy + 1))
    done < /tmp/runs.after
    [ "$busy" -ge 2 ] || fail "only $busy hardware queue(s) were used by the pinned jobs"
else
    say "blk-mq debugfs not available; per-queue use not checked"
fi

drop_caches
got="$(md5_dev "$off_a" $((N * MiB)))"
[ "$got" = "$want_a" ] || fail "region A mismatch after drop_caches"
got="$(md5_dev "$off_b" $((N * MiB)))"
[ "$got" = "$want_b" ] || fail "region B mismatch after drop_caches"
say "multiqueue ok: 2 pinned jobs x $N MiB verified"
