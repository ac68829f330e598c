#!/usr/bin/env bash
# dedup-vm-create.sh — the VM-creation benchmark of de-duplication: how much pool memory N
# VMs installed from one image cost, against their logical size.
#
# Makes an ext4 image of IMAGE_SIZE with `mke2fs -d` from a copy of SOURCE_DIR (real files:
# libraries by default), starts SERVERS memx-servers, and for each of the largest N in
# COUNTS volumes vm1..vmN: starts memx-vhost (--replicas REPLICAS, --cache 16M), writes the
# image through its vhost-user socket from sector 0 (dedup-bench write-image: 128 KiB
# requests, then FLUSH), and stops it (which writes its cache back). After N = each of COUNTS
# volumes it records `memxctl --json dedup`: the pool's logical size (written pages, every
# replica), the memory it uses, and the saving, against both the logical size and the guests'
# own (N × image). POLICY=off creates every volume with `memxctl create --no-dedup` first.
# Prints a markdown table.
#
# Environment (defaults): COUNTS="4 16 32" SERVERS=3 REPLICAS=2 SERVER_MEMORY=2G
# IMAGE_SIZE=64M SOURCE_DIR=/usr/lib/x86_64-linux-gnu SOURCE_MB=40 POLICY=on IMAGE= (an image
# file to use instead) VHOST_BINARY= (another memx-vhost to place the groups, e.g. one built
# before content-aligned placement) SKIP_BUILD= SCRATCH_PATH=.build KEEP_TMP=
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
COUNTS=${COUNTS:-"4 16 32"}
SERVERS=${SERVERS:-3}
REPLICAS=${REPLICAS:-2}
SERVER_MEMORY=${SERVER_MEMORY:-2G}
IMAGE_SIZE=${IMAGE_SIZE:-64M}
SOURCE_DIR=${SOURCE_DIR:-/usr/lib/x86_64-linux-gnu}
SOURCE_MB=${SOURCE_MB:-40}
POLICY=${POLICY:-on}
SCRATCH_PATH=${SCRATCH_PATH:-.build}
die() { echo "dedup-vm-create: $*" >&2; exit 1; }
command -v jq >/dev/null || die "jq is required"
command -v mke2fs >/dev/null || die "mke2fs (e2fsprogs) is required"
if [[ -z "${SKIP_BUILD:-}" ]]; then
    for product in memx-vhost memx-server memxctl; do
        swift build -c release --scratch-path "$SCRATCH_PATH" --product "$product" >/dev/null 2>&1 || die "cannot build $product"
    done
    swift build -c release --package-path Benchmarks/DedupBench --scratch-path "$SCRATCH_PATH-bench" >/dev/null 2>&1 \
        || die "cannot build Benchmarks/DedupBench"
fi
BIN=$(swift build -c release --scratch-path "$SCRATCH_PATH" --show-bin-path)
VHOST=${VHOST_BINARY:-$BIN/memx-vhost}
BENCH=$(swift build -c release --package-path Benchmarks/DedupBench --scratch-path "$SCRATCH_PATH-bench" --show-bin-path)/dedup-bench
TMP=$(mktemp -d /tmp/memx-dedup-vm.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -f /dev/shm/memx-dedupvm-$$-*.cache
    [[ -n "${KEEP_TMP:-}" ]] || rm -rf "$TMP"
}
trap cleanup EXIT

# The image: real files (the first SOURCE_MB MiB of SOURCE_DIR's regular files) in ext4.
if [[ -n "${IMAGE:-}" ]]; then
    cp "$IMAGE" "$TMP/image"
else
    mkdir -p "$TMP/root"
    budget=$((SOURCE_MB << 20))
    while IFS= read -r -d '' file && ((budget > 0)); do
        size=$(stat -c %s "$file")
        ((size < budget)) || continue
        cp "$file" "$TMP/root/" 2>/dev/null && budget=$((budget - size))
    done < <(find "$SOURCE_DIR" -maxdepth 1 -type f -print0 | sort -z)
    mke2fs -q -F -t ext4 -b 4096 -d "$TMP/root" "$TMP/image" "$IMAGE_SIZE" >&2 || die "mke2fs failed"
fi
IMAGE_BYTES=$(stat -c %s "$TMP/image")
NONZERO=$(od -An -v -tx1 -w4096 "$TMP/image" | grep -cv '^\( 00\)*$' || true)
echo "image: $IMAGE_BYTES bytes ($((IMAGE_BYTES / 4096)) blocks, $NONZERO not zero) from $SOURCE_DIR" >&2

start_memx_servers "$SERVERS" "$SERVER_MEMORY"

MAX=0
for n in $COUNTS; do ((n > MAX)) && MAX=$n; done
SIZE_MB=$(( (IMAGE_BYTES + (1 << 20) - 1) >> 20 ))
echo "| VMs | logical (guests) | logical (with replicas) | pool memory used | saved vs guests | saved vs logical |"
echo "|---:|---:|---:|---:|---:|---:|"
for ((vm = 1; vm <= MAX; vm++)); do
    name="dedupvm-$$-$vm"
    if [[ "$POLICY" == off ]]; then
        "$BIN/memxctl" "${ADDRESSES[@]}" create "$name" --size "${SIZE_MB}M" --no-dedup >/dev/null
    fi
    sock=$TMP/vm$vm.sock
    "$VHOST" --socket "$sock" --size "${SIZE_MB}M" --volume "$name" "${ADDRESSES[@]}" --replicas "$REPLICAS" \
        --cache 16M --pool-directory /dev/shm --log-level warning >"$TMP/vm$vm.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do [[ -S "$sock" ]] && break; sleep 0.1; done
    "$BENCH" write-image --socket "$sock" --image "$TMP/image" >>"$TMP/writes.log" || die "writing vm$vm failed: $(tail -5 "$TMP/vm$vm.log")"
    kill -TERM "$pid"
    wait "$pid" || die "memx-vhost of vm$vm exited with $?: $(tail -5 "$TMP/vm$vm.log")"
    for n in $COUNTS; do
        if ((n == vm)); then
            stats=$("$BIN/memxctl" "${ADDRESSES[@]}" --json dedup)
            logical=$(jq '.pool.logicalBytes' <<<"$stats")
            stored=$(jq '.pool.storedBytes' <<<"$stats")
            guests=$((vm * IMAGE_BYTES))
            awk -v n="$vm" -v g="$guests" -v l="$logical" -v s="$stored" 'BEGIN {
                printf "| %d | %.0f MiB | %.0f MiB | %.1f MiB | %.1f %% | %.1f %% |\n", n, g / 1048576, l / 1048576, s / 1048576,
                    100 * (1 - s / g), (l > 0 ? 100 * (1 - s / l) : 0) }'
        fi
    done
done
echo "" >&2
echo "image writes: $(awk '{ s += $5; n++ } END { printf "%d in %.1f s", n, s }' "$TMP/writes.log")" >&2
"$BIN/memxctl" "${ADDRESSES[@]}" dedup >&2
