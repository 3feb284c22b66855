#!/usr/bin/env bash
# The peer-server-peer network against nginx moving the same bytes.
#
# nginx (one worker, sendfile) serves a file of SIZE to CLIENTS concurrent
# downloads from one curl process (--parallel, output discarded): the floor
# for moving those bytes to that many clients on this machine. Then
# `client_manager` runs the PSP network on a file of the same size, in both
# control modes, with the seed's 1 KiB chunks and with 64,000-byte chunks
# (the largest round size that fits one UDP datagram with its header; the
# issue's "64 KiB"). Every PSP client writes and checks its whole output;
# the manager compares each with the file byte for byte after the clock
# stops.
#
# Medians of RUNS runs each; one RATIO line per case, ours over nginx.
#
#   bash benches/psp_vs_nginx.sh              # 100 clients, 100MB, 3 runs
#   CLIENTS=20 SIZE=20MB RUNS=1 bash benches/psp_vs_nginx.sh
#
# Not run in CI (it takes minutes and about 11 GB of /dev/shm).
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-100}
SIZE=${SIZE:-100MB}
RUNS=${RUNS:-3}

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    echo "installing nginx (Debian package)" >&2
    if [ "$(id -u)" = 0 ]; then
        (apt-get install -y nginx >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y nginx >/dev/null; })
    else
        (sudo apt-get install -y nginx >/dev/null 2>&1 || { sudo apt-get update >/dev/null && sudo apt-get install -y nginx >/dev/null; })
    fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }

cargo build --release --examples >/dev/null 2>&1 || cargo build --release --examples
EX=target/release/examples

base=/dev/shm
[ -d "$base" ] || base=${TMPDIR:-/tmp}
work=$(mktemp -d "$base/psp-bench.XXXXXX")
nginx_pid=
cleanup() {
    [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

bytes=$(python3 -c "
import re,sys
m=re.fullmatch(r'(\d+)([a-zA-Z]*)','$SIZE')
n,u=int(m.group(1)),m.group(2).lower()
print(n*{'':1,'b':1,'kb':10**3,'mb':10**6,'gb':10**9,'kib':2**10,'mib':2**20,'gib':2**30}[u])")
mkdir -p "$work/www" "$work/logs"
head -c "$bytes" /dev/urandom >"$work/www/file.bin"
# nginx's worker may run as another user (www-data when started as root).
chmod 755 "$work" "$work/www"
chmod 644 "$work/www/file.bin"

port=$("$EX/port-for" --select)
cat >"$work/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/logs/error.log;
events { worker_connections 4096; }
http {
    sendfile on;
    tcp_nopush on;
    access_log off;
    client_body_temp_path $work/tmp-body;
    proxy_temp_path $work/tmp-proxy;
    fastcgi_temp_path $work/tmp-fastcgi;
    uwsgi_temp_path $work/tmp-uwsgi;
    scgi_temp_path $work/tmp-scgi;
    server {
        listen 127.0.0.1:$port;
        root $work/www;
    }
}
EOF
"$NGINX" -c "$work/nginx.conf" -p "$work" &
nginx_pid=$!
for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/file.bin" --max-time 5 -r 0-0 && break
    sleep 0.05
done

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

urls=()
for _ in $(seq 1 "$CLIENTS"); do urls+=(-o /dev/null "http://127.0.0.1:$port/file.bin"); done
nginx_times=()
for _ in $(seq 1 "$RUNS"); do
    t0=$(date +%s.%N)
    curl -sS --no-progress-meter --fail --parallel --parallel-immediate --parallel-max "$CLIENTS" "${urls[@]}"
    t1=$(date +%s.%N)
    nginx_times+=("$(echo "$t1 - $t0" | bc -l)")
done
nginx_t=$(printf '%s\n' "${nginx_times[@]}" | median)
kill "$nginx_pid" 2>/dev/null || true
wait "$nginx_pid" 2>/dev/null || true
nginx_pid=

printf '%-28s %10s\n' "case" "wall_s"
printf '%-28s %10.3f\n' "nginx sendfile, curl x$CLIENTS" "$nginx_t"
declare -A goal=([1024]=20 [64000]=3)
ratios=()
for chunk in 64000 1024; do
    for mode in udp tcp; do
        times=()
        for _ in $(seq 1 "$RUNS"); do
            out=$("$EX/client_manager" --clients "$CLIENTS" --file "$work/www/file.bin" \
                --control "$mode" --chunk-size "$chunk" --out-dir "$work")
            row=$(echo "$out" | awk '$1 ~ /^[0-9]+$/ {print $3}' | tail -1)
            echo "$out" | grep -q "ok: every output matches the file" || { echo "$out" >&2; exit 1; }
            times+=("$row")
        done
        t=$(printf '%s\n' "${times[@]}" | median)
        name="control_${mode}_chunk_${chunk}"
        printf '%-28s %10.3f\n' "psp $name" "$t"
        ratios+=("RATIO psp_vs_nginx/$name = $(echo "$t / $nginx_t" | bc -l | xargs printf '%.2f') goal <= ${goal[$chunk]}")
    done
done
printf '%s\n' "${ratios[@]}"
