#!/usr/bin/env bash
# Serve the VAE Latent Explorer to a classroom: N `streamlit run` replicas on 127.0.0.1
# behind nginx, which students reach on one address and port. Sessions are sticky (a
# cookie set by nginx, see deploy/nginx.conf.template); a replica that exits is restarted;
# Ctrl-C or SIGTERM stops everything this script started.
#
#   scripts/serve.sh [--replicas N] [--port P] [--address A] [--runs-dir DIR]
#                    [--log-dir DIR] [-- APP OPTIONS (e.g. --no-train, --data-root DIR)]
#
#   --replicas N   app processes (default: the number of CPU cores; at most 4 per core).
#                  One process uses about one core (Python's GIL); see docs/serving.md.
#   --port P       the port students open (default 8501)
#   --address A    where nginx listens (default 0.0.0.0: every network interface;
#                  127.0.0.1: this machine only). The replicas always listen on 127.0.0.1.
#   --runs-dir DIR the trained runs (default: $VAE_RUNS_DIR, else ./runs)
#   --log-dir DIR  logs and the generated nginx.conf (default: a new folder under $TMPDIR)
#
# Needs nginx (Debian/Ubuntu: sudo apt-get install -y nginx; $NGINX names another binary)
# and the app installed in $PYTHON (default python3). Bad arguments: exit 2.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
TEMPLATE="$ROOT/deploy/nginx.conf.template"
APP="$ROOT/streamlit_app.py"

say() { printf 'serve.sh: %s\n' "$*"; }
die() { printf 'serve.sh: %s\n' "$*" >&2; exit 2; }
usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }

cores=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
REPLICAS=$cores
PORT=8501
ADDRESS=0.0.0.0
RUNS_DIR=${VAE_RUNS_DIR:-runs}
LOG_DIR=""
APP_ARGS=()

