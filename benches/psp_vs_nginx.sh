#!/usr/bin/env bash
# The peer-server-peer network against nginx moving the same bytes.
#
# nginx (one worker, sendfile) serves a file of SIZE to CLIENTS concurrent
# downloads, one curl process each, twice: once discarding what they
# receive (the floor for moving those bytes to that many clients) and once
# saving each download to a file in the directory the PSP clients write to.
# The second is the same job as the PSP network's (every PSP client saves
# its output) and is the baseline of the RATIO lines: saving 100 files of
# 100MB to /dev/shm takes longer than the whole transfer on the hosts
# measured so far, so against the floor a PSP run would be charged for
# work the baseline skipped. The ratio to the floor is printed as well,
# unformatted. Then `client_manager` runs the PSP
# network on a file of the same size, in both control modes, with the
# seed's 1 KiB chunks and with 64,000-byte chunks. Every PSP client writes
# and checks its whole output; the manager compares each with the file byte
# for byte after the clock stops. Beside each wall time: the server's CPU
# seconds (nginx's worker, or psp_server).
#
# On loopback by default. With HOSTS=K both run on a network of K+1 hosts
# in network namespaces (`client_manager --hosts`, MTU 1500 unless MTU is
# set, each link limited to RATE when set): nginx and psp_server on host 0,
# curl and the PSP clients spread over the other K, so both move the same
# bytes over the same links. Needs root.
#
# Medians of RUNS runs each; one RATIO line per case, ours over nginx.
#
#   bash benches/psp_vs_nginx.sh                         # loopback, 100 clients, 100MB
#   HOSTS=10 RATE=1gbit bash benches/psp_vs_nginx.sh     # the namespace network
#   CLIENTS=20 SIZE=20MB RUNS=1 bash benches/psp_vs_nginx.sh
#
# Not run in CI (it takes minutes and about 11 GB of /dev/shm).
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-100}
SIZE=${SIZE:-100MB}
RUNS=${RUNS:-3}
HOSTS=${HOSTS:-0}
RATE=${RATE:-}
MTU=${MTU:-1500}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# CPU seconds (user + system) of process $1 so far.
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }

NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# nginx.conf for a server root $1 listening on $2, logs and pid under $3.
nginx_conf() {
    cat <<CONF
worker_processes 1;
daemon off;
pid $3/nginx.pid;
error_log $3/error.log;
events { worker_connections 4096; }
http {
    sendfile on;
    tcp_nopush on;
    access_log off;
    client_body_temp_path $3/tmp-body;
    proxy_temp_path $3/tmp-proxy;
    fastcgi_temp_path $3/tmp-fastcgi;
    uwsgi_temp_path $3/tmp-uwsgi;
    scgi_temp_path $3/tmp-scgi;
    server {
        listen $2;
        root $1;
    }
}
CONF
}

# Times RUNS downloads by CLIENTS clients of http://$1/file.bin, one curl
# process per client as there is one psp_client per client, started by
# "$2" (a prefix per host: empty, or `ip netns exec NS`), nginx's worker
# being pid $3. With $4 a directory, each download is saved to a file
# there (removed after each run, off the clock), the same work a PSP
# client does; without, curl discards what it receives.
# Prints "median_wall median_cpu".
time_nginx() { # addr launchers-array-name worker-pid [save-dir]
    local addr=$1 worker=$3 save=${4:-}
    local -n launch=$2
    local n=${#launch[@]} walls=() cpus=()
    for _ in $(seq 1 "$RUNS"); do
        local c0 t0 t1 c1 pids=()
        c0=$(cpu_of "$worker")
        t0=$(date +%s.%N)
        for h in $(seq 0 $((n - 1))); do
            # Client i downloads on host i mod n.
            local k=$(( CLIENTS / n + (h < CLIENTS % n ? 1 : 0) ))
            [ "$k" -gt 0 ] || continue
            # shellcheck disable=SC2086,SC2016
            ${launch[$h]} bash -c '
                pids=()
                for i in $(seq 1 "$2"); do
                    o=/dev/null; [ -n "$3" ] && o=$3/curl-$1-$i
                    curl -sS --fail -o "$o" "http://$4/file.bin" & pids+=($!)
                done
                for p in "${pids[@]}"; do wait "$p" || exit 1; done' _ "$h" "$k" "$save" "$addr" &
            pids+=($!)
        done
        for p in "${pids[@]}"; do wait "$p" || { echo "a curl download failed" >&2; exit 1; }; done
        t1=$(date +%s.%N)
        c1=$(cpu_of "$worker")
        [ -n "$save" ] && rm -f "$save"/curl-*
        walls+=("$(echo "$t1 - $t0" | bc -l)")
        cpus+=("$(echo "$c1 - $c0" | bc -l)")
    done
    echo "$(printf '%s\n' "${walls[@]}" | median) $(printf '%s\n' "${cpus[@]}" | median)"
}

# Starts nginx (prefix $1) with the config $2; waits until it answers at
# $3 (through prefix $4); sets nginx_pid and worker.
start_nginx() {
    # shellcheck disable=SC2086
    $1 "$NGINX" -c "$2" -p "$(dirname "$2")" &
    nginx_pid=$!
    for _ in $(seq 1 200); do
        # shellcheck disable=SC2086
        $4 curl -s -o /dev/null "http://$3/file.bin" --max-time 5 -r 0-0 && break
        sleep 0.05
    done
    worker=$(pgrep -P "$nginx_pid" | head -1)
    [ -n "$worker" ] || { echo "nginx has no worker" >&2; exit 1; }
}

# Inside `client_manager --net-shell`: nginx on the first host, curl on
# the others; prints "median_wall median_cpu" last.
if [ "${1:-}" = "--nginx-in-net" ]; then
    work=$2
    read -r -a hosts <<<"$PSP_NET_HOSTS"
    read -r -a addrs <<<"$PSP_NET_ADDRS"
    nginx_conf "$work/www" "${addrs[0]}:8080" "$work/net-logs" >"$work/net-logs/nginx.conf"
    nginx_pid=
    trap '[ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null; wait 2>/dev/null || true' EXIT
    launchers=()
    for h in "${hosts[@]:1}"; do launchers+=("ip netns exec $h"); done
    start_nginx "ip netns exec ${hosts[0]}" "$work/net-logs/nginx.conf" "${addrs[0]}:8080" "${launchers[0]}"
    time_nginx "${addrs[0]}:8080" launchers "$worker"
    mkdir -p "$work/dl"
    time_nginx "${addrs[0]}:8080" launchers "$worker" "$work/dl"
    exit 0
fi

if [ ! -x "$NGINX" ]; then
    echo "installing nginx (Debian package)" >&2
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    ($SUDO apt-get install -y nginx >/dev/null 2>&1 || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y nginx >/dev/null; })
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
fi
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }

