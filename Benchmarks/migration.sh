#!/usr/bin/env bash
# migration.sh: live migration of a running TCG guest, qemu-storage-daemon on a shared RAM file
# vs memx-vhost on memory servers, side by side: total migration time, downtime, and the
# guest's first disk read-back after the switchover. Prints one markdown table.
#
# Each run is qemu/tests/guest-migration.sh in bench mode (MEMX_MIGRATION_MODE=bench): backend A
# and backend B serve one disk (qsd: two qemu-storage-daemon processes on one /dev/shm file with
# locking=off; memx: two memx-vhost on the same 2 memx-servers, B with --standby), the guest
# runs the "migrate" scenario (an O_DIRECT write + flush per 4 KiB record, and a timed O_DIRECT
# read-back of the last 25 records every 25), QEMU-A boots on A and at guest progress 100 it is
# migrated to QEMU-B on B, then straight back to QEMU-E on A, where it must finish
# with every record verified (a run that does not counts as failed). query-migrate's total-time and
# downtime are taken from the source's QMP; the read-back is the first MEMX-READLAT the guest
# prints on the destination after a MEMX-PROGRESS line there (so it started after the
# switchover). Both migrations run at max-bandwidth 4 GiB/s (not QEMU's 32 MiB/s default), so
# the numbers are the backends' and TCG's, not the throttle's.
#
# Usage: Benchmarks/migration.sh
#
# Environment (all optional):
#   ROUNDS=3             runs per backend (alternating qsd/memx, then memx/qsd); cells are medians
#   ONLY=both            qsd | memx | both
#   MEMX_ARGS=           extra memx-vhost flags for both memx-vhost processes (e.g. to compare a
#                        handoff option with and without: run twice, once with MEMX_ARGS set)
#   MEMX_CACHE=4M        memx-vhost --cache (lib.sh's default for memx-remote)
#   RECORDS=1000         records the guest writes per run (it must outlast both migrations; the
#                        guest then finishes on A and verifies every record, or the run fails)
#   MEMX_VHOST, MEMX_SERVER  binaries to use; unset: build both in release mode (SwiftPM)
#   SKIP_BUILD=0         1 = use the release binaries already built
#   MEMX_GUEST_DIR       guest build directory (default /var/tmp/memx-guest)
#   OUT=                 also write the markdown table to this file
#   KEEP_TMP=0           1 = keep the per-run logs
set -euo pipefail

ROUNDS=${ROUNDS:-3}
ONLY=${ONLY:-both}
RECORDS=${RECORDS:-1000}
SKIP_BUILD=${SKIP_BUILD:-0}
OUT=${OUT:-}
KEEP_TMP=${KEEP_TMP:-0}

die() { echo "migration: error: $*" >&2; exit 1; }
note() { echo "migration: $*" >&2; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
DRIVER="$REPO/qemu/tests/guest-migration.sh"

case "$ONLY" in qsd | memx | both) ;; *) die "ONLY must be qsd, memx or both (got '$ONLY')" ;; esac
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
[[ "$RECORDS" =~ ^[0-9]+$ ]] || die "RECORDS must be a number"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
if [[ "$ONLY" != memx ]]; then
    command -v qemu-storage-daemon >/dev/null || die "qemu-storage-daemon not found (apt-get install qemu-utils)"
fi

# --- Binaries ------------------------------------------------------------------------------
if [[ "$ONLY" != qsd && ( -z "${MEMX_VHOST:-}" || -z "${MEMX_SERVER:-}" ) ]]; then
    command -v swift >/dev/null || die "swift is not in PATH (or set MEMX_VHOST and MEMX_SERVER)"
    BIN=$(swift build -c release --show-bin-path)
    if [[ "$SKIP_BUILD" != 1 ]]; then
        note "building memx-vhost and memx-server (release)…"
        BUILD_LOG=$(mktemp /tmp/memx-migration-build.XXXXXX.log)
        { swift build -c release --product memx-vhost && swift build -c release --product memx-server; } \
            >"$BUILD_LOG" 2>&1 || die "building failed; see $BUILD_LOG. ONLY=qsd measures qsd alone."
        rm -f "$BUILD_LOG"
    fi
    export MEMX_VHOST="${MEMX_VHOST:-$BIN/memx-vhost}" MEMX_SERVER="${MEMX_SERVER:-$BIN/memx-server}"