need_value() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (see --help)"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --replicas) need_value "$@"; REPLICAS=$2; shift 2 ;;
        --replicas=*) REPLICAS=${1#*=}; shift ;;
        --port) need_value "$@"; PORT=$2; shift 2 ;;
        --port=*) PORT=${1#*=}; shift ;;
        --address) need_value "$@"; ADDRESS=$2; shift 2 ;;
        --address=*) ADDRESS=${1#*=}; shift ;;
        --runs-dir) need_value "$@"; RUNS_DIR=$2; shift 2 ;;
        --runs-dir=*) RUNS_DIR=${1#*=}; shift ;;
        --log-dir) need_value "$@"; LOG_DIR=$2; shift 2 ;;
        --log-dir=*) LOG_DIR=${1#*=}; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; APP_ARGS=("$@"); break ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

# ------------------------------------------------------------------ checks (exit 2)
[[ $REPLICAS =~ ^[0-9]+$ ]] || die "--replicas must be a whole number, not '$REPLICAS'"
REPLICAS=$((10#$REPLICAS))
max_replicas=$((cores * 4))
[ "$REPLICAS" -ge 1 ] || die "--replicas must be at least 1"
[ "$REPLICAS" -le "$max_replicas" ] || die "--replicas $REPLICAS is more than 4 per CPU core \
($cores cores: at most $max_replicas); each replica needs about one core and 300 MB"
[[ $PORT =~ ^[0-9]+$ ]] && [ "$((10#$PORT))" -ge 1 ] && [ "$((10#$PORT))" -le 65535 ] \
    || die "--port must be a number from 1 to 65535, not '$PORT'"
PORT=$((10#$PORT))
[ -n "$ADDRESS" ] || die "--address must not be empty"
[ -d "$RUNS_DIR" ] || die "runs folder '$RUNS_DIR' does not exist (train the demo runs: \
$PY -m training.demo --runs-dir $RUNS_DIR, or pass --runs-dir DIR)"
RUNS_DIR=$(cd "$RUNS_DIR" && pwd)
[ -f "$TEMPLATE" ] || die "missing $TEMPLATE"

if [ -n "${NGINX:-}" ]; then  # an explicit choice: that one or none
    [ -x "$NGINX" ] || NGINX=""
else
    NGINX=$(command -v nginx || true)
    for candidate in /usr/sbin/nginx /usr/local/sbin/nginx /usr/local/nginx/sbin/nginx; do
        [ -n "$NGINX" ] || { [ -x "$candidate" ] && NGINX=$candidate; }
    done
fi
[ -n "$NGINX" ] || die "nginx is not installed. Install it (Debian/Ubuntu: \
sudo apt-get install -y nginx; Fedora: sudo dnf install nginx; macOS: brew install nginx), \
then run this again. It only runs while this script does: no system service is needed."

command -v "$PY" >/dev/null 2>&1 || die "'$PY' not found (set PYTHON=/path/to/python)"
STATIC=$("$PY" -c 'import os, streamlit; print(os.path.join(os.path.dirname(streamlit.__file__), "static"))' 2>/dev/null) \
    || die "'$PY' cannot import streamlit: install the app first (pip install -e .)"

# Is the public address:port free? (bind as nginx will, SO_REUSEADDR on)
bind_error=$("$PY" - "$ADDRESS" "$PORT" <<'EOF'
import socket, sys
address, port = sys.argv[1], int(sys.argv[2])
try:
    family = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
except OSError as exc:
    print(exc.strerror or exc)
EOF
)
if [ -n "$bind_error" ]; then
    case "$bind_error" in
        *"in use"*) die "port $PORT on $ADDRESS is already in use (another server?): \
choose another with --port" ;;
        *) die "cannot listen on $ADDRESS:$PORT: $bind_error" ;;
    esac
fi

# ------------------------------------------------------------------ set up
if [ -z "$LOG_DIR" ]; then
    LOG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/vae-serve.XXXXXX") || die "cannot create a log folder"
else
    mkdir -p "$LOG_DIR" || die "cannot create --log-dir $LOG_DIR"
    LOG_DIR=$(cd "$LOG_DIR" && pwd)
fi
mkdir -p "$LOG_DIR/tmp"

# N free ports on 127.0.0.1 for the replicas (held until all are chosen)
read -r -a PORTS <<<"$("$PY" - "$REPLICAS" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)"
[ "${#PORTS[@]}" -eq "$REPLICAS" ] || die "could not find $REPLICAS free local ports"

# The address to print (and to give Streamlit as browser.serverAddress, which also stops
# its look-up of this machine's external IP): the LAN address for a wildcard listen. The
# route look-up below sends no packet (a UDP socket's connect only picks the interface).
case "$ADDRESS" in
    0.0.0.0|::|"[::]")
        PUBLIC_HOST=$("$PY" -c 'import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.connect(("192.0.2.1", 9)); print(s.getsockname()[0])
except OSError:
    print("localhost")' 2>/dev/null || echo localhost) ;;
    *) PUBLIC_HOST=$ADDRESS ;;
esac
url_host=$PUBLIC_HOST
[[ $url_host == *:* ]] && url_host="[$url_host]"
listen=$ADDRESS
[[ $listen == *:* && $listen != \[* ]] && listen="[$listen]"

# nginx's worker processes run as "nobody" when started by root: give them a copy of
# Streamlit's static files they can read (site-packages may sit under /root).
STATIC_SERVED=$STATIC
if [ "$(id -u)" = 0 ]; then
    chmod 755 "$LOG_DIR"
    rm -rf "$LOG_DIR/streamlit-static"
    cp -R "$STATIC" "$LOG_DIR/streamlit-static" && chmod -R a+rX "$LOG_DIR/streamlit-static" \
        || die "cannot copy Streamlit's static files to $LOG_DIR"
    STATIC_SERVED="$LOG_DIR/streamlit-static"
fi
MIME_TYPES=/etc/nginx/mime.types
if [ ! -f "$MIME_TYPES" ]; then
    MIME_TYPES="$LOG_DIR/mime.types"
    cat >"$MIME_TYPES" <<'EOF'
types { text/html html; text/css css; application/javascript js mjs; application/json json map;
        image/png png; image/svg+xml svg; font/woff2 woff2; font/woff woff;
        application/wasm wasm; font/ttf ttf; }
EOF
fi

# ------------------------------------------------------------------ nginx.conf
upstreams=""; cookie_map=""; replica_map=""; new_servers=""
for i in "${!PORTS[@]}"; do
    p=${PORTS[$i]}
    backups=""
    for j in "${!PORTS[@]}"; do
        [ "$j" = "$i" ] || backups+="        server 127.0.0.1:${PORTS[$j]} backup;"$'\n'
    done
    upstreams+="    upstream vae_r$i {"$'\n'"        server 127.0.0.1:$p max_fails=1 fail_timeout=5s;"$'\n'"$backups        keepalive 8;"$'\n'"    }"$'\n'
    new_servers+="        server 127.0.0.1:$p max_fails=1 fail_timeout=5s;"$'\n'
    cookie_map+="        r$i vae_r$i;"$'\n'
    replica_map+="        \"~(^|[ ,])127\\.0\\.0\\.1:$p\$\" r$i;"$'\n'
done
upstreams+="    upstream vae_new {"$'\n'"$new_servers        keepalive 8;"$'\n'"    }"
CONF="$LOG_DIR/nginx.conf"
TEMPLATE="$TEMPLATE" CONF="$CONF" UPSTREAMS="$upstreams" COOKIE_MAP="${cookie_map%$'\n'}" \
REPLICA_MAP="${replica_map%$'\n'}" RUN_DIR="$LOG_DIR" LISTEN="$listen:$PORT" \
ACCESS_LOG="$LOG_DIR/nginx-access.log replica" STATIC_DIR="$STATIC_SERVED" \
MIME="$MIME_TYPES" "$PY" - <<'EOF' || die "cannot write $CONF"
import os
text = open(os.environ["TEMPLATE"]).read()
for name, key in (("UPSTREAMS", "UPSTREAMS"), ("COOKIE_MAP", "COOKIE_MAP"),
                  ("REPLICA_MAP", "REPLICA_MAP"), ("RUN_DIR", "RUN_DIR"), ("LISTEN", "LISTEN"),
                  ("ACCESS_LOG", "ACCESS_LOG"), ("STREAMLIT_STATIC", "STATIC_DIR"),
                  ("MIME_TYPES", "MIME")):
    text = text.replace(f"@{name}@", os.environ[key])
assert "@" not in "".join(l.split("#")[0] for l in text.splitlines()), "unfilled placeholder"
open(os.environ["CONF"], "w").write(text)
EOF
"$NGINX" -t -q -p "$LOG_DIR" -c "$CONF" -e "$LOG_DIR/nginx-error.log" \
    2>"$LOG_DIR/nginx-test.log" || { cat "$LOG_DIR/nginx-test.log" >&2; \
    die "nginx refused the generated $CONF (above)"; }

# ------------------------------------------------------------------ run
PIDS=()
NGINX_PID=""
STOPPING=0
declare -A RESTARTS=()

# One cookie secret for every replica (Streamlit signs its auth cookies with it).
STREAMLIT_SERVER_COOKIE_SECRET=$("$PY" -c 'import secrets; print(secrets.token_hex(32))')
export STREAMLIT_SERVER_COOKIE_SECRET

start_replica() {
    local i=$1
    cd "$ROOT" || return 1
    "$PY" -m streamlit run "$APP" --server.address 127.0.0.1 --server.port "${PORTS[$i]}" \
        --server.headless true --server.fileWatcherType none \
        --browser.serverAddress "$PUBLIC_HOST" --browser.serverPort "$PORT" \
        -- --runs-dir "$RUNS_DIR" "${APP_ARGS[@]}" >>"$LOG_DIR/replica-$i.log" 2>&1 </dev/null &
    PIDS[$i]=$!
}

stop_all() {  # stop_all EXIT_CODE
    local code=${1:-0} pid deadline
    [ "$STOPPING" = 1 ] && return
    STOPPING=1
    trap - INT TERM
    say "stopping (${#PIDS[@]} replicas, nginx)..."
    [ -n "$NGINX_PID" ] && kill -TERM "$NGINX_PID" 2>/dev/null
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    deadline=$((SECONDS + 10))
    for pid in "${PIDS[@]}" $NGINX_PID; do
        while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    say "stopped; logs in $LOG_DIR"
    exit "$code"
}
trap 'stop_all 130' INT
trap 'stop_all 143' TERM
trap 'stop_all $?' EXIT

http_ok() {  # http_ok PORT PATH: a 200 from 127.0.0.1:PORT (bash's /dev/tcp: no curl needed)
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 1
        printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" "$1" >&3
        read -r status <&3; [[ $status == *" 200"* ]]' "$1" "$2" 2>/dev/null
}

wait_healthy() {  # wait_healthy I SECONDS
    local i=$1 deadline=$((SECONDS + $2))
    while [ $SECONDS -lt $deadline ]; do
        kill -0 "${PIDS[$i]}" 2>/dev/null || return 1
        http_ok "${PORTS[$i]}" /_stcore/health && return 0
        sleep 0.2
    done
    return 1
}

say "starting $REPLICAS replica(s) on 127.0.0.1:${PORTS[*]} (runs: $RUNS_DIR; logs: $LOG_DIR)"
for i in "${!PORTS[@]}"; do start_replica "$i"; done
for i in "${!PORTS[@]}"; do
    if ! wait_healthy "$i" 180; then
        tail -n 20 "$LOG_DIR/replica-$i.log" >&2
        say "replica $i (127.0.0.1:${PORTS[$i]}) did not become healthy; its log is above" >&2
        stop_all 1
    fi
    say "replica $i ready: http://127.0.0.1:${PORTS[$i]} (pid ${PIDS[$i]})"
done

"$NGINX" -p "$LOG_DIR" -c "$CONF" -e "$LOG_DIR/nginx-error.log" -g "daemon off;" \
    >>"$LOG_DIR/nginx-error.log" 2>&1 </dev/null &
NGINX_PID=$!
proxy_ok=0
proxy_probe=$ADDRESS
case "$proxy_probe" in 0.0.0.0|::|"[::]") proxy_probe=127.0.0.1 ;; esac
for _ in $(seq 50); do
    kill -0 "$NGINX_PID" 2>/dev/null || break
    if [ "$proxy_probe" = 127.0.0.1 ] && http_ok "$PORT" /_stcore/health; then proxy_ok=1; break; fi
    [ "$proxy_probe" != 127.0.0.1 ] && [ -s "$LOG_DIR/nginx.pid" ] && { proxy_ok=1; break; }
    sleep 0.1
done
if [ "$proxy_ok" != 1 ]; then
    cat "$LOG_DIR/nginx-error.log" >&2
    say "nginx did not start (its log is above)" >&2
    stop_all 1
fi

cat <<EOF

  VAE Latent Explorer: $REPLICAS replica(s) behind nginx (pid $NGINX_PID)
  Students open:  http://$url_host:$PORT/
  This machine:   http://localhost:$PORT/
  Logs:           $LOG_DIR
  Ctrl-C stops everything.

EOF
say "ready url=http://$url_host:$PORT/ replicas=$(IFS=,; echo "${PORTS[*]}")"

# ------------------------------------------------------------------ supervise
while true; do
    for i in "${!PORTS[@]}"; do
        if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
            wait "${PIDS[$i]}" 2>/dev/null
            code=$?
            n=$(( ${RESTARTS[$i]:-0} + 1 ))
            RESTARTS[$i]=$n
            delay=$(( n < 5 ? n : 5 ))
            say "replica $i (127.0.0.1:${PORTS[$i]}) exited with code $code; restart $n in ${delay} s \
(its students reconnect to another replica meanwhile)"
            sleep "$delay" & wait $!
            start_replica "$i"
            if wait_healthy "$i" 180; then
                say "replica $i ready again (pid ${PIDS[$i]})"
            fi
        fi
    done
    if ! kill -0 "$NGINX_PID" 2>/dev/null; then
        say "nginx exited; stopping the replicas" >&2
        stop_all 1
    fi
    sleep 1 & wait $!
done
