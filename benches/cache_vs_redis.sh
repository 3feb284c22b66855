#!/usr/bin/env bash
# cache_server against redis-server (persistence off, single-threaded), on
# the same machine: redis-benchmark -t get,set -n N -c 50, with -P 1 and
# -P 16, with the default key/value and with -r 100000 -d 64, over TCP
# loopback and a Unix socket, alternating rounds in one run. Prints
# requests/s of each (median of the rounds) and one RATIO line per column:
# the median of the per-round ratios.
#
#   bash benches/cache_vs_redis.sh [ROUNDS] [REQUESTS]
#
# Installs redis-server and redis-tools from Debian's packages if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
N=${2:-200000}

need() { command -v "$1" >/dev/null 2>&1; }
if ! need redis-server || ! need redis-benchmark; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-tools
fi
cargo build -q --release --example cache_server

dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT

# Free ports from the kernel (bind port 0), held by nobody afterwards.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RP=$(port); CP=$(port)
redis-server --port "$RP" --unixsocket "$dir/redis.sock" --save "" --appendonly no \
  --io-threads 1 --daemonize no --logfile "$dir/redis.log" >/dev/null &
./target/release/examples/cache_server --port "$CP" --unix "$dir/cache.sock" >/dev/null &
for _ in $(seq 100); do
  [ -S "$dir/redis.sock" ] && [ -S "$dir/cache.sock" ] && break
  sleep 0.1
done

# requests/s of one run: the lowest of the tests' figures (set, get).
run() { # target-args extra-args
  redis-benchmark $1 -t get,set -n "$N" -c 50 $2 -q 2>/dev/null | tr '\r' '\n' \
    | awk '/requests per second/ { v=$2+0; if (min=="" || v<min) min=v } END { print min }'
}
median() { sort -n | awk '{a[NR]=$1} END { print a[int((NR+1)/2)] }'; }

printf '%-28s %14s %14s\n' column procwire redis
lines=()
for transport in tcp unix; do
  for pipeline in 1 16; do
    for data in default random64; do
      extra="-P $pipeline"
      [ "$data" = random64 ] && extra="$extra -r 100000 -d 64"
      ours=(); theirs=()
      for r in $(seq "$ROUNDS"); do
        if [ "$transport" = tcp ]; then a_ours="-p $CP"; a_redis="-p $RP"; else a_ours="-s $dir/cache.sock"; a_redis="-s $dir/redis.sock"; fi
        if [ $((r % 2)) -eq 1 ]; then
          ours+=("$(run "$a_ours" "$extra")"); theirs+=("$(run "$a_redis" "$extra")")
        else
          theirs+=("$(run "$a_redis" "$extra")"); ours+=("$(run "$a_ours" "$extra")")
        fi
      done
      o=$(printf '%s\n' "${ours[@]}" | median); t=$(printf '%s\n' "${theirs[@]}" | median)
      # Each round runs both back to back: the median of the per-round
      # ratios cancels the machine's drift between rounds.
      r=$(for i in "${!ours[@]}"; do awk -v o="${ours[$i]}" -v t="${theirs[$i]}" 'BEGIN { print o/t }'; done | median)
      col="${transport}_P${pipeline}_${data}"
      printf '%-28s %14.0f %14.0f\n' "$col" "$o" "$t"
      lines+=("$(awk -v r="$r" -v c="$col" 'BEGIN { printf "RATIO cache_vs_redis/%s = %.2f goal >= 1.0", c, r }')")
    done
  done
done
printf '%s\n' "${lines[@]}"
