#!/bin/sh
# shellcheck shell=dash
# test-records.sh — guest scenario "records" (used by the backend-reconnect test).
#
# Usage: memx.test=records [memx.arg=R]   (run by /init)
#
# Writes R records (default 400) of 4 KiB, one O_DIRECT write + flush each, to
# consecutive 4 KiB blocks starting at 1 MiB. Record k consists of 256 lines
# "R<k:08d>.<line:03d>.m\n", so a lost, stale or misplaced record is detected.
# The region is zeroed first. Prints "MEMX-PROGRESS k" after every 50 records
# (k = records written so far) so the host can kill the backend mid-I/O.
# At the end drops caches and verifies every record; any failed write or
# mismatching record fails the scenario.
# shellcheck source=lib.sh
. /memx/lib.sh

R="${MEMX_ARG:-400}"
case "$R" in ''|*[!0-9]*) fail "memx.arg must be a record count, got '$R'" ;; esac
prepare_records "$R" m
say "writing $R records"

k=0
while [ "$k" -lt "$R" ]; do
    dd if=/tmp/records of="$DEV" bs=4096 skip="$k" seek=$((BASE + k)) count=1 \
        oflag=direct conv=fsync,notrunc 2>/tmp/dd.err \
        || fail "write of record $k failed: $(tr '\n' ' ' < /tmp/dd.err)"
    k=$((k + 1))
    [ $((k % 50)) -eq 0 ] && echo "MEMX-PROGRESS $k"
done

verify_records "$R"
say "records ok: $R records verified"
