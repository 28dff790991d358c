# Shell helpers shared by the CI steps that start a throwaway `ferry serve`
# (.ci/schemathesis, .ci/k6-smoke). Sourced, not run.

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Sets PORT and ADMIN_PORT to two different free ports.
pick_ports() {
    PORT="$(free_port)"
    ADMIN_PORT="$(free_port)"
    while [[ "$ADMIN_PORT" == "$PORT" ]]; do ADMIN_PORT="$(free_port)"; done
}

# Whether the admin listener on $1 answers /health/ready.
server_ready() {
    python3 - "$1" <<'PY'
import sys, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health/ready", timeout=2)
except Exception:
    sys.exit(1)
PY
}

# Waits up to 20 s for the server (pid $2, admin port $1, log file $3) to be ready;
# exits the script with the log when it dies or never gets ready.
wait_ready() {
    local admin_port="$1" pid="$2" log="$3"
    for _ in $(seq 1 100); do
        server_ready "$admin_port" && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$log" >&2
            echo "ferry serve exited during start" >&2
            exit 1
        fi
        sleep 0.2
    done
    server_ready "$admin_port" || { cat "$log" >&2; echo "ferry serve not ready" >&2; exit 1; }
}

# Stops the server with pid $1 (if it still runs) and waits for it.
stop_server() {
    if [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; then
        kill "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
    fi
}
