#!/usr/bin/env bash
# run-vs-qsd.sh: benchmark memx-vhost against qemu-storage-daemon (QEMU's own vhost-user-blk
# backend) with the same frontend (memx-bench), the same flags and the same disk size, and
# print one markdown table comparing them.
#
# Both backends serve a RAM-backed disk: qsd exports a raw file in /dev/shm, and memx-vhost
# uses its embedded pool (also in /dev/shm). The runs alternate per workload (qsd, memx, then
# memx, qsd in the next round) so that background load on the machine hits both sides alike.
# With ROUNDS > 1 every cell is the median over the rounds.
#
# Usage: Benchmarks/run-vs-qsd.sh [extra memx-bench flags...]
#
# Environment (all optional):
#   SIZE=1G              disk size of both backends
#   SECONDS_PER=5        measured seconds per workload (memx-bench --seconds)
#   WARMUP=1             warm-up seconds per workload
#   ROUNDS=1             alternating rounds; cells are medians across rounds
#   WORKLOADS=...        memx-bench --workloads list (default: the five standard ones)
#   QUEUES=1             queues driven by memx-bench (qsd is started with this many)
#   SEED=1               memx-bench --seed
#   QSD_AIO=threads      qsd file driver aio mode (threads, native, io_uring)
#   QSD_IOTHREAD=0       1 = run the qsd export in a dedicated iothread
#   QSD_SOURCE=file      file = a raw file in /dev/shm; nbd = an NBD disk served by
#                        `nbdkit memory` over loopback TCP (remote RAM from existing tools)
#   MEMX_SERVERS=0       N > 0 = memx-vhost stores pages on N memx-server processes on loopback
#                        (each lends MEMX_SERVER_MEMORY) instead of its embedded pool
#   MEMX_SERVER_MEMORY=2G  memory each memx-server lends
#   MEMX_CACHE=          memx-vhost --cache SIZE with servers (default: memx-vhost's own)
#   MEMX_ARGS=           extra memx-vhost flags
#   ONLY=both            qsd | memx | both (qsd alone is useful before memx-vhost builds)
#   SKIP_BUILD=0         1 = use the binaries already built
#   SCRATCH_PATH=.build  SwiftPM scratch path (a private one avoids lock contention)
#   OUT=                 also write the markdown table to this file
#   KEEP_TMP=0           1 = keep the temporary directory with logs and JSON results
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIZE=${SIZE:-1G}
SECONDS_PER=${SECONDS_PER:-5}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-1}
WORKLOADS=${WORKLOADS:-randread-4k-qd1,randwrite-4k-qd1,randread-4k-qd32,randwrite-4k-qd32,seqread-128k-qd1}
QUEUES=${QUEUES:-1}
SEED=${SEED:-1}
QSD_AIO=${QSD_AIO:-threads}
QSD_IOTHREAD=${QSD_IOTHREAD:-0}
QSD_SOURCE=${QSD_SOURCE:-file}
MEMX_SERVERS=${MEMX_SERVERS:-0}
MEMX_SERVER_MEMORY=${MEMX_SERVER_MEMORY:-2G}
MEMX_CACHE=${MEMX_CACHE:-}
read -r -a MEMX_EXTRA <<<"${MEMX_ARGS:-}"
ONLY=${ONLY:-both}
SKIP_BUILD=${SKIP_BUILD:-0}
SCRATCH_PATH=${SCRATCH_PATH:-.build}
OUT=${OUT:-}
KEEP_TMP=${KEEP_TMP:-0}
EXTRA_ARGS=("$@")

die() { echo "run-vs-qsd: error: $*" >&2; exit 1; }
note() { echo "run-vs-qsd: $*" >&2; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

case "$ONLY" in qsd | memx | both) ;; *) die "ONLY must be qsd, memx or both (got '$ONLY')" ;; esac
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
command -v swift >/dev/null || die "swift is not in PATH (e.g. export PATH=/opt/swift/usr/bin:\$PATH)"
command -v jq >/dev/null || die "jq is required to combine the results (apt-get install jq)"
if [[ "$ONLY" != memx ]]; then
    command -v qemu-storage-daemon >/dev/null ||
        die "qemu-storage-daemon not found (Debian: apt-get install qemu-system-common or qemu-utils)"
fi

# --- Build ---------------------------------------------------------------------------------
BIN=$(swift build -c release --scratch-path "$SCRATCH_PATH" --show-bin-path)
BUILD_LOG=$(mktemp /tmp/memx-bench-build.XXXXXX.log)
if [[ "$SKIP_BUILD" != 1 ]]; then
    note "building memx-bench (release)…"
    swift build -c release --scratch-path "$SCRATCH_PATH" --product memx-bench >"$BUILD_LOG" 2>&1 ||
        die "building memx-bench failed; see $BUILD_LOG"
    if [[ "$ONLY" != qsd ]]; then
        note "building memx-vhost (release)…"
        swift build -c release --scratch-path "$SCRATCH_PATH" --product memx-vhost >>"$BUILD_LOG" 2>&1 ||
            die "building memx-vhost failed (is the backend finished?); see $BUILD_LOG. ONLY=qsd benchmarks qsd alone."
        if ((MEMX_SERVERS > 0)); then
            swift build -c release --scratch-path "$SCRATCH_PATH" --product memx-server >>"$BUILD_LOG" 2>&1 ||
                die "building memx-server failed; see $BUILD_LOG"
        fi
    fi
