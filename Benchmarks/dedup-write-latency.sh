#!/usr/bin/env bash
# dedup-write-latency.sh — what de-duplication costs a write: memx-bench's QD1 4 KiB random
# writes, written through (--write-through: each write completes once every replica's server
# has it), on a volume with de-duplication on and on one created with `memxctl create
# --no-dedup`, alternating, ROUNDS rounds; medians of p50, p99 and IOPS.
#
# SERVERS memx-servers on loopback, the default 2 replicas, a 16 MiB cache; the measured region
# is REGION of a 256 MiB disk, prefilled by memx-bench. memx-bench writes each slot's buffer as
# it is, so after the first write the content is one the server holds already: the timed
# writes take the de-duplicating path that finds a match (hash, compare, share) and frees the
# page's old frame. The in-process cost of every path, new content included, is
# `dedup-bench store`.
#
# Environment (defaults): SERVERS=3 SERVER_MEMORY=1G ROUNDS=3 SECONDS_PER=5 REGION=64m
# WORKLOAD=randwrite-4k-qd1 SKIP_BUILD= SCRATCH_PATH=.build KEEP_TMP=
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SERVERS=${SERVERS:-3}
SERVER_MEMORY=${SERVER_MEMORY:-1G}
ROUNDS=${ROUNDS:-3}
SECONDS_PER=${SECONDS_PER:-5}
REGION=${REGION:-64m}
WORKLOAD=${WORKLOAD:-randwrite-4k-qd1}
SCRATCH_PATH=${SCRATCH_PATH:-.build}
die() { echo "dedup-write-latency: $*" >&2; exit 1; }
command -v jq >/dev/null || die "jq is required"
if [[ -z "${SKIP_BUILD:-}" ]]; then
    for product in memx-bench memx-vhost memx-server memxctl; do
        swift build -c release --scratch-path "$SCRATCH_PATH" --product "$product" >/dev/null 2>&1 || die "cannot build $product"
    done
fi
BIN=$(swift build -c release --scratch-path "$SCRATCH_PATH" --show-bin-path)
TMP=$(mktemp -d /tmp/memx-dedup-lat.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -f /dev/shm/memx-dedlat-$$-*.cache
    [[ -n "${KEEP_TMP:-}" ]] || rm -rf "$TMP"
}
trap cleanup EXIT

start_memx_servers "$SERVERS" "$SERVER_MEMORY"

for policy in on off; do
    flag=()
    [[ "$policy" == off ]] && flag=(--no-dedup)
    "$BIN/memxctl" "${ADDRESSES[@]}" create "dedlat-$$-$policy" --size 256M "${flag[@]}" >/dev/null
done
for ((round = 1; round <= ROUNDS; round++)); do
    order=(on off)
    ((round % 2 == 0)) && order=(off on)
    for policy in "${order[@]}"; do
        sock=$TMP/$policy.sock
        "$BIN/memx-vhost" --socket "$sock" --size 256M --volume "dedlat-$$-$policy" "${ADDRESSES[@]}" --write-through \
            --cache 16M --log-level warning >"$TMP/vhost-$policy.log" 2>&1 &
        pid=$!
        for _ in $(seq 100); do [[ -S "$sock" ]] && break; sleep 0.1; done
        "$BIN/memx-bench" --socket "$sock" --label "dedup-$policy" --workloads "$WORKLOAD" --seconds "$SECONDS_PER" \
            --size-limit "$REGION" --json >"$TMP/$policy-$round.json" || die "memx-bench failed on dedup $policy"
        kill -TERM "$pid"
        wait "$pid" || true
    done
done
echo "| de-duplication | IOPS | p50 µs | p99 µs |"
echo "|---|---:|---:|---:|"
for policy in on off; do
    jq -s -r --arg policy "$policy" '
        def median: sort | .[(length / 2 | floor)];
        [.[].results[0]] as $r
        | "| \($policy) | \([$r[].iops] | median | round) | \([$r[].p50_us] | median) | \([$r[].p99_us] | median) |"' \
        "$TMP/$policy"-*.json
done
