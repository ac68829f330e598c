#!/bin/sh
# shellcheck shell=dash
# test-migrate.sh — guest scenario "migrate" (used by the live-migration test and benchmark).
#
# Usage: memx.test=migrate [memx.arg=R]   (run by /init)
#
# A write/verify loop long enough to span several live migrations. Writes R records
# (default 1500, rounded up to a multiple of 25) of 4 KiB, one O_DIRECT write + flush
# each, to consecutive 4 KiB blocks starting at 1 MiB; record k holds 256 lines
# "R<k:08d>.<line:03d>.g\n" (distinct content per record, as in "records").
# After every 25 records it prints "MEMX-PROGRESS k" and reads the last 25 records
# back with O_DIRECT (one dd of 25 4 KiB reads) and compares them: those reads make
# the backend write guest RAM, which is what the vhost dirty log has to catch while a
# migration runs. Each read-back is timed with the shell's $EPOCHREALTIME and
# printed as "MEMX-READLAT <us> <k>" (the host takes the first one after switchover).
# At the end it drops caches and verifies every record; lost, stale or misplaced
# records are reported by index.
# shellcheck source=lib.sh
. /memx/lib.sh

R="${MEMX_ARG:-1500}"
case "$R" in ''|*[!0-9]*) fail "memx.arg must be a record count, got '$R'" ;; esac
CHUNK=25
R=$(((R + CHUNK - 1) / CHUNK * CHUNK))
[ "$R" -gt 0 ] || fail "memx.arg must be at least 1"
prepare_records "$R" g

# NOW = microseconds from the shell's $EPOCHREALTIME ("seconds.micros"), without forking.
now_us() {
    t="${EPOCHREALTIME:-0.0}"
    s="${t%.*}"
    u="${t#*.}"
    case "$s$u" in ''|*[!0-9]*) NOW=0; return ;; esac
    # strip leading zeros so $((...)) does not read octal
    while [ "${u#0}" != "$u" ]; do u="${u#0}"; done
    NOW=$((s * 1000000 + ${u:-0}))
}
[ -n "${EPOCHREALTIME:-}" ] || say "no \$EPOCHREALTIME in this shell: MEMX-READLAT lines will read 0"

say "writing $R records, reading back every $CHUNK"
k=0
while [ "$k" -lt "$R" ]; do
    dd if=/tmp/records of="$DEV" bs=4096 skip="$k" seek=$((BASE + k)) count=1 \
        oflag=direct conv=fsync,notrunc 2>/tmp/dd.err \
        || fail "write of record $k failed: $(tr '\n' ' ' < /tmp/dd.err)"
    k=$((k + 1))
    if [ $((k % CHUNK)) -eq 0 ]; then
        echo "MEMX-PROGRESS $k"
        first=$((k - CHUNK))
        now_us
        t0=$NOW
        dd if="$DEV" of=/tmp/check bs=4096 skip=$((BASE + first)) count="$CHUNK" iflag=direct 2>/tmp/dd.err \
            || fail "read-back of records $first..$((k - 1)) failed: $(tr '\n' ' ' < /tmp/dd.err)"
        now_us
        echo "MEMX-READLAT $((NOW - t0)) $k"
        if ! cmp -s -n $((CHUNK * 4096)) /tmp/check /tmp/records 0 $((first * 4096)); then
            bad="$(cmp -l -n $((CHUNK * 4096)) /tmp/check /tmp/records 0 $((first * 4096)) 2>/dev/null \
                | awk -v f="$first" '{ r = f + int(($1 - 1) / 4096); if (!(r in s)) { s[r] = 1; n++; if (n <= 5) l = l " " r } } END { printf "%d bad record(s):%s", n, l }')"
            fail "read-back of records $first..$((k - 1)) differs: $bad"
        fi
    fi
done

verify_records "$R"
say "migrate ok: $R records verified"
