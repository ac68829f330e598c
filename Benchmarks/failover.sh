#!/usr/bin/env bash
# failover.sh — what losing a memory server costs a running disk: the guest-visible stall of
# reads while it happens, and how long re-replication takes to restore every copy.
#
# Starts SERVERS memx-servers and memx-vhost (--replicas 2, a 1 MiB cache so reads go to the
# servers), fills SIZE of the disk with memx-bench, then runs a QD1 random-read workload for
# SECONDS_PER seconds and, FAIL_AT seconds in, fails server 1 (FAILURE=kill: SIGKILL, the
# connection resets; FAILURE=stop: SIGSTOP, the server stalls and requests time out;
# FAILURE=restart: SIGKILL, then 1 s later a new, empty memx-server on the same port, which
# memx-vhost re-admits and refills — use SERVERS=2 so the refill is the only copy made). Prints
# the workload's latency (p50, p99, p99.9, max: the stall) and the time from the failure (the
# restart) until memx-vhost reports nothing left to re-replicate, with the MiB it copied.
#
# Environment (defaults): SIZE=1G SERVERS=3 SERVER_MEMORY=2G SECONDS_PER=10 FAIL_AT=3
# FAILURE=kill SKIP_BUILD= SCRATCH_PATH=.build KEEP_TMP=
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SIZE=${SIZE:-1G}
SERVERS=${SERVERS:-3}
SERVER_MEMORY=${SERVER_MEMORY:-2G}
SECONDS_PER=${SECONDS_PER:-10}
FAIL_AT=${FAIL_AT:-3}
FAILURE=${FAILURE:-kill}
SCRATCH_PATH=${SCRATCH_PATH:-.build}
die() { echo "failover: $*" >&2; exit 1; }
[[ "$FAILURE" == kill || "$FAILURE" == stop || "$FAILURE" == restart ]] || die "FAILURE must be kill, stop or restart"
command -v jq >/dev/null || die "jq is required"
if [[ -z "${SKIP_BUILD:-}" ]]; then
    for product in memx-bench memx-vhost memx-server; do
        swift build -c release --scratch-path "$SCRATCH_PATH" --product "$product" >/dev/null 2>&1 || die "cannot build $product"
    done
fi
BIN=$(swift build -c release --scratch-path "$SCRATCH_PATH" --show-bin-path)
TMP=$(mktemp -d /tmp/memx-failover.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -CONT "$pid" 2>/dev/null || true; kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -f /dev/shm/memx-failover-$$.cache
    [[ -n "${KEEP_TMP:-}" ]] || rm -rf "$TMP"
}
trap cleanup EXIT

start_memx_servers "$SERVERS" "$SERVER_MEMORY"
SOCK=$TMP/memx.sock
"$BIN/memx-vhost" --socket "$SOCK" --size "$SIZE" --volume "failover-$$" "${ADDRESSES[@]}" --replicas 2 --cache 1M \
    >"$TMP/memx-vhost.log" 2>&1 &
VHOST=$!
PIDS+=("$VHOST")
for _ in $(seq 100); do
    awk -v p="$SOCK" '$NF == p && $4 == "00010000" { f = 1 } END { exit !f }' /proc/net/unix && break
    sleep 0.1
done

# Fill the disk (prefill) with a short run, then measure with the data in place.
"$BIN/memx-bench" --socket "$SOCK" --workloads randread-4k-qd1 --seconds 0.5 --warmup-seconds 0 --prefill always \
    --json >"$TMP/fill.json" || die "prefill failed: $(tail -5 "$TMP/memx-vhost.log")"
"$BIN/memx-bench" --socket "$SOCK" --workloads randread-4k-qd1 --seconds "$SECONDS_PER" --warmup-seconds 1 --prefill never \
    --verify-blocks 0 --timeout-seconds 30 --json >"$TMP/run.json" 2>"$TMP/run.err" &
BENCH=$!
sleep $((FAIL_AT + 1))
VICTIM=${PIDS[0]}
start=$(date +%s.%N)
case "$FAILURE" in
    kill) kill -KILL "$VICTIM" ;;
    stop) kill -STOP "$VICTIM" ;;
    restart)
        kill -KILL "$VICTIM"
        sleep 1
        before=$(grep -ac ' 0 to go' "$TMP/memx-vhost.log" || true)
        start_memx_server 1 "$SERVER_MEMORY" "${PORTS[0]}"
        start=$(date +%s.%N)
        ;;
esac
repaired=""
while kill -0 "$VHOST" 2>/dev/null; do
    if (( $(grep -ac ' 0 to go' "$TMP/memx-vhost.log" || true) > ${before:-0} )); then repaired=$(date +%s.%N); break; fi
    awk -v s="$start" -v n="$(date +%s.%N)" 'BEGIN { exit !(n - s > 300) }' && break
    sleep 0.05
done
wait "$BENCH" || die "memx-bench failed: $(cat "$TMP/run.err") $(tail -5 "$TMP/memx-vhost.log")"
result=$(jq -r '.results[0] | "\(.iops | floor) | \(.p50_us) | \(.p99_us) | \(.p999_us) | \(.max_us)"' "$TMP/run.json")
copied=$(grep -a 're-replicated page group' "$TMP/memx-vhost.log" | tail -1 | grep -oE '[0-9]+ MiB copied so far' | cut -d' ' -f1 || echo 0)
readmitted=$(grep -a 're-admitted' "$TMP/memx-vhost.log" | head -1 | sed 's/.*answers again/answers again/' || true)
groups=$(grep -ac 're-replicated page group' "$TMP/memx-vhost.log" || true)
if [[ -n "$repaired" ]]; then
    repair=$(awk -v s="$start" -v e="$repaired" -v m="$copied" -v g="$groups" 'BEGIN {
        t = e - s; r = (t > 0 ? m / t : 0)
        printf "%.2f s for %d groups, %d MiB (%.0f MiB/s; 1 GiB in %.1f s)", t, g, m, r, (r > 0 ? 1024 / r : 0) }')
else
    repair="not finished within 300 s"
fi
echo "memx failover: $SIZE disk, $SERVERS servers, 2 replicas, 1 MiB cache, server 1 ${FAILURE}ed ${FAIL_AT} s into a ${SECONDS_PER} s randread-4k-qd1 run, $(nproc) CPUs, $(date -u +%FT%RZ)"
echo
echo "| IOPS | p50 µs | p99 µs | p99.9 µs | max µs (the stall) |"
echo "|---:|---:|---:|---:|---:|"
echo "| $result |"
echo
echo "re-replication: $repair"
[[ -z "$readmitted" ]] || echo "re-admission: $readmitted"
