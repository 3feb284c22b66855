#!/usr/bin/env bash
# The preload's own cost per message, apart from Redis's work: a
# purpose-built epoll request/response program (benches/prog/pingpong.c,
# 37-byte requests, 9-byte replies, the pattern of redis-benchmark -P 1)
# with both sides in safe mode, against the same program without the
# preload, in rounds whose order of modes alternates. Four cases:
#
# - "one_cpu_c50" and "one_cpu_c1": both processes pinned to one CPU, so
#   that no cache line crosses between CPUs and the rate measures the
#   instructions and cache misses of both processes together;
# - "two_cpus_c50" and "two_cpus_c1": each process on its own CPU, as
#   redis-benchmark runs (the shared lines then cross between the CPUs).
#
# The c1 cases make a quarter of ROUND_TRIPS (one connection's round trips
# take longer), so that each run lasts about as long.
#
# Prints each case's median rates and one RATIO line per case: the median
# of the per-round ratios of round trips per second (preloaded over plain).
#
#   bash benches/preload_pingpong.sh [ROUNDS] [ROUND_TRIPS]
#
# Needs a C compiler (cc) and taskset (util-linux).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-9}
N=${2:-400000}
command -v cc >/dev/null 2>&1 || { echo "needs a C compiler (apt-get install gcc)" >&2; exit 1; }
command -v taskset >/dev/null 2>&1 || { echo "needs taskset (apt-get install util-linux)" >&2; exit 1; }
cargo build -q --release -p procwire-preload
LIB=$PWD/target/release/libprocwire_preload.so

dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
cc -O2 -o "$dir/pingpong" benches/prog/pingpong.c

# The CPUs this script may run on: the first two.
mapfile -t cpus < <(taskset -pc $$ | awk -F': ' '{print $2}' | tr ',' '\n' |
  awk -F- '{ if (NF == 2) for (i = $1; i <= $2; i++) print i; else print $1 }' | head -2)

# shellcheck source=benches/preload_lib.sh
. benches/preload_lib.sh

# Round trips per second in mode $1 over $2 connections, the server on
# CPU $3 and the client on CPU $4.
rate() { # mode conns server-cpu client-cpu
  local s="$dir/pp.sock"; rm -f "$s"
  # shellcheck disable=SC2046
  env $(mode_env "$1" "$s") taskset -c "$3" "$dir/pingpong" server "$s" "$2" &
  local server=$!
  for _ in $(seq 200); do [ -S "$s" ] && break; sleep 0.01; done
  local n=$N
  [ "$2" = 1 ] && n=$((N / 4))
  # shellcheck disable=SC2046
  env $(mode_env "$1" "$s") taskset -c "$4" "$dir/pingpong" client "$s" "$2" "$n"
  wait "$server"
}

declare -A ours theirs
cases="one_cpu_c50 one_cpu_c1"
[ "${#cpus[@]}" -ge 2 ] && cases="$cases two_cpus_c50 two_cpus_c1"
for r in $(seq "$ROUNDS"); do
  for c in $cases; do
    conns=${c##*_c}
    a=${cpus[0]}; b=${cpus[0]}
    case $c in two_cpus*) b=${cpus[1]} ;; esac
    declare -A got
    if [ $((r % 2)) = 0 ]; then order="plain safe"; else order="safe plain"; fi
    for m in $order; do got[$m]=$(rate $m "$conns" "$a" "$b"); done
    ours[$c]="${ours[$c]:-} ${got[safe]}"; theirs[$c]="${theirs[$c]:-} ${got[plain]}"
  done
done

for c in $cases; do
  printf '%-14s safe %8s plain %8s round trips/s (medians of %s rounds)\n' "$c" \
    "$(printf '%s\n' ${ours[$c]} | median)" "$(printf '%s\n' ${theirs[$c]} | median)" "$ROUNDS"
done
for c in $cases; do
  awk -v r="$(ratio "${ours[$c]}" "${theirs[$c]}")" -v c="$c" \
    'BEGIN { printf "RATIO preload_pingpong/safe_%s = %.2f goal >= 0.95\n", c, r }'
done
