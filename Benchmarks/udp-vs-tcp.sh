#!/usr/bin/env bash
# udp-vs-tcp.sh — the same disk over memx-vhost's two transports to one memx-server, in one run:
# TCP, UDP, UDP through memx-udp-proxy dropping nothing (what the proxy's extra hop costs), and
# UDP through memx-udp-proxy dropping LOSS of the datagrams each way (seeded).
# memx-vhost runs with a 1 MiB cache and --write-through, so reads miss and writes go to the
# server: the numbers are the remote path's. Prints a markdown table.
#
#   SIZE=256M          disk size (and the measured region)
#   SECONDS_PER=5      measured seconds per workload (1 s warm-up before)
#   WORKLOADS=...      memx-bench workloads
#   LOSS=0.01          drop rate of the lossy UDP run (0: skip it)
#   SCRATCH_PATH=.build-udp  SwiftPM scratch path of the release build
#   SKIP_BUILD=1       use the binaries as they are
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-256M}
SECONDS_PER=${SECONDS_PER:-5}
WORKLOADS=${WORKLOADS:-randread-4k-qd1,randwrite-4k-qd1,randread-4k-qd32,randwrite-4k-qd32,seqread-128k-qd1}
LOSS=${LOSS:-0.01}
SCRATCH_PATH=${SCRATCH_PATH:-.build-udp}
die() { echo "udp-vs-tcp: $*" >&2; exit 1; }
if [[ -z "${SKIP_BUILD:-}" ]]; then
    swift build -c release --scratch-path "$SCRATCH_PATH" >/dev/null || die "release build failed"
fi
BIN=$SCRATCH_PATH/release
TMP=$(mktemp -d /tmp/memx-udp-bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ -n "${KEEP_TMP:-}" ]] || rm -rf "$TMP"
}
trap cleanup EXIT

wait_for_line() {  # file pattern → the first match
    local found=""
    for _ in $(seq 100); do
        found=$(grep -aoE "$2" "$1" | head -1 || true)
        [[ -n "$found" ]] && break
        sleep 0.1
    done
    echo "$found"
}

"$BIN/memx-server" --listen 127.0.0.1:0 --memory 2G --transport udp >"$TMP/server.log" 2>&1 &
PIDS+=($!)
SERVER=$(wait_for_line "$TMP/server.log" '127\.0\.0\.1:[0-9]+')
[[ -n "$SERVER" ]] || die "memx-server did not start: $(cat "$TMP/server.log")"

MODES=(tcp udp)
if [[ "$LOSS" != 0 ]]; then
    "$BIN/memx-udp-proxy" "$SERVER" 1 0 >"$TMP/proxy0.log" 2>&1 &
    PIDS+=($!)
    PROXY0=$(wait_for_line "$TMP/proxy0.log" '127\.0\.0\.1:[0-9]+')
    "$BIN/memx-udp-proxy" "$SERVER" 1 "$LOSS" >"$TMP/proxy.log" 2>&1 &
    PIDS+=($!)
    PROXY=$(wait_for_line "$TMP/proxy.log" '127\.0\.0\.1:[0-9]+')
    [[ -n "$PROXY" && -n "$PROXY0" ]] || die "memx-udp-proxy did not start: $(cat "$TMP/proxy.log")"
    MODES+=(udp-proxy udp-loss)
fi

for mode in "${MODES[@]}"; do
    transport=${mode%%-*}
    address=$SERVER
    [[ "$mode" == udp-proxy ]] && address=$PROXY0
    [[ "$mode" == udp-loss ]] && address=$PROXY
    sock=$TMP/$mode.sock
    "$BIN/memx-vhost" --socket "$sock" --size "$SIZE" --volume "bench-$mode-$$" --server "$address" --transport "$transport" \
        --replicas 1 --cache 1M --write-through --pool-directory "$TMP" >"$TMP/vhost-$mode.log" 2>&1 &
    vhost=$!
    PIDS+=("$vhost")
    for _ in $(seq 100); do
        awk -v p="$sock" '$NF == p && $4 == "00010000" { f = 1 } END { exit !f }' /proc/net/unix && break
        sleep 0.1
    done
    "$BIN/memx-bench" --socket "$sock" --workloads "$WORKLOADS" --seconds "$SECONDS_PER" --warmup-seconds 1 \
        --prefill always --timeout-seconds 60 --json >"$TMP/$mode.json" 2>"$TMP/$mode.err" \
        || die "memx-bench ($mode) failed: $(cat "$TMP/$mode.err") $(tail -5 "$TMP/vhost-$mode.log")"
    kill -TERM "$vhost"
    wait "$vhost" 2>/dev/null || true
done

echo "memx-vhost → memx-server on loopback, $SIZE disk, 1 MiB cache, write-through, $(nproc) CPUs, $(date -u +%FT%RZ); udp-proxy: through memx-udp-proxy, nothing dropped; udp-loss: through it, $LOSS of datagrams dropped each way (seed 1)"
echo
echo "| workload | transport | IOPS | p50 µs | p99 µs | p99.9 µs |"
echo "|---|---|---:|---:|---:|---:|"
for w in ${WORKLOADS//,/ }; do
    for mode in "${MODES[@]}"; do
        jq -r --arg w "$w" --arg m "$mode" '.results[] | select(.workload == $w) | "| \($w) | \($m) | \(.iops | floor) | \(.p50_us) | \(.p99_us) | \(.p999_us) |"' "$TMP/$mode.json"
    done
done
