#!/bin/sh
# shellcheck shell=dash
# test-fio.sh — guest scenario "fio": fio writes and verifies data on the MemX disk.
#
# Usage: memx.test=fio [memx.arg=MIB]   (run by /init; needs the tools disk on /tools,
#        i.e. run-guest.sh --tools, which needs fio on the host)
#
# Region: MIB MiB (default 32) of /dev/vda from 64 MiB on (past the "records" region, so
# both scenarios can run in one boot). Two fio runs of the same job, 4 KiB random writes
# with O_DIRECT through libaio at queue depth 16, each block once, with a crc32c header
# (offset, length, seed, checksum) in every block:
#   1. "write":  writes the region, then reads every block back and verifies it;
#   2. "verify": --verify_only: writes nothing, reads every block again and verifies it
#                against the same job (same seed, so the same offsets and contents).
# --verify_fatal=1: the first bad block stops fio. The scenario fails if fio exits
# non-zero, reports a job error (err= other than 0: an I/O error), or issued fewer
# reads or writes than the region has blocks (--verify_only counts the writes it
# skips). While fio runs it prints, every half second when something changed,
#   MEMX-PROGRESS fio <pass> <state> <pct>%
# pass: write | verify; state: writing | verifying | reading | finishing, or running
# while fio has not said more yet (its first second or so); pct: fio's progress of the
# run, in which the write pass's writes end near 50 %. The host uses these lines to
# act while fio writes.
# shellcheck source=lib.sh
. /memx/lib.sh

MIB_ARG="${MEMX_ARG:-32}"
case "$MIB_ARG" in ''|*[!0-9]*|0) fail "memx.arg must be a size in MiB, got '$MIB_ARG'" ;; esac
OFFSET_MIB=64
BLOCKS=$((MIB_ARG * 256))
[ "$(disk_bytes)" -ge $(((OFFSET_MIB + MIB_ARG) * MiB)) ] \
    || fail "disk too small for $MIB_ARG MiB at $OFFSET_MIB MiB"
[ -x /tools/bin/fio ] \
    || fail "no /tools/bin/fio: the tools disk is not attached (run-guest.sh --tools; the host needs fio)"

# fio from the tools disk, through the tools disk's own loader and libraries.
fio() {
    if [ -e /tools/lib/ld-linux-x86-64.so.2 ]; then
        /tools/lib/ld-linux-x86-64.so.2 --library-path /tools/lib /tools/bin/fio "$@"
    else
        /tools/bin/fio "$@"     # a static fio (MEMX_FIO on the host)
    fi
}

# The job both passes run. randrepeat + a fixed seed: the verify pass regenerates the
# write pass's offsets and block contents.
set -- --name=memx-verify --filename="$DEV" --offset="${OFFSET_MIB}M" --size="${MIB_ARG}M" \
    --rw=randwrite --bs=4k --direct=1 --ioengine=libaio --iodepth=16 \
    --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
    --randrepeat=1 --randseed=2010 --eta=always --eta-interval=500ms

# run_pass NAME [EXTRA FIO ARGS] — run the job; its output goes to /tmp/fio-NAME.log, the
# eta lines become MEMX-PROGRESS lines. Fails the scenario unless fio exits 0 with
# err= 0 and issued BLOCKS writes and BLOCKS verifying reads.
run_pass() {
    pass="$1"
    shift
    log="/tmp/fio-$pass.log"
    say "fio $pass pass: fio $*"
    { fio "$@" 2>&1; echo "fio-exit-status $?"; } | tr '\r' '\n' | awk -v pass="$pass" -v out="$log" '
        /^Jobs:/ {
            state = "running"
            if (match($0, /: \[[A-Za-z_]\(/)) {
                c = substr($0, RSTART + 3, 1)
                if (c == "w" || c == "W") state = "writing"
                else if (c == "V") state = "verifying"
                else if (c == "r" || c == "R") state = "reading"
                else if (c == "f" || c == "E" || c == "_") state = "finishing"
                else state = "state-" c
            }
            pct = "0"
            if (match($0, /\]\[[0-9.]+%\]/)) pct = int(substr($0, RSTART + 2, RLENGTH - 4))
            if (state != last_state || pct != last_pct) {
                printf "MEMX-PROGRESS fio %s %s %s%%\n", pass, state, pct
                fflush()
                last_state = state
                last_pct = pct
            }
            next
        }
        NF { print > out }
    '
    [ -s "$log" ] || fail "fio $pass pass left no output"
    rc="$(sed -n 's/^fio-exit-status //p' "$log")"
    issued="$(sed -n 's/.*issued rwts: total=\([0-9]*\),\([0-9]*\),.*/\1 \2/p' "$log" | head -n 1)"
    reads="${issued% *}"
    writes="${issued#* }"
    if [ "$rc" != 0 ] || ! grep -q 'err= 0:' "$log" || [ "${reads:-0}" -ne "$BLOCKS" ] \
        || [ "${writes:-0}" -ne "$BLOCKS" ]; then
        sed 's/^/memx: fio: /' "$log" | head -n 60
        errors="$(grep -E '^(verify|crc32c|fio): |err= *[1-9]' "$log" | head -n 2 | tr -s ' \n' ' ')"
        fail "fio $pass pass: exit status ${rc:-none}, ${writes:-no} writes and ${reads:-no} reads of $BLOCKS blocks${errors:+: $errors}"
    fi
    done_what="$reads blocks read back and verified (crc32c)"
    [ "$pass" = verify ] || done_what="$writes blocks written, $done_what"
    say "fio $pass pass ok: $done_what$(
        sed -nE 's/^ *(read|write): IOPS=([^,]*),.*\(([^)]*)\).*/; \1 \2 IOPS, \3/p' "$log" | tr -d '\n')"
}

say "fio: $(cat /tools/fio-version 2>/dev/null), $MIB_ARG MiB ($BLOCKS blocks of 4 KiB) at $OFFSET_MIB MiB of $DEV"
run_pass write "$@"
drop_caches
run_pass verify "$@" --verify_only
say "fio ok: $BLOCKS blocks written once and verified twice"