fi
BENCH="$BIN/memx-bench"
MEMX="$BIN/memx-vhost"
[[ -x "$BENCH" ]] || die "memx-bench binary missing at $BENCH"
if [[ "$ONLY" != qsd && ! -x "$MEMX" ]]; then
    die "memx-vhost binary missing at $MEMX (not built yet?). ONLY=qsd benchmarks qsd alone."
fi

# --- Backends ------------------------------------------------------------------------------
TMP=$(mktemp -d /dev/shm/memx-bench.XXXXXX)
VOLUME="bench-$$"
PIDS=()
cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    # memx-vhost's embedded pool files carry the volume name. Remove the ones that appeared
    # while we ran and nothing else (other processes may use similar names).
    if [[ -f "$TMP/shm.before" ]]; then
        for file in /dev/shm/*"$VOLUME"*; do
            [[ -e "$file" ]] || continue
            grep -qxF "$file" "$TMP/shm.before" || rm -f "$file"
        done
    fi
    if [[ "$KEEP_TMP" == 1 ]]; then note "kept $TMP"; else rm -rf "$TMP"; fi
    rm -f "$BUILD_LOG"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for_socket() { # path pid name log — until the kernel lists it as listening (the file
    # appears at bind(), a moment before listen(), when a connect would be refused)
    for _ in $(seq 100); do
        [[ -S "$1" ]] && awk -v p="$1" '$NF == p && $4 == "00010000" { found = 1 } END { exit !found }' /proc/net/unix \
            && return 0
        kill -0 "$2" 2>/dev/null || { cat "$4" >&2; die "$3 exited before creating $1"; }
        sleep 0.1
    done
    cat "$4" >&2
    die "$3 did not create $1 within 10 s"
}

SIDES=()
if [[ "$ONLY" != memx ]]; then
    QSD_OBJECTS=()
    if [[ "$QSD_SOURCE" == nbd ]]; then
        command -v nbdkit >/dev/null || die "QSD_SOURCE=nbd needs nbdkit (apt-get install nbdkit)"
        NBD_PORT=$((20000 + RANDOM % 20000))
        nbdkit --foreground --exit-with-parent -i 127.0.0.1 -p "$NBD_PORT" memory "$SIZE" >"$TMP/nbdkit.log" 2>&1 &
        PIDS+=($!)
        for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$NBD_PORT") 2>/dev/null && break; sleep 0.1; done
        QSD_BLOCKDEV="driver=nbd,node-name=f,server.type=inet,server.host=127.0.0.1,server.port=$NBD_PORT"
    else
        truncate -s "$SIZE" "$TMP/qsd.img"
        QSD_BLOCKDEV="driver=file,node-name=f,filename=$TMP/qsd.img,cache.direct=off,aio=$QSD_AIO"
    fi
    QSD_EXPORT="type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=$TMP/qsd.sock,writable=on,num-queues=$QUEUES"
    if [[ "$QSD_IOTHREAD" == 1 ]]; then
        QSD_OBJECTS=(--object "iothread,id=iot0")
        QSD_EXPORT+=",iothread=iot0"
    fi
    qemu-storage-daemon "${QSD_OBJECTS[@]}" \
        --blockdev "$QSD_BLOCKDEV" \
        --export "$QSD_EXPORT" >"$TMP/qsd.log" 2>&1 &
    PIDS+=($!)
    wait_for_socket "$TMP/qsd.sock" "${PIDS[-1]}" qemu-storage-daemon "$TMP/qsd.log"
    SIDES+=(qsd)
fi
if [[ "$ONLY" != qsd ]]; then
    printf '%s\n' /dev/shm/* >"$TMP/shm.before"
    MEMX_REMOTE=()
    if (( MEMX_SERVERS > 0 )); then
        start_memx_servers "$MEMX_SERVERS" "$MEMX_SERVER_MEMORY"
        MEMX_REMOTE=("${ADDRESSES[@]}")
    fi
    [[ -n "$MEMX_CACHE" ]] && MEMX_REMOTE+=(--cache "$MEMX_CACHE")
    "$MEMX" --socket "$TMP/memx.sock" --size "$SIZE" --volume "$VOLUME" "${MEMX_REMOTE[@]}" "${MEMX_EXTRA[@]}" \
        >"$TMP/memx.log" 2>&1 &
    PIDS+=($!)
    wait_for_socket "$TMP/memx.sock" "${PIDS[-1]}" memx-vhost "$TMP/memx.log"
    SIDES+=(memx)
fi

# --- Runs ----------------------------------------------------------------------------------
mkdir -p "$TMP/results"
IFS=, read -r -a WORKLOAD_LIST <<<"$WORKLOADS"
for round in $(seq "$ROUNDS"); do
    order=("${SIDES[@]}")
    if ((round % 2 == 0)) && ((${#SIDES[@]} == 2)); then order=("${SIDES[1]}" "${SIDES[0]}"); fi
    for workload in "${WORKLOAD_LIST[@]}"; do
        for side in "${order[@]}"; do
            note "round $round/$ROUNDS: $workload on $side"
            "$BENCH" --socket "$TMP/$side.sock" --label "$side" --workloads "$workload" \
                --seconds "$SECONDS_PER" --warmup-seconds "$WARMUP" --queues "$QUEUES" --seed "$SEED" \
                --json "${EXTRA_ARGS[@]}" >"$TMP/results/$side.$round.$workload.json" 2>"$TMP/results/$side.$round.$workload.err" ||
                { cat "$TMP/results/$side.$round.$workload.err" >&2; die "memx-bench failed on $side ($workload)"; }
        done
    done
done

# --- Report --------------------------------------------------------------------------------
# One row per workload. Cells are medians over rounds. Ratios are memx / qsd: above 1 is
# better for IOPS, below 1 is better for latency.
TABLE=$(jq -s -r --arg sides "${SIDES[*]}" --arg order "$WORKLOADS" '
    def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
                       else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    def fixed(d): (. * pow(10; d) | round | tostring) as $digits
        | if d == 0 then $digits
          else ("0" * (d + 1 - ($digits | length)) + $digits) as $p
          | $p[0:($p | length) - d] + "." + $p[($p | length) - d:] end;
    def fmt(d): if . == null then "–" else fixed(d) end;
    def ratio(a; b): if a == null or b == null or b == 0 then "–" else (a / b) | fixed(2) end;
    [ .[] | .label as $side | .results[] | . + {side: $side} ] as $rows
    | ($order | split(",") | map(select(length > 0))) as $workloads
    | ($sides | split(" ")) as $present
    | def cell(w; s; k): [ $rows[] | select(.workload == w and .side == s) | .[k] ] | median;
      (if ($present | length) == 2 then
        "| workload | qsd IOPS | memx IOPS | IOPS ×memx/qsd | qsd p50 µs | memx p50 µs | p50 ×memx/qsd | qsd p99 µs | memx p99 µs | p99 ×memx/qsd |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ( $workloads[] as $w
          | [ $w,
              (cell($w; "qsd"; "iops") | fmt(0)), (cell($w; "memx"; "iops") | fmt(0)),
              ratio(cell($w; "memx"; "iops"); cell($w; "qsd"; "iops")),
              (cell($w; "qsd"; "p50_us") | fmt(1)), (cell($w; "memx"; "p50_us") | fmt(1)),
              ratio(cell($w; "memx"; "p50_us"); cell($w; "qsd"; "p50_us")),
              (cell($w; "qsd"; "p99_us") | fmt(1)), (cell($w; "memx"; "p99_us") | fmt(1)),
              ratio(cell($w; "memx"; "p99_us"); cell($w; "qsd"; "p99_us")) ]
          | "| " + join(" | ") + " |" )
      else
        $present[0] as $s
        | "| workload | \($s) IOPS | \($s) MB/s | \($s) p50 µs | \($s) p99 µs | \($s) p99.9 µs |",
          "|---|---:|---:|---:|---:|---:|",
          ( $workloads[] as $w
            | [ $w, (cell($w; $s; "iops") | fmt(0)), (cell($w; $s; "mb_per_s") | fmt(1)),
                (cell($w; $s; "p50_us") | fmt(1)), (cell($w; $s; "p99_us") | fmt(1)),
                (cell($w; $s; "p999_us") | fmt(1)) ]
            | "| " + join(" | ") + " |" )
      end)
' "$TMP"/results/*.json)

HEADER="memx-bench, $SECONDS_PER s (+$WARMUP s warm-up) per workload, $ROUNDS round(s), $QUEUES queue(s), disk $SIZE, \
qsd $QSD_SOURCE aio=$QSD_AIO iothread=$QSD_IOTHREAD, memx servers=$MEMX_SERVERS cache=${MEMX_CACHE:-default}, $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ)${EXTRA_ARGS[*]:+, flags: ${EXTRA_ARGS[*]}}"
printf '%s\n\n%s\n' "$HEADER" "$TABLE"
if [[ -n "$OUT" ]]; then printf '%s\n\n%s\n' "$HEADER" "$TABLE" >"$OUT"; fi
