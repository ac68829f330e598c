# lib.sh — helpers the benchmark scripts share (source it; it defines functions only).
#
# start_memx_server N MEMORY [PORT] — starts "$BIN/memx-server" number N on 127.0.0.1:PORT
# (default 0: a free port) with --memory MEMORY, logging to "$TMP/serverN.log", adds its pid to
# PIDS and waits (10 s at most) for the port it logs; sets SERVER_PORT. Calls `die` (which the
# script defines) if it does not start.
start_memx_server() {
    local n="$1" memory="$2" listen_port="${3:-0}" log="$TMP/server$1.log"
    [[ "$listen_port" == 0 ]] || log="$TMP/server$1-restarted.log"
    "$BIN/memx-server" --listen "127.0.0.1:$listen_port" --memory "$memory" >"$log" 2>&1 &
    PIDS+=($!)
    SERVER_PORT=""
    for _ in $(seq 100); do
        SERVER_PORT=$(grep -aoE '127\.0\.0\.1:[0-9]+' "$log" | head -1 | cut -d: -f2 || true)
        [[ -n "$SERVER_PORT" && "$SERVER_PORT" != 0 ]] && return 0
        sleep 0.1
    done
    die "memx-server $n did not start: $(cat "$log")"
}

# start_memx_servers COUNT MEMORY — starts COUNT servers; sets ADDRESSES (--server flags for
# memx-vhost and memxctl) and PORTS.
start_memx_servers() {
    ADDRESSES=()
    PORTS=()
    local i
    for ((i = 1; i <= $1; i++)); do
        start_memx_server "$i" "$2"
        ADDRESSES+=(--server "127.0.0.1:$SERVER_PORT")
        PORTS+=("$SERVER_PORT")
    done
}