cargo build --release --examples >/dev/null 2>&1 || cargo build --release --examples
EX=$PWD/target/release/examples

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
mkdir -p "$work/www" "$work/logs" "$work/net-logs"
head -c "$bytes" /dev/urandom >"$work/www/file.bin"
# nginx's worker may run as another user (www-data when started as root).
chmod 755 "$work" "$work/www"
chmod 644 "$work/www/file.bin"

net_args=()
if [ "$HOSTS" -gt 0 ]; then
    net_args=(--hosts "$HOSTS" --mtu "$MTU")
    [ -n "$RATE" ] && net_args+=(--rate "$RATE")
    # Same network, same links, for nginx: made by client_manager.
    nginx_lines=$("$EX/client_manager" "${net_args[@]}" \
        --net-shell "bash $PWD/benches/psp_vs_nginx.sh --nginx-in-net $work" | tail -2)
    read -r floor_t floor_cpu <<<"$(echo "$nginx_lines" | head -1)"
    read -r nginx_t nginx_cpu <<<"$(echo "$nginx_lines" | tail -1)"
    r=${RATE:-none}; r=${r%bit}
    prefix="hosts${HOSTS}_rate${r}_"
    where="$((HOSTS + 1)) hosts, MTU $MTU${RATE:+, $RATE per link}"
else
    port=$("$EX/port-for" --select)
    nginx_conf "$work/www" "127.0.0.1:$port" "$work/logs" >"$work/nginx.conf"
    start_nginx "" "$work/nginx.conf" "127.0.0.1:$port" ""
    launchers=("")
    read -r floor_t floor_cpu <<<"$(time_nginx "127.0.0.1:$port" launchers "$worker")"
    mkdir -p "$work/dl"
    read -r nginx_t nginx_cpu <<<"$(time_nginx "127.0.0.1:$port" launchers "$worker" "$work/dl")"
    kill "$nginx_pid" 2>/dev/null || true
    wait "$nginx_pid" 2>/dev/null || true
    nginx_pid=
    prefix="control_"
    where="loopback"
fi

echo "$CLIENTS clients, $SIZE, $where; medians of $RUNS"
printf '%-36s %10s %14s\n' "case" "wall_s" "server_cpu_s"
printf '%-36s %10.3f %14.2f\n' "nginx sendfile, curl x$CLIENTS -o /dev/null" "$floor_t" "$floor_cpu"
printf '%-36s %10.3f %14.2f\n' "nginx sendfile, curl x$CLIENTS -o file" "$nginx_t" "$nginx_cpu"
if [ "$HOSTS" -gt 0 ]; then
    declare -A goal=([udp_1024]=1.2 [tcp_1024]=1.2 [udp_64000]=1.2 [tcp_64000]=1.2)
else
    declare -A goal=([udp_1024]=5 [tcp_1024]=5 [udp_64000]=1.5 [tcp_64000]=2.0)
fi
ratios=() floors=()
for chunk in 64000 1024; do
    for mode in udp tcp; do
        times=() cpus=()
        for _ in $(seq 1 "$RUNS"); do
            out=$("$EX/client_manager" "${net_args[@]}" --clients "$CLIENTS" \
                --file "$work/www/file.bin" --control "$mode" --chunk-size "$chunk" --out-dir "$work")
            echo "$out" | grep -q "ok: every output matches the file" || { echo "$out" >&2; exit 1; }
            times+=("$(echo "$out" | awk '$1 ~ /^[0-9]+$/ {print $3}' | tail -1)")
            cpus+=("$(echo "$out" | awk '$1 ~ /^[0-9]+$/ {print $4}' | tail -1)")
        done
        t=$(printf '%s\n' "${times[@]}" | median)
        c=$(printf '%s\n' "${cpus[@]}" | median)
        name="${prefix}${mode}_chunk_${chunk}"
        printf '%-36s %10.3f %14s\n' "psp $name" "$t" "$c"
        ratios+=("RATIO psp_vs_nginx/$name = $(echo "$t / $nginx_t" | bc -l | xargs printf '%.2f') goal <= ${goal[${mode}_${chunk}]}")
        floors+=("psp_vs_nginx/$name over the floor (curl discarding): $(echo "$t / $floor_t" | bc -l | xargs printf '%.2f')")
    done
done
printf '%s\n' "${floors[@]}"
printf '%s\n' "${ratios[@]}"