fi
if [[ "$ONLY" != qsd ]]; then
    [[ -x "$MEMX_VHOST" && -x "$MEMX_SERVER" ]] || die "no memx-vhost/memx-server at $MEMX_VHOST / $MEMX_SERVER"
    help=$("$MEMX_VHOST" --help 2>&1 || true)
    [[ "$help" == *--standby* ]] || die "$MEMX_VHOST has no --standby (no live migration yet)"
fi

TMP=$(mktemp -d /tmp/memx-migration-bench.XXXXXX)
cleanup() {
    local status=$?
    if [[ "$KEEP_TMP" == 1 ]]; then note "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$REPO/qemu/build-guest.sh" >/dev/null || die "build-guest.sh failed"

# --- Runs ----------------------------------------------------------------------------------
SIDES=()
[[ "$ONLY" != memx ]] && SIDES+=(qsd)
[[ "$ONLY" != qsd ]] && SIDES+=(memx)
: >"$TMP/results"
failures=0
for round in $(seq "$ROUNDS"); do
    order=("${SIDES[@]}")
    if ((round % 2 == 0)) && ((${#SIDES[@]} == 2)); then order=("${SIDES[1]}" "${SIDES[0]}"); fi
    for side in "${order[@]}"; do
        backend=qsd
        [[ "$side" == memx ]] && backend=memx-remote
        log="$TMP/$side.$round.log"
        note "round $round/$ROUNDS: $side"
        if MEMX_BACKEND="$backend" MEMX_MIGRATION_MODE=bench MEMX_MIGRATION_RECORDS="$RECORDS" \
            "$DRIVER" >"$log" 2>&1; then
            grep '^MIGRATION-RESULT ' "$log" | sed "s/^MIGRATION-RESULT /side=$side round=$round /" >>"$TMP/results"
            note "  $(grep -o 'summary.*' "$log" || true)"
        else
            failures=$((failures + 1))
            grep -v -E "MEMX-(PROGRESS|READLAT)" "$log" | tail -n 25 >&2
            note "round $round: $side FAILED (log above; KEEP_TMP=1 keeps it)"
        fi
    done
done

# --- Table ---------------------------------------------------------------------------------
# median SIDE STEP FIELD — median of FIELD over the rounds (— if none)
median() {
    awk -v side="$1" -v step="$2" -v field="$3" '
        { ok = 0; v = ""
          for (i = 1; i <= NF; i++) { split($i, kv, "=")
              if (kv[1] == "side" && kv[2] == side) ok++
              if (kv[1] == "step" && kv[2] == step) ok++
              if (kv[1] == field) v = kv[2] }
          if (ok == 2 && v != "") print v }' "$TMP/results" | sort -n |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "—"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
runs() { awk -v side="$1" -v step="$2" '$0 ~ "side=" side " " && $0 ~ "step=" step " " { n++ } END { print n + 0 }' "$TMP/results"; }

memx_label="memx-vhost, 2 memx-servers, --cache ${MEMX_CACHE:-4M}"
[[ -n "${MEMX_ARGS:-}" ]] && memx_label+=", ${MEMX_ARGS}"
{
    echo "| backend | migration | total time ms | downtime ms | first read-back after switchover µs | read-back before µs | runs |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    for side in "${SIDES[@]}"; do
        label="qsd, shared /dev/shm file"
        [[ "$side" == memx ]] && label="$memx_label"
        for step in b f; do
            direction="A → B"
            [[ "$step" == f ]] && direction="B → A (back)"
            printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$direction" \
                "$(median "$side" "$step" total_ms)" "$(median "$side" "$step" downtime_ms)" \
                "$(median "$side" "$step" readlat_us)" "$(median "$side" "$step" base_readlat_us)" \
                "$(runs "$side" "$step")"
        done
    done
    echo
    echo "Medians of $ROUNDS round(s); TCG guest, 1 vCPU, 256 MiB, $RECORDS records; a read-back is one dd of 25 × 4 KiB O_DIRECT reads, timed in the guest."
} | tee "$TMP/table.md"
[[ -z "$OUT" ]] || cp "$TMP/table.md" "$OUT"
((failures == 0)) || die "$failures run(s) failed"
